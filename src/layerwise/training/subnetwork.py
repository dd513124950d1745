"""Subnetwork-only training (`--mask-from BASE,TUNED`, PAPERS.md section 3).

The mask m is 1 where BASE and TUNED differ (|delta| > tol, in fp32; a base stored in more bits
than TUNED is first rounded to TUNED's dtype, as `layerwise compare` does). Training then starts from
the model as loaded (normally BASE) and multiplies every gradient by m before the optimizer step;
after each step the masked-out entries are put back to their starting values, so neither weight
decay nor optimizer state can move them (they stay bit-identical, tested).
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from layerwise.analysis.checkpoints import Checkpoint
from layerwise.analysis.diff import fp32_delta
from layerwise.errors import LayerwiseError


def build_masks(model: torch.nn.Module, spec: str, tol: float) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask} for every trainable parameter, from 'BASE,TUNED'."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(parts):
        raise LayerwiseError(f"--mask-from {spec!r}: expected BASE,TUNED (two checkpoints)")
    base, tuned = Checkpoint(parts[0]), Checkpoint(parts[1])
    check_base_is_model(model, base, parts[0])
    masks = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name not in base.names or name not in tuned.names:
            raise LayerwiseError(f"--mask-from: tensor {name} is missing from "
                                 f"{parts[0] if name not in base.names else parts[1]}")
        delta = fp32_delta(base, tuned, name)
        if tuple(delta.shape) != tuple(p.shape):
            raise LayerwiseError(f"--mask-from: tensor {name} has shape {tuple(delta.shape)} in the "
                                 f"checkpoints but {tuple(p.shape)} in the model")
        masks[name] = (delta.abs() > tol).to(p.device)
    return masks


def check_base_is_model(model: torch.nn.Module | Checkpoint, base: Checkpoint, name: str) -> None:
    """BASE must be the model this run trains (its --model as loaded, or its checkpoint before
    loading): a mask of where another pair of checkpoints differ marks entries that mean nothing
    here. Every tensor BASE shares with the model is compared exactly, in the lower precision of
    the two (a bf16 load of an fp32 BASE is the same model)."""
    shared = 0
    if isinstance(model, Checkpoint):
        ours_all = ((n, model.raw(n)) for n in model.names)
    else:
        ours_all = model.named_parameters()
    with torch.no_grad():
        for pname, p in ours_all:
            if pname not in base.names:
                continue
            stored = base.raw(pname)
            if tuple(stored.shape) != tuple(p.shape):
                raise LayerwiseError(f"--mask-from: tensor {pname} has shape {tuple(stored.shape)} "
                                     f"in {name} but {tuple(p.shape)} in the model")
            low = p.dtype if p.element_size() < stored.element_size() else stored.dtype
            ours = p.detach().to("cpu", low)
            if not torch.equal(ours, stored.to(low)):
                gap = float((ours.float() - stored.to(low).float()).abs().max())
                raise LayerwiseError(
                    f"--mask-from: BASE {name} is not the model this run trains (--model): tensor "
                    f"{pname} differs (max |diff| {gap:.3g}); the mask would mark where another "
                    "model changed. Give the run's own model as BASE, or train from BASE")
            shared += 1
    if shared == 0:
        raise LayerwiseError(f"--mask-from: BASE {name} shares no tensor with the model this run "
                             "trains")


class SubnetworkMask(TrainerCallback):
    """Gradient x mask before each step; masked entries restored after each step."""

    def __init__(self, model: torch.nn.Module, masks: dict[str, torch.Tensor]):
        self.items = [(p, masks[n], p.detach().clone()) for n, p in model.named_parameters()
                      if n in masks]
        self.handles = [p.register_hook(lambda g, m=m: g * m.to(g.dtype)) for p, m, _ in self.items]

    @property
    def kept_share(self) -> float:
        total = sum(m.numel() for _, m, _ in self.items)
        return sum(int(torch.count_nonzero(m)) for _, m, _ in self.items) / total if total else 0.0

    def on_optimizer_step(self, args, state, control, **kw):
        with torch.no_grad():
            for p, m, start in self.items:
                p.copy_(torch.where(m, p, start))

    def on_train_end(self, args, state, control, **kw):
        for h in self.handles:
            h.remove()


CLOSENESS_TOLS = (1e-5, 1e-4)


def closeness(model: torch.nn.Module, spec: str, masks: dict[str, torch.Tensor],
              tols=CLOSENESS_TOLS) -> dict:
    """How close the masked run ends to TUNED (the run its mask came from), PAPERS.md section 3:
    the share of entries within tol of TUNED, over every parameter and over the mask only, plus
    TUNED's task score when its metrics.json sits beside it."""
    from layerwise.fileio import read_json

    source = spec.split(",")[1].strip()
    tuned = Checkpoint(source)
    names = set(tuned.names)
    n = n_mask = 0
    same = dict.fromkeys(tols, 0)
    same_mask = dict.fromkeys(tols, 0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in names:
                continue
            d = (p.detach().float().cpu() - tuned.tensor(name)).abs_()
            n += d.numel()
            for t in tols:
                same[t] += int(torch.count_nonzero(d <= t))
            if name in masks:
                dm = d[masks[name].cpu()]
                n_mask += dm.numel()
                for t in tols:
                    same_mask[t] += int(torch.count_nonzero(dm <= t))
    metrics = tuned.path.parent / "metrics.json"  # a `layerwise train` run: RUN/model + RUN/metrics.json
    ref = read_json(metrics) if tuned.path.name in ("model", "merged") and metrics.is_file() else {}
    return {"reference": str(tuned.path), "entries": n, "mask_entries": n_mask,
            "identical_share": {f"{t:g}": same[t] / n if n else None for t in tols},
            "identical_share_in_mask": {f"{t:g}": same_mask[t] / n_mask if n_mask else None for t in tols},
            "reference_accuracy": ((ref.get("final") or {}).get("accuracy") if ref else None)}
