"""`layerwise compare`: what fine-tuning changed — update sparsity, rank and overlap, streamed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text

NAME = "compare"
HELP = "update sparsity, rank and overlap between a base checkpoint and tuned ones (fp32, streamed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="base HF checkpoint directory (or .safetensors file)")
    p.add_argument("tuned", nargs="+", help="tuned checkpoint(s) from the same base")
    p.add_argument("--tol", default="1e-5", help="comma-separated tolerances, e.g. 1e-5,1e-8,0")
    p.add_argument("--no-rank", action="store_true", help="skip the SVD-based update ranks")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write compare.json and tensors/blocks/modules CSVs here")


def _tols(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LayerwiseError(f"--tol {text!r}: expected comma-separated numbers") from None


def run(args: argparse.Namespace) -> int:
    from layerwise.analysis.diff import check_tols, diff_checkpoints, overlap
    from layerwise.analysis.summary import block_index_map, group_rows, tensor_rows, to_csv, to_json

    tols = check_tols(_tols(args.tol))
    groups = block_index_map(args.base)
    doc: dict = {"base": args.base, "tolerances": tols, "precision": "float32 differences",
                 "runs": [], "overlap": []}
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, tuned in enumerate(args.tuned):
        diff = diff_checkpoints(args.base, tuned, tols, ranks=not args.no_rank)
        blocks = group_rows(diff, groups, "block")
        modules = group_rows(diff, groups, "module")
        ranks = [t.rank_fraction for t in diff.tensors if t.rank_fraction is not None
                 and t.changed[tols[0]] > 0]
        run = {"tuned": tuned, "global_sparsity": {str(t): diff.sparsity(t) for t in tols},
               "missing": diff.missing, "mean_rank_fraction_of_updated_matrices":
                   sum(ranks) / len(ranks) if ranks else None,
               "blocks": blocks, "modules": modules, "tensors": tensor_rows(diff)}
        doc["runs"].append(run)
        sp = ", ".join(f"{diff.sparsity(t):.4f} at tol {t:g}" for t in tols)
        lines.append(f"{tuned}: update sparsity {sp}"
                     + (f"; mean update rank {run['mean_rank_fraction_of_updated_matrices']:.3f} of "
                        "full" if ranks else ""))
        for side, names in diff.missing.items():
            if names:
                lines.append(f"  missing in {side}: {', '.join(names[:5])}"
                             + (f" (+{len(names) - 5} more)" if len(names) > 5 else ""))
        changed_blocks = [r["group"] for r in blocks if r[f"sparsity@{tols[0]:g}"] < 1.0]
        lines.append(f"  groups with changed entries at tol {tols[0]:g}: {', '.join(changed_blocks) or 'none'}")
        if out is not None:
            stem = f"run{i}"
            atomic_write_text(out / f"{stem}_tensors.csv", to_csv(run["tensors"]))
            atomic_write_text(out / f"{stem}_blocks.csv", to_csv(blocks))
            atomic_write_text(out / f"{stem}_modules.csv", to_csv(modules))
    for i in range(len(args.tuned)):
        for j in range(i + 1, len(args.tuned)):
            o = overlap(args.base, args.tuned[i], args.tuned[j], tols[0])
            doc["overlap"].append({"a": args.tuned[i], "b": args.tuned[j], **o})
            fmt = (lambda v: "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}")
            lines.append(f"overlap {args.tuned[i]} / {args.tuned[j]}: o1 {fmt(o['o1'])} (chance "
                         f"{fmt(o['o1_rand'])}), o2 {fmt(o['o2'])} (chance {fmt(o['o2_rand'])})")
    if out is not None:
        atomic_write_text(out / "compare.json", to_json(doc))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
