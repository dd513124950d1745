"""`layerwise estimate`: how well cheap estimators predict a measured sweep's C(k), at what cost."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text, json_safe, read_json

log = logging.getLogger(__name__)

NAME = "estimate"
HELP = "predict C(k) cheaply (diagnostics metrics, one full run, start-of-training gradients) " \
       "and compare with a measured sweep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", metavar="SWEEP_DIR", help="output directory of `layerwise sweep`")
    p.add_argument("--diagnostics", default=None, metavar="FILE",
                   help="diagnostics.json of `layerwise diagnose` on the same model (metric estimators)")
    p.add_argument("--full-run", default=None, metavar="DIR",
                   help="a full training run (DIR/model); default: the sweep's own full-seed0/")
    p.add_argument("--no-delta", action="store_true", help="skip the one-full-run estimator")
    p.add_argument("--no-gradient", action="store_true",
                   help="skip the estimators that compute or train (gradient, adam-gain, "
                        "adam-snr, adam-val, probe, profile, profile:logp)")
    p.add_argument("--gradient-prompts", type=int, default=8,
                   help="training prompts per gradient batch (default 8)")
    p.add_argument("--gradient-batches", type=int, default=4,
                   help="independent batches of prompts: gradient and adam-gain use their mean "
                        "gradient, adam-snr their signal-to-noise (needs >= 2; default 4)")
    p.add_argument("--gradient-seed", type=int, default=0,
                   help="seed of the gradient and probe prompts (and, for RL, of the sampling) "
                        "(default 0)")
    p.add_argument("--probe-steps", type=int, default=4,
                   help="probe: AdamW steps on each block alone (at the sweep's --lr) before its "
                        "held-out loss drop is measured; 0 skips the probe (default 4)")
    p.add_argument("--profile-blocks", type=int, default=5,
                   help="profile: blocks evenly spaced over depth, each trained alone for "
                        "--profile-steps steps as the sweep trains, their training loss (RL: "
                        "reward) interpolated over depth; 0 skips the profile (default 5). The "
                        "same runs also give profile:logp, scored by the gain in log-likelihood "
                        "of the task's reference answers on 64 training prompts")
    p.add_argument("--profile-steps", type=int, default=None,
                   help="profile: steps per block (default: the sweep's steps / (blocks + 1), so "
                        "the profile costs less than one single-block run's training)")
    p.add_argument("--out", default=None, metavar="FILE", help="default: SWEEP_DIR/estimators.json")


def _same_model(diag, doc: dict, column, sweep_dir: Path, diag_path: str) -> None:
    """Diagnostics of another model than the sweep's are refused before anything is computed."""
    from layerwise.models.identity import check_identity, describe
    from layerwise.sweeps.store import open_store

    if not isinstance(diag, dict) or not isinstance(diag.get("layers"), list):
        raise LayerwiseError(f"--diagnostics {diag_path} is not a diagnostics.json (no 'layers' "
                             "list): write one with `layerwise diagnose --out DIR`")
    theirs = doc.get("identity")
    if theirs is None:
        with open_store(sweep_dir) as store:
            theirs = store.identity()
    blocks = diag.get("num_blocks")
    if theirs and isinstance(blocks, int) and blocks != theirs.get("num_blocks"):
        raise LayerwiseError(f"--diagnostics {diag_path} is of a {blocks}-block model; the sweep "
                             f"{sweep_dir} is of {describe(theirs)}: a file from another model")
    if isinstance(blocks, int) and column.per_block and max(column.per_block) >= blocks:
        raise LayerwiseError(f"--diagnostics {diag_path} is of a {blocks}-block model; the sweep "
                             f"{sweep_dir} has block {max(column.per_block)}: a file from another model")
    if theirs:
        check_identity(diag.get("identity"), theirs, f"--diagnostics {diag_path}")


