"""`layerwise compare`: what fine-tuning changed — update sparsity, rank and overlap, streamed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text, read_json

NAME = "compare"
# below this, the changed entries are much smaller than typical ones: a low-precision fingerprint
LOW_MAGNITUDE_RATIO = 0.2
HELP = "update sparsity, rank and overlap between a base checkpoint and tuned ones (fp32, streamed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from layerwise.analysis.diff import ROUNDING_MODES

    p.add_argument("base", help="base HF checkpoint directory, .safetensors or .gguf file, or "
                                "'embedded' (the embedded SmolLM2-135M-Instruct)")
    p.add_argument("tuned", nargs="+", help="tuned checkpoint(s) from the same base, or `layerwise "
                                           "train` run directories (RUN/merged or RUN/model)")
    p.add_argument("--tol", default="1e-5", help="comma-separated tolerances, e.g. 1e-5,1e-8,0; "
                                                 "the first one is used for overlap and plots")
    p.add_argument("--rounding", default="auto", choices=ROUNDING_MODES,
                   help="auto: a base stored in more bits than a tuned checkpoint is rounded to the "
                        "tuned dtype first (a bf16 run starts from the rounded base); a dtype: round "
                        "both sides to it (as if both were saved in it); none: raw difference")
    p.add_argument("--no-rank", action="store_true", help="skip the SVD-based update ranks")
    p.add_argument("--expect-layers", default=None, metavar="SPEC",
                   help="check that every changed entry lies inside this selection (the --layers "
                        "grammar); exit 1 if not. Without it, runs written by `layerwise train "
                        "--layers` are checked against their own selection")
    p.add_argument("--labels", default=None, help="comma-separated names for the tuned runs")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write compare.json, CSVs, plots and report.html here")


def _tols(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LayerwiseError(f"--tol {text!r}: expected comma-separated numbers") from None


def _labels(tuned: list[str], given: str | None) -> list[str]:
    if given is not None:
        labels = [x.strip() for x in given.split(",")]
        if len(labels) != len(tuned) or not all(labels):
            raise LayerwiseError(f"--labels gives {len(labels)} names for {len(tuned)} tuned checkpoints")
    else:  # out/demo/grpo-full-s0/model -> grpo-full-s0
        labels = [Path(t).parent.name if Path(t).name in ("model", "merged") else Path(t).name or t
                  for t in tuned]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # keep names unique
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label}#{seen[label]}"
    return labels


def _own_selection(tuned: str) -> str | None:
    """The --layers spec a `layerwise train` run was made with (metrics.json beside model/)."""
    metrics = Path(tuned).parent / "metrics.json"
    if Path(tuned).name != "model" or not metrics.is_file():
        return None
    config = (read_json(metrics) or {}).get("config") or {}
    if config.get("layers") and not config.get("full") and not config.get("lora"):
        return str(config["layers"])
    return None


def run(args: argparse.Namespace) -> int:
    from layerwise.analysis.checkpoints import resolve_checkpoint
    from layerwise.analysis.diff import REL_RANK_TOL, compare_many
    from layerwise.analysis.summary import (group_rows, meta_layers, block_index_map,
                                            selection_check, tensor_rows, to_csv, to_json)
    from layerwise.selection.resolve import resolve_selection

    tols = _tols(args.tol)
    args.tuned = [str(resolve_checkpoint(t)) for t in args.tuned]  # run dirs -> RUN/model
    labels = _labels(args.tuned, args.labels)
    comparison = compare_many(args.base, args.tuned, tols, ranks=not args.no_rank,
                              rounding=args.rounding)
    tols = comparison.diffs[0].tols
    layers = meta_layers(args.base)  # one meta-device model for grouping and selection checks
    groups = block_index_map(layers)
    if args.expect_layers and layers is None:
        raise LayerwiseError(f"--expect-layers: cannot find the blocks of {args.base} (no config.json "
                             "or an unknown architecture)")
    doc: dict = {"base": args.base, "tolerances": list(tols), "precision": "float32 differences",
                 "rounding": args.rounding, "rel_rank_tol": REL_RANK_TOL, "runs": [], "overlap": []}
    lines, failed_checks = [], []
    for label, tuned, diff in zip(labels, args.tuned, comparison.diffs):
        blocks = group_rows(diff, groups, "block")
        ranks = [t.rank_fraction for t in diff.tensors if t.rank_fraction is not None
                 and t.changed[tols[0]] > 0]
        spec = args.expect_layers or (_own_selection(tuned) if layers is not None else None)
        check = None
        if spec:
            check = {"spec": spec, **selection_check(diff, resolve_selection(layers, spec).names, tols[0])}
            if args.expect_layers and not check["ok"]:
                failed_checks.append(label)
        run = {"label": label, "tuned": tuned, "tuned_dtypes": diff.tuned_dtypes,
               "base_rounded_to": diff.base_rounded_to, "tuned_rounded_to": diff.tuned_rounded_to,
               "global_sparsity": {f"{t:g}": diff.sparsity(t) for t in tols}, "missing": diff.missing,
               "mean_rank_fraction_of_updated_matrices": sum(ranks) / len(ranks) if ranks else None,
               "magnitude_ratio": diff.magnitude_ratio,
               "selection_check": check, "blocks": blocks, "modules": group_rows(diff, groups, "module"),
               "tensors": tensor_rows(diff)}
        doc["runs"].append(run)
        lines += _run_lines(label, run, diff, tols)
    for (i, j), o in comparison.overlaps.items():
        doc["overlap"].append({"a": labels[i], "b": labels[j], **o})
        lines.append(f"overlap {labels[i]} / {labels[j]}: o1 {_fmt(o['o1'])} (chance "
                     f"{_fmt(o['o1_rand'])}), o2 {_fmt(o['o2'])} (chance {_fmt(o['o2_rand'])})")
    if len(labels) > 1:
        doc["overlap_matrix"] = {"labels": labels, "tol": comparison.overlap_tol,
                                 "o1": comparison.overlap_matrix("o1"),
                                 "chance": comparison.overlap_matrix("o1_rand")}
    if args.out:
        lines.append(f"wrote {_write(doc, Path(args.out), to_csv, to_json)}")
    sys.stdout.write("\n".join(lines) + "\n")
    if failed_checks:
        sys.stderr.write(f"layerwise: --expect-layers {args.expect_layers}: changed entries outside "
                         f"the selection in {', '.join(failed_checks)}\n")
        return 1
    return 0


def _fmt(v) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def _run_lines(label: str, run: dict, diff, tols) -> list[str]:
    from layerwise.reporting.tables import compact_ranges

    sp = ", ".join(f"{diff.sparsity(t):.4f} at tol {t:g}" for t in tols)
    rank = run["mean_rank_fraction_of_updated_matrices"]
    lines = [f"{label}: update sparsity {sp}"
             + (f"; mean update rank {rank:.3f} of full" if rank is not None else "")
             + _rounding_note(diff)]
    ratio = run["magnitude_ratio"]
    if ratio is not None and ratio < LOW_MAGNITUDE_RATIO:
        lines.append(f"  changed entries sit near zero: their mean |θ0| is {ratio:.3f}x their tensors' mean, "
                     "what rounding to a low precision leaves; check the training dtype")
    for side, names in diff.missing.items():
        if names:
            lines.append(f"  missing in {side}: {', '.join(names[:5])}"
                         + (f" (+{len(names) - 5} more)" if len(names) > 5 else ""))
    changed = [r["group"] for r in run["blocks"] if r[f"sparsity@{tols[0]:g}"] < 1.0]
    blocks = [int(g.split()[1]) for g in changed if g.startswith("block ")]
    named = ([f"blocks {compact_ranges(blocks)}"] if blocks else []) + [g for g in changed
                                                                       if not g.startswith("block ")]
    lines.append(f"  groups with changed entries at tol {tols[0]:g}: {', '.join(named) or 'none'}")
    check = run["selection_check"]
    if check:
        lines.append(f"  selection {check['spec']}: " + (
            f"all {check['changed_inside']:,} changed entries lie inside it" if check["ok"] else
            f"{check['changed_outside']:,} changed entries OUTSIDE it, in "
            f"{', '.join(check['tensors_outside'][:5])}"
            + (f" (+{len(check['tensors_outside']) - 5} more)" if len(check['tensors_outside']) > 5 else "")))
    return lines


def _rounding_note(diff) -> str:
    stored = ", ".join(diff.tuned_dtypes)
    if diff.tuned_rounded_to:
        return f" (stored {stored}; both sides rounded to {', '.join(diff.tuned_rounded_to)} first)"
    if diff.base_rounded_to:
        return f" (stored {stored}; base rounded to {', '.join(diff.base_rounded_to)} first)"
    return ""


def _write(doc: dict, out: Path, to_csv, to_json) -> Path:
    from layerwise.reporting.compare_report import compare_html, write_plots

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("run*_*.csv"):  # from an earlier compare with more runs into this dir
        index = stale.name[3:].split("_", 1)[0]
        if index.isdigit() and int(index) >= len(doc["runs"]):
            stale.unlink()
    if not doc["overlap"]:
        (out / "overlap.csv").unlink(missing_ok=True)
    for i, run in enumerate(doc["runs"]):
        for part in ("tensors", "blocks", "modules"):
            atomic_write_text(out / f"run{i}_{part}.csv", to_csv(run[part]))
    if doc["overlap"]:
        atomic_write_text(out / "overlap.csv", to_csv(doc["overlap"]))
    atomic_write_text(out / "compare.json", to_json(doc))
    return compare_html(doc, write_plots(doc, out), out / "report.html")
