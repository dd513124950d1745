"""Grouping a checkpoint diff per block, per module type and globally, for tables and plots.

Blocks are found structurally: the checkpoint's config is instantiated on the meta device (no
memory, no weights) and `discover_layers` says which parameter belongs to which block; tensors
outside the blocks are grouped as embed / norm / head / other.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import torch

from layerwise.analysis.diff import CheckpointDiff
from layerwise.fileio import json_safe


def meta_layers(checkpoint_dir: str | Path):
    """The checkpoint's LayerMap on a meta-device model (no memory, no weights); None if unknown."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from layerwise.analysis.checkpoints import resolve_checkpoint
    from layerwise.models.arch import discover_layers

    path = resolve_checkpoint(checkpoint_dir)
    if path.is_file():
        path = path.parent
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return discover_layers(model)
    except Exception:  # noqa: BLE001 - no config, or an architecture we cannot place: no grouping
        return None


def block_index_map(checkpoint_dir_or_layers) -> dict[str, tuple[str, str]]:
    """name -> (group, module type): group "block N" / "embed" / "norm" / "head"; {} if unknown.
    Takes a checkpoint directory or the LayerMap `meta_layers` already built for it."""
    layers = (meta_layers(checkpoint_dir_or_layers)
              if isinstance(checkpoint_dir_or_layers, (str, Path)) else checkpoint_dir_or_layers)
    if layers is None:
        return {}
    out = {}
    for i in range(layers.num_blocks):
        for name, local in layers.block_params(i):
            out[name] = (f"block {i}", local.rsplit(".", 1)[0])
    for part in ("embed", "norm", "head"):
        for name in layers.part_names(part):
            out.setdefault(name, (part, part))
    return out


def selection_check(diff: CheckpointDiff, allowed: set[str] | frozenset[str], tol: float) -> dict:
    """Did a layer selection do what it promised? Changed entries inside / outside `allowed`."""
    inside = outside = 0
    tensors_outside = []
    for t in diff.tensors:
        n = t.changed[tol]
        if t.name in allowed:
            inside += n
        elif n:
            outside += n
            tensors_outside.append(t.name)
    return {"tol": tol, "changed_inside": inside, "changed_outside": outside,
            "tensors_outside": tensors_outside, "ok": outside == 0}


def group_rows(diff: CheckpointDiff, groups: dict[str, tuple[str, str]], by: str) -> list[dict]:
    """Rows of (group, entries, changed per tol, sparsity per tol, mean rank fraction)."""
    agg: dict[str, dict] = defaultdict(lambda: {"entries": 0, "changed": defaultdict(int), "ranks": []})
    for t in diff.tensors:
        group, module = groups.get(t.name, ("other", "other"))
        key = group if by == "block" else module
        a = agg[key]
        a["entries"] += t.numel
        for tol in diff.tols:
            a["changed"][tol] += t.changed[tol]
        if t.rank_fraction is not None:
            a["ranks"].append(t.rank_fraction)

    def order(k: str):
        return (0, int(k.split()[1])) if k.startswith("block ") else (1, k)

    rows = []
    for key in sorted(agg, key=order):
        a = agg[key]
        row = {"group": key, "entries": a["entries"]}
        for tol in diff.tols:
            row[f"sparsity@{tol:g}"] = 1 - a["changed"][tol] / a["entries"] if a["entries"] else 1.0
        row["mean_rank_fraction"] = sum(a["ranks"]) / len(a["ranks"]) if a["ranks"] else None
        rows.append(row)
    return rows


def tensor_rows(diff: CheckpointDiff) -> list[dict]:
    rows = []
    for t in diff.tensors:
        row = {"tensor": t.name, "shape": "x".join(map(str, t.shape)), "entries": t.numel}
        for tol in diff.tols:
            row[f"sparsity@{tol:g}"] = t.sparsity(tol)
        row.update(rank=t.rank, rank_fraction=t.rank_fraction, rank_rel=t.rank_rel,
                   effective_rank=t.effective_rank, magnitude_ratio=t.magnitude_ratio)
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_json(doc: dict) -> str:
    return json.dumps(json_safe(doc, "null"), indent=2) + "\n"
