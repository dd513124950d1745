"""What fine-tuning changed: update sparsity, update rank and overlap (PAPERS.md section 3).

- Update sparsity at tolerance tol: 1 - ||theta_1 - theta_0||_0 / n, an entry counting as unchanged
  when |delta| <= tol (default 1e-5; the paper also reports 1e-6..1e-8 and tol = 0 is exact).
  Differences are always taken in float32, whatever the checkpoints' dtype.
- Update rank of each 2-D matrix: torch.linalg.matrix_rank(delta) with PyTorch's default tolerance,
  and with a relative tolerance (singular values above rel x the largest), as rank / min(shape);
  plus the effective rank exp(H(p)), p = normalised singular values.
- Overlap of two runs' updated sets I1, I2: o1 = |I1 ∩ I2| / |I1|, o2 = |I1 ∩ I2| / |I2|, with the
  chance baselines o1_rand = 1 - s2 and o2_rand = 1 - s1 (s = sparsity).
Everything streams: one tensor (of each checkpoint) in memory at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from layerwise.analysis.checkpoints import Checkpoint
from layerwise.errors import LayerwiseError

DEFAULT_TOLS = (1e-5,)
REL_RANK_TOL = 1e-3


@dataclass
class TensorDiff:
    name: str
    shape: tuple[int, ...]
    numel: int
    changed: dict[float, int]  # tol -> entries with |delta| > tol
    rank: int | None = None
    rank_rel: int | None = None
    effective_rank: float | None = None

    def sparsity(self, tol: float) -> float:
        return 1.0 - self.changed[tol] / self.numel if self.numel else 1.0

    @property
    def rank_fraction(self) -> float | None:
        return None if self.rank is None else self.rank / min(self.shape)


@dataclass
class CheckpointDiff:
    tols: tuple[float, ...]
    tensors: list[TensorDiff] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # side -> names only on the other

    def sparsity(self, tol: float) -> float:
        n = sum(t.numel for t in self.tensors)
        return 1.0 - sum(t.changed[tol] for t in self.tensors) / n if n else 1.0


def check_tols(tols) -> tuple[float, ...]:
    tols = tuple(float(t) for t in tols)
    if not tols:
        raise LayerwiseError("no tolerance given")
    bad = [t for t in tols if not t >= 0 or math.isnan(t)]
    if bad:
        raise LayerwiseError(f"tolerance {bad[0]} is invalid: tolerances must be >= 0")
    return tols


def _pair_names(base: Checkpoint, tuned: Checkpoint) -> tuple[list[str], dict[str, list[str]]]:
    b, t = set(base.names), set(tuned.names)
    missing = {"tuned": sorted(b - t), "base": sorted(t - b)}
    for name in sorted(b & t):
        if base.shape(name) != tuned.shape(name):
            raise LayerwiseError(f"checkpoints differ in shape at tensor {name}: "
                                 f"{base.shape(name)} vs {tuned.shape(name)} (different architectures?)")
    return sorted(b & t), missing


def _rank_stats(delta: torch.Tensor) -> tuple[int, int, float]:
    s = torch.linalg.svdvals(delta)
    rank = int(torch.linalg.matrix_rank(delta))
    top = float(s[0]) if s.numel() else 0.0
    rank_rel = int((s > REL_RANK_TOL * top).sum()) if top > 0 else 0
    p = s / s.sum() if float(s.sum()) > 0 else s
    nz = p[p > 0]
    eff = float(torch.exp(-(nz * nz.log()).sum())) if nz.numel() else 0.0
    return rank, rank_rel, eff


def diff_checkpoints(base: str | Checkpoint, tuned: str | Checkpoint, tols=DEFAULT_TOLS,
                     ranks: bool = True) -> CheckpointDiff:
    """Per-tensor changed counts at each tolerance, and ranks of the 2-D updates."""
    tols = check_tols(tols)
    base = base if isinstance(base, Checkpoint) else Checkpoint(base)
    tuned = tuned if isinstance(tuned, Checkpoint) else Checkpoint(tuned)
    names, missing = _pair_names(base, tuned)
    out = CheckpointDiff(tols=tols, missing=missing)
    for name in names:
        delta = tuned.tensor(name) - base.tensor(name)  # float32, whatever was stored
        mag = delta.abs()
        td = TensorDiff(name=name, shape=tuple(delta.shape), numel=delta.numel(),
                        changed={t: int((mag > t).sum()) for t in tols})
        if ranks and delta.ndim == 2 and min(delta.shape) > 0:
            td.rank, td.rank_rel, td.effective_rank = _rank_stats(delta)
        out.tensors.append(td)
        del delta, mag
    return out


def overlap(base: str | Checkpoint, tuned_a: str | Checkpoint, tuned_b: str | Checkpoint,
            tol: float = 1e-5) -> dict[str, float]:
    """o1, o2 and their chance baselines for the updated sets of two runs from the same base."""
    (tol,) = check_tols([tol])
    base = base if isinstance(base, Checkpoint) else Checkpoint(base)
    a = tuned_a if isinstance(tuned_a, Checkpoint) else Checkpoint(tuned_a)
    b = tuned_b if isinstance(tuned_b, Checkpoint) else Checkpoint(tuned_b)
    names_a, _ = _pair_names(base, a)
    names_b, _ = _pair_names(base, b)
    names = sorted(set(names_a) & set(names_b))
    n = n1 = n2 = both = 0
    for name in names:
        w0 = base.tensor(name)
        i1 = (a.tensor(name) - w0).abs() > tol
        i2 = (b.tensor(name) - w0).abs() > tol
        n += w0.numel()
        n1 += int(i1.sum())
        n2 += int(i2.sum())
        both += int((i1 & i2).sum())
    s1 = 1 - n1 / n if n else 1.0
    s2 = 1 - n2 / n if n else 1.0
    return {"tol": tol, "entries": n, "updated_a": n1, "updated_b": n2, "both": both,
            "o1": both / n1 if n1 else math.nan, "o2": both / n2 if n2 else math.nan,
            "o1_rand": 1 - s2, "o2_rand": 1 - s1, "sparsity_a": s1, "sparsity_b": s2}
