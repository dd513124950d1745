"""`layerwise diagnose`: a per-block importance profile of a model on a text, by every metric."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from layerwise.cli.main import add_data_args, add_model_args
from layerwise.errors import LayerwiseError

NAME = "diagnose"
HELP = "per-block importance profile: removal, manipulations, representation, weight and gradient metrics"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p, seq_len=256, num_seqs=4)
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics", default="default", metavar="LIST",
                   help="comma list of metrics, 'default' (all but recovery and prune) or 'all'; "
                        "run --list-metrics to see them")
    g.add_argument("--list-metrics", action="store_true", help="list the metrics and exit")
    g.add_argument("--alpha", type=_floats, default=(0.9,), metavar="A[,A...]",
                   help="scale factors for 'scale' (default 0.9)")
    g.add_argument("--noise-fraction", type=float, default=0.5,
                   help="noise std as a fraction of each matrix's std, for 'noise' and 'recovery'")
    g.add_argument("--max-run", type=int, default=4,
                   help="longest run of consecutive blocks for 'angular' and 'block-influence'")
    g.add_argument("--ridge", type=float, default=1e-3, help="relative ridge strength for 'linear-r2'")
    g.add_argument("--recovery-blocks", metavar="SPEC", default=None,
                   help="blocks for 'recovery' as a selection (default: all; it is costly)")
    g.add_argument("--recovery-tolerance", type=float, default=5.0,
                   help="'recovery': back within this %% of the intact perplexity")
    g.add_argument("--recovery-max-steps", type=int, default=200)
    g.add_argument("--recovery-lr", type=float, default=1e-4)
    g.add_argument("--recovery-eval-every", type=int, default=5)
    g.add_argument("--prune-blocks", type=int, default=None,
                   help="'prune': number of blocks to remove greedily (default: a quarter)")
    g.add_argument("--save", metavar="DIR", default=None,
                   help="with 'prune': write the pruned model as an HF checkpoint to DIR")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write diagnostics.json, diagnostics.csv, plots and report.html to DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _list_metrics() -> int:
    from layerwise.diagnostics.registry import resolve_metrics

    for spec in resolve_metrics("all"):
        flag = "" if spec.default else "  (opt-in)"
        print(f"{spec.name:<15} {', '.join(spec.fields)}{flag}\n{'':<15} {spec.help}")
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def summary_table(diag: dict) -> str:
    """Per-block view for the terminal: every field except raw perplexities (their % change is
    shown); the files in --out hold everything."""
    fields = [f for m in diag["metrics"].values() for f in m["fields"] if not f.endswith("_perplexity")]
    lines = [
        f"model {diag['model']} | data {diag['data']} | {diag['windows']['num_seqs']} x "
        f"{diag['windows']['seq_len']} tokens | baseline perplexity {diag['baseline_perplexity']:.4f}",
        "",
        "block " + " ".join(f"{f:>{max(len(f), 9)}}" for f in fields),
    ]
    for row in diag["layers"]:
        lines.append(f"{row['index']:>5} " + " ".join(
            f"{_fmt(row.get(f)):>{max(len(f), 9)}}" for f in fields))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list_metrics:
        return _list_metrics()
    from layerwise.diagnostics.context import DiagnosticOptions
    from layerwise.diagnostics.diagnose import diagnose_model
    from layerwise.diagnostics.registry import resolve_metrics

    metrics = resolve_metrics(args.metrics)
    if args.save and "prune" not in [m.name for m in metrics]:
        raise LayerwiseError("--save writes the pruned model: add 'prune' to --metrics")
    from layerwise.fileio import check_output_dir

    if args.out:
        check_output_dir(args.out)  # before any compute, not after it
    if args.save:
        check_output_dir(args.save, "--save")
    options = DiagnosticOptions(  # refuse bad knobs before loading anything
        alphas=args.alpha, noise_fraction=args.noise_fraction, max_run=args.max_run,
        ridge=args.ridge, recovery_tolerance_pct=args.recovery_tolerance,
        recovery_max_steps=args.recovery_max_steps, recovery_lr=args.recovery_lr,
        recovery_eval_every=args.recovery_eval_every, prune_blocks=args.prune_blocks,
        batch_size=args.batch_size, seed=args.seed,
    )
    if args.save and Path(args.save).exists() and any(Path(args.save).iterdir()):
        raise LayerwiseError(f"--save {args.save} already exists and is not empty; choose a new directory")

    diagnosis = diagnose_model(
        args.model, metrics, options, data=args.data, text_field=args.text_field,
        seq_len=args.seq_len, num_seqs=args.num_seqs, dtype=args.dtype, device=args.device,
        trust_remote_code=args.trust_remote_code, recovery_blocks=args.recovery_blocks,
        out=args.out or None, save=args.save or None,
        progress=not args.no_progress and not args.quiet)
    diag = diagnosis.document
    print(summary_table(diag))
    if args.out:
        written = diagnosis.paths
        print(f"\nwrote {len(written)} files to {args.out}: " + ", ".join(p.name for p in written))
    if args.save:
        order = diag["metrics"]["prune"]["extra"]["order"]
        print(f"wrote the model without blocks {sorted(order)} to {diagnosis.pruned}", file=sys.stderr)
    return 0