def _same_inputs(spec: dict, before: dict | None, sweep_dir: Path, full_dir: Path | None) -> None:
    """The model, tokenizer and data the estimators read now are those the sweep's runs read
    (its C(k) is what they are judged by); the --full-run's model too."""
    from layerwise.inputs import check, read_record
    from layerwise.sweeps.runner import sweep_inputs
    from layerwise.sweeps.spec import SweepSpec

    fresh = ("rerun the sweep on this model and data (another --out), or restore the model and "
             "data its runs read")
    if before is None:
        log.warning("%s has no record of the inputs its runs read (an older sweep): the model "
                    "and data the estimators read now cannot be checked against them", sweep_dir)
    else:
        try:
            sweep = SweepSpec(**{**spec, "seeds": tuple(spec.get("seeds") or (0,))})
        except TypeError as exc:
            raise LayerwiseError(f"{sweep_dir}/contribution.json: its sweep spec is unreadable "
                                 f"({exc})") from exc
        check(before, sweep_inputs(sweep, like=before), f"sweep {sweep_dir}", "its runs were made",
              fresh, sections=("model", "tokenizer", "data", "code"))
    if full_dir is not None and before is not None:
        full = read_record(full_dir)
        if full is not None:
            check(before, full, f"--full-run {full_dir} was trained from another model than the "
                  "sweep's", None, "pass the sweep's own full run, or --no-delta",
                  sections=("model", "tokenizer"))


