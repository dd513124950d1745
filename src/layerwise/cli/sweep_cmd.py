"""`layerwise sweep`: layer contribution C(k) over many selections, resumable, local or on Ray.

The training flags are the same declarations as `layerwise train`'s (training/config.py), minus
what a sweep decides itself (what trains, the seed, the output directory of each run).
"""

from __future__ import annotations

import argparse
import math
import sys

from layerwise.cli.args import add_config_arguments, cli_fields, config_values
from layerwise.cli.main import add_model_args
from layerwise.errors import LayerwiseError
from layerwise.training.config import TrainConfig, fold_dataset

NAME = "sweep"
HELP = "train each selection (e.g. every block) and full, and report the layer contribution C(k)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="read flags from a YAML file (keys: long flag names); flags given here win")
    add_model_args(p)
    p.add_argument("--layers", default="each", metavar="ITEMS",
                   help="';'-separated: each, window:K, mid:K, top:K@FILE, boost:SPEC=X, or any "
                        "selection spec (default: %(default)s, every block)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--full-lr", type=float, default=None,
                   help="learning rate of the full run (default: --lr)")
    add_config_arguments(p, (TrainConfig,), sweep=True)
    r = p.add_argument_group("execution")
    r.add_argument("--out", required=False, default=None, metavar="DIR",
                   help="store, contribution.*, report.html (required)")
    r.add_argument("--workers", type=int, default=1, help="local worker processes (default: %(default)s)")
    r.add_argument("--backend", choices=("local", "ray"), default="local", help="(default: %(default)s)")
    r.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or auto)")
    r.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per run on Ray (default: %(default)s)")
    r.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per run on Ray (default: %(default)s)")
    r.add_argument("--no-keep-full", action="store_true",
                   help="do not keep the full runs' checkpoints (full-seedS/; the delta estimator "
                        "of `layerwise estimate` needs one) (default: off, they are kept)")
    r.add_argument("--force", action="store_true",
                   help="use an out dir whose store belongs to a different sweep (default: off)")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in str(text).split(",") if s.strip()))
    except ValueError:
        raise LayerwiseError(f"--seeds {text!r}: expected comma-separated integers") from None
    if not seeds:
        raise LayerwiseError("--seeds is empty")
    return seeds


def run(args: argparse.Namespace) -> int:
    from layerwise.sweeps.outputs import write_partial_outputs, write_sweep_outputs
    from layerwise.sweeps.runner import run_sweep
    from layerwise.sweeps.spec import SweepSpec, train_options

    if not args.out:
        raise LayerwiseError("--out DIR is required (the sweep's store lives there, so it resumes)")
    from layerwise.fileio import check_output_dir

    check_output_dir(args.out)
    shared = {f.name for f in cli_fields((TrainConfig,), sweep=True)}
    values = fold_dataset({k: v for k, v in config_values(args, TrainConfig).items() if k in shared})
    from layerwise.tasks.registry import absolute_paths

    task, task_options = absolute_paths(values["task"], values["task_options"])
    sweep = SweepSpec(model=args.model, task=task, method=values["method"],
                      layers=args.layers, seeds=_seeds(args.seeds),
                      task_options=task_options, train=train_options(values),
                      full_lr=args.full_lr)

    def progress(run, result):
        if not args.quiet:
            print(f"layerwise: {run.label} seed {run.seed}: {result['status']}"
                  + (f" ({result['error']})" if result["error"] else ""), file=sys.stderr)

    try:
        rows = run_sweep(sweep, args.out, workers=args.workers, backend=args.backend,
                         force=args.force, dtype=args.dtype, device=args.device,
                         ray_address=args.ray_address, ray_cpus=args.ray_cpus,
                         ray_gpus=args.ray_gpus, keep_full=not args.no_keep_full,
                         on_result=progress)
    except KeyboardInterrupt:
        # Ctrl-C / SIGTERM: what has finished is in the store and resumes; show it meanwhile
        n = write_partial_outputs(sweep, args.out)
        if n is not None:
            print(f"layerwise: sweep interrupted: {args.out}/contribution.* and report.html show "
                  f"the {n} completed runs (marked partial); rerun the same command to finish",
                  file=sys.stderr)
        raise
    s_base, full, table = write_sweep_outputs(sweep, rows, args.out)
    lines = [f"base {s_base:.3f}; full " + ", ".join(f"seed {k} {v:.3f}" for k, v in sorted(full.items())),
             f"{'selection':<16} {'score':>15} {'C(k)':>15} {'trainable':>12}"]
    from layerwise.reporting.sweep_report import display_order

    for r in display_order(table):
        c = "nan" if math.isnan(r.contribution_mean) else f"{r.contribution_mean:.3f} ± {r.contribution_sd:.3f}"
        lines.append(f"{r.label:<16} {r.score_mean:>7.3f} ± {r.score_sd:.3f} {c:>15} "
                     f"{r.trainable_params or 0:>12,}" + (f"  failed: {'; '.join(r.failed)}" if r.failed else ""))
    from layerwise.sweeps.contribution import sweep_notes

    lines += [f"note: {n}" for n in sweep_notes(rows, s_base, full, table)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
