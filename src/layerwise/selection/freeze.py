"""Freezing by selection, and a summary that accounts for every parameter.

Two small steps, as in torchtune: the selection computes a set of names, then every parameter gets
`requires_grad = name in selection`. Nothing is frozen or unfrozen anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from layerwise.models.arch import LayerMap
from layerwise.selection.resolve import Selection


def apply_selection(model: nn.Module, selection: Selection) -> int:
    """Make exactly the selected parameters trainable; return how many elements train."""
    missing = selection.names - {name for name, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"selection names parameters the model lacks: {sorted(missing)[:3]}")
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in selection.names)
        trainable += param.numel() if param.requires_grad else 0
    return trainable


@dataclass(frozen=True)
class Row:
    """One line of the accounting: a block or a non-block part of the model."""

    label: str  # "block 7", "embed", "norm", "head", "other"
    block: int | None
    total: int
    trainable: int
    tensors: int
    note: str = ""


@dataclass(frozen=True)
class Summary:
    rows: tuple[Row, ...]
    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def summarize(model: nn.Module, layers: LayerMap, selection: Selection | None = None) -> Summary:
    """Per-block and per-part parameter counts; each parameter is counted exactly once.

    A tied head shares its weight with the embedding: the tensor is counted under `embed` and
    the head row says so. Parameters outside blocks, embedding, norm and head land in `other`,
    so the rows always add up to the model's total.
    """
    params = dict(model.named_parameters())  # deduplicated: a tied tensor appears once
    selected = selection.names if selection is not None else frozenset()
    owner: dict[str, str] = {}
    for i in range(layers.num_blocks):
        for name, _ in layers.block_params(i):
            owner.setdefault(name, f"block {i}")
    for part in ("embed", "norm", "head"):
        for name in layers.part_names(part):
            owner.setdefault(name, part)

    def row(label: str, block: int | None, note: str = "") -> Row:
        names = [n for n, o in owner.items() if o == label]
        return Row(
            label=label, block=block, note=note, tensors=len(names),
            total=sum(params[n].numel() for n in names),
            trainable=sum(params[n].numel() for n in names if n in selected),
        )

    rows = [row(f"block {i}", i) for i in range(layers.num_blocks)]
    rows += [row("embed", None), row("norm", None)]
    rows.append(row("head", None, "tied to embed" if layers.head_tied else ""))
    other = [n for n in params if n not in owner]
    for name in other:
        owner[name] = "other"
    rows.append(row("other", None, ", ".join(other[:3]) + (" ..." if len(other) > 3 else "")))
    total = sum(p.numel() for p in params.values())
    trainable = sum(r.trainable for r in rows)
    assert sum(r.total for r in rows) == total, "parameter accounting does not add up"
    return Summary(rows=tuple(rows), total=total, trainable=trainable)