def run(args: argparse.Namespace) -> int:
    from layerwise.models.arch import discover_layers
    from layerwise.models.loading import load_model
    from layerwise.sweeps.compare import load_sweep
    from layerwise.sweeps.outputs import partial_note
    from layerwise.sweeps.estimators import (
        Timer, agreement, delta_estimates, depth_priors, gradient_norms, metric_estimates,
        metric_seconds, probe_gains, profile_estimates)
    from layerwise.sweeps.store import open_store
    from layerwise.tasks.registry import get_task
    from layerwise.training.result import read_run

    sweep_dir = Path(args.sweep)
    from layerwise.fileio import check_output_file

    if args.gradient_prompts < 1 or args.gradient_batches < 1:
        raise LayerwiseError(f"--gradient-prompts {args.gradient_prompts} and --gradient-batches "
                             f"{args.gradient_batches}: both must be >= 1")
    if args.probe_steps < 0:
        raise LayerwiseError(f"--probe-steps {args.probe_steps}: must be >= 0 (0 skips the probe)")
    if args.profile_blocks < 0 or args.profile_blocks == 1:
        raise LayerwiseError(f"--profile-blocks {args.profile_blocks}: 0 skips the profile, else "
                             "at least 2 (it interpolates between them)")
    if args.profile_steps is not None and args.profile_steps < 2:
        raise LayerwiseError(f"--profile-steps {args.profile_steps}: at least 2 (it scores steps "
                             "s/2..s)")

    check_output_file(args.out if args.out else sweep_dir / "estimators.json",
                      "--out" if args.out else "estimate's output")
    column = load_sweep(sweep_dir)
    doc = column.doc
    spec = doc.get("sweep") or {}
    # Every input is checked before the sweep's own content and before any model loads.
    diag = None
    if args.diagnostics:
        diag = read_json(args.diagnostics)
        _same_model(diag, doc, column, sweep_dir, args.diagnostics)
    full_dir = Path(args.full_run) if args.full_run else sweep_dir / "full-seed0"
    if not args.no_delta and not (full_dir / "model").is_dir():
        raise LayerwiseError(f"no full-run checkpoint at {full_dir}/model (pass --full-run, or "
                             "--no-delta)")
    with open_store(sweep_dir) as store:
        _same_inputs(spec, doc.get("inputs") or store.inputs(), sweep_dir,
                     None if args.no_delta else full_dir)
    if not column.per_block:
        why = "; ".join(doc.get("notes") or [])
        raise LayerwiseError(f"{sweep_dir}: the sweep has no single-block C(k) to compare with"
                             + (f" ({why})" if why else ""))
    with open_store(sweep_dir) as store:
        runs = store.current_runs()  # never the runs of another model --force kept beside them
    sweep_seconds = sum((r["metrics"] or {}).get("wall_seconds") or 0.0 for r in runs)
    single = [(r["metrics"] or {}).get("wall_seconds") for r in runs
              if len(r["spec"].get("blocks") or []) == 1 and r["spec"].get("kind") != "full"
              and (r["metrics"] or {}).get("wall_seconds")]
    run_seconds = sum(single) / len(single) if single else None  # one single-block run
    estimates: dict[str, list] = {}
    seconds: dict[str, float] = {}
    if diag is not None:
        estimates.update(metric_estimates(diag))
        seconds.update(metric_seconds(diag))
    task = get_task(spec.get("task"), **(spec.get("task_options") or {}))
    train = spec.get("train") or {}
    eval_n = int(train.get("eval_n") or 100)
    base = load_model(spec.get("model"))
    from layerwise.tasks.registry import prepare_task

    prepare_task(task, base.tokenizer)
    # the references every estimator has to beat: depth alone, free
    priors = depth_priors(discover_layers(base.model).num_blocks)
    estimates.update(priors)
    seconds.update({name: 0.0 for name in priors})
    if not args.no_delta:
        full_run = read_run(full_dir)
        with Timer() as t:
            tuned = load_model(str(full_dir / "model")).model
            estimates["delta"] = delta_estimates(base.model, tuned, base.tokenizer, task, eval_n,
                                                 doc["base_score"], full_run.final.score)
        seconds["delta"] = t.seconds + float(full_run.wall_seconds or 0.0)
    if not args.no_gradient:
        # gradient, adam-gain and adam-snr from one backward pass per batch, adam-val from one
        # more (held-out prompts)
        estimates.update(gradient_norms(
            base.model, base.tokenizer, task, spec.get("method", "sft"),
            n_prompts=args.gradient_prompts, batches=args.gradient_batches,
            num_generations=int(train.get("num_generations") or 8),
            max_new_tokens=train.get("max_completion_length"), validate=True, seconds=seconds,
            seed=args.gradient_seed))
    probe_info: dict = {}
    if not args.no_gradient and args.probe_steps:
        # a short single-block run per block from the cached frozen prefix, at the sweep's lr
        estimates["probe"] = probe_gains(
            base.model, base.tokenizer, task, spec.get("method", "sft"),
            lr=float(train.get("lr") or 1e-4), steps=args.probe_steps,
            weight_decay=float(train.get("weight_decay") or 0.0),
            n_prompts=args.gradient_prompts, num_generations=int(train.get("num_generations") or 8),
            max_new_tokens=train.get("max_completion_length"), seed=args.gradient_seed,
            seconds=seconds, info=probe_info)
    profile_info: dict = {}
    template = next((r["spec"].get("train") for r in runs if r["status"] == "completed"
                     and len(r["spec"].get("blocks") or []) == 1
                     and r["spec"].get("kind") != "full"), None)
    if not args.no_gradient and args.profile_blocks and template:
        # a few real single-block runs, cut short, at blocks spread over depth
        steps = args.profile_steps or max(2, int(template.get("steps") or 2)
                                          // (args.profile_blocks + 1))
        base_run = next((r for r in runs if r["spec"].get("kind") == "base"
                         and r["status"] == "completed"), None)
        estimates.update(profile_estimates(
            base, template, probes=args.profile_blocks, steps=steps, seed=args.gradient_seed,
            model=spec.get("model"), base=(base_run or {}).get("metrics"), seconds=seconds,
            info=profile_info))
    rows = agreement(estimates, column.per_block, seconds, sweep_seconds, run_seconds)
    out = Path(args.out) if args.out else sweep_dir / "estimators.json"
    partial = partial_note(doc.get("notes"))

    atomic_write_text(out, json.dumps(json_safe({
        "sweep": str(sweep_dir), "sweep_seconds": sweep_seconds,
        "gradient_prompts": args.gradient_prompts, "gradient_batches": args.gradient_batches,
        "gradient_seed": args.gradient_seed, "probe_steps": args.probe_steps,
        "probe_prefix_cache": probe_info.get("prefix_cache"), "profile": profile_info or None,
        "single_block_run_seconds": run_seconds, "rows": rows,
        "sweep_partial": partial is not None,
        "estimates": estimates, "measured": column.per_block}, "null"), indent=2) + "\n")
    lines = [f"{'estimator':<40} {'spearman':>9} {'top-1 regret':>12} {'blocks':>6} "
             f"{'cost vs sweep':>14} {'cost in runs':>12}"]
    for r in sorted(rows, key=lambda r: -(r["spearman"] if math.isfinite(r["spearman"]) else -9)):
        cost = "-" if r["cost_vs_sweep"] is None else f"{r['cost_vs_sweep']:.3f}"
        runs_cost = "-" if r["cost_in_runs"] is None else f"{r['cost_in_runs']:.2f}"
        lines.append(f"{r['estimator']:<40} {r['spearman']:>9.3f} {r['top1_regret']:>12.3f} "
                     f"{r['blocks']:>6} {cost:>14} {runs_cost:>12}")
    if partial is not None:  # an interrupted sweep: the comparison covers the blocks measured
        lines.append(f"note: against {len(column.per_block)} measured blocks; the sweep's "
                     f"{partial}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
