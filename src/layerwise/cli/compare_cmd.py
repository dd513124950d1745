"""`layerwise compare`: what fine-tuning changed — update sparsity, rank and overlap, streamed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from layerwise.errors import LayerwiseError

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


def _check_out(args) -> None:
    from layerwise.fileio import check_output_dir

    if args.out:
        check_output_dir(args.out)


def run(args: argparse.Namespace) -> int:
    from layerwise.analysis.checkpoints import resolve_checkpoint
    from layerwise.analysis.compare_doc import compare_document, run_labels, write_compare
    from layerwise.analysis.diff import compare_many

    tols = _tols(args.tol)
    _check_out(args)
    args.tuned = [str(resolve_checkpoint(t)) for t in args.tuned]  # run dirs -> RUN/model
    labels = run_labels(args.tuned, None if args.labels is None else args.labels.split(","),
                        name="--labels")
    comparison = compare_many(args.base, args.tuned, tols, ranks=not args.no_rank,
                              rounding=args.rounding)
    tols = comparison.diffs[0].tols
    doc, failed_checks = compare_document(args.base, args.tuned, labels, comparison, args.rounding,
                                          args.expect_layers, expect_name="--expect-layers")
    lines = []
    for run, diff in zip(doc["runs"], comparison.diffs):
        lines += _run_lines(run["label"], run, diff, tols)
    for o in doc["overlap"]:
        lines.append(f"overlap {o['a']} / {o['b']}: o1 {_fmt(o['o1'])} (chance "
                     f"{_fmt(o['o1_rand'])}), o2 {_fmt(o['o2'])} (chance {_fmt(o['o2_rand'])})")
    if args.out:
        lines.append(f"wrote {write_compare(doc, Path(args.out))}")
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
    if not changed and not any(diff.missing.values()):
        lines.append(f"  nothing changed at tol {tols[0]:g} (sparsity 1.0): the checkpoints match, "
                     "nothing to rank")
    else:
        lines.append(f"  groups with changed entries at tol {tols[0]:g}: "
                     f"{', '.join(named) or 'none'}")
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
