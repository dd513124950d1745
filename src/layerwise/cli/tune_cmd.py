"""`layerwise tune`: estimate, choose K blocks, train them, verify; one report, resumable.

The training flags are `layerwise train`'s (the same declarations as `sweep`), minus what tune
decides itself: what trains and where each run goes.
"""

from __future__ import annotations

import argparse
import sys

from layerwise.cli.args import add_config_arguments, cli_fields, config_values
from layerwise.cli.main import add_model_args
from layerwise.errors import LayerwiseError
from layerwise.training.config import TrainConfig, fold_dataset

NAME = "tune"
HELP = "pick K blocks from cheap estimates, train them, verify (and compare with baselines)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", required=False, default=None, metavar="K|P%",
                   help="blocks to train: a count or a percentage of the model's blocks (required)")
    p.add_argument("--baseline", default="", metavar="LIST",
                   help="comma-separated: mid, full, lora: the same steps spent on each, side by "
                        "side (default: none)")
    p.add_argument("--estimates", default=None, metavar="FILE[:FIELD]",
                   help="rank blocks by a diagnostics.json or contribution.json of this model and "
                        "task instead of the start-of-training gradients (default: gradients)")
    p.add_argument("--estimate-prompts", type=int, default=8,
                   help="prompts for the gradient estimate (default: %(default)s)")
    p.add_argument("--estimator", default="adam-gain", metavar="NAME",
                   help="what ranks the blocks: adam-gain (||g_k||_1, one backward pass per "
                        "batch), adam-snr (Adam's expected per-step gain over --estimate-batches "
                        ">= 2 batches), probe (--probe-steps AdamW steps per block from the cached "
                        "frozen prefix, held-out loss drop), profile (--profile-blocks blocks "
                        "spread over depth, each trained alone for --profile-steps steps as the "
                        "run will train, training loss or reward interpolated over depth; "
                        "steady under SFT, not under GRPO, whose 20-step probes on arithmetic "
                        "ranked at Spearman 0.90, -0.22 and 0.92 over three seeds) "
                        "(default: %(default)s)")
    p.add_argument("--estimate-batches", type=int, default=None,
                   help="batches of --estimate-prompts prompts whose mean gradient the estimate "
                        "uses (default: as many, 1 to 4, as keep the estimate's examples at most a "
                        "sixth of the training's steps x batch size, so that it costs less than "
                        "the run it serves; against the arithmetic SFT ground truth, 4 batches "
                        "gave Spearman 0.900 +- 0.002 over gradient seeds, 1 batch 0.871 +- 0.057)")
    p.add_argument("--probe-steps", type=int, default=4,
                   help="the probe's AdamW steps on each block (default: %(default)s)")
    p.add_argument("--profile-blocks", type=int, default=5,
                   help="the profile's blocks, evenly spaced over depth (default: %(default)s)")
    p.add_argument("--profile-steps", type=int, default=None,
                   help="the profile's steps per block (default: --steps / (--profile-blocks + "
                        "1), so the profile costs less than the run it picks blocks for)")
    p.add_argument("--full-lr", type=float, default=None,
                   help="learning rate of the full baseline (default: --lr)")
    p.add_argument("--max-step-cost", type=float, default=0.8, metavar="F",
                   help="choose only among blocks whose backward pass is at most F of a full "
                        "one's (1: any block; default %(default)s, blocks from about 30%% of depth "
                        "up: against the SmolLM2 ground-truth sweeps it kept arithmetic SFT as "
                        "good at a cheaper step, cost GRPO about 1.5 problems of 60 and raised "
                        "steps=2 SFT from C 0.54 to 0.78)")
    add_model_args(p)
    add_config_arguments(p, (TrainConfig,), sweep=True, skip=("schedule", "park"))
    p.add_argument("--out", default=None, metavar="DIR",
                   help="tune.json, report.html, run/ and baseline-*/ (required; resumes)")


def run(args: argparse.Namespace) -> int:
    from layerwise.sweeps.spec import train_options
    from layerwise.tasks.registry import absolute_paths
    from layerwise.tuning import TuneConfig, run_tune

    if not args.out:
        raise LayerwiseError("--out DIR is required (tune resumes from it)")
    if not args.budget:
        raise LayerwiseError("--budget K|P% is required: how many blocks to train (e.g. 2 or 10%)")
    shared = {f.name for f in cli_fields((TrainConfig,), sweep=True)}
    values = fold_dataset({k: v for k, v in config_values(args, TrainConfig).items() if k in shared})
    task, task_options = absolute_paths(values["task"], values["task_options"])
    train = {k: v for k, v in train_options(values).items()
             if k not in ("task", "task_options", "method", "schedule", "park")}
    cfg = TuneConfig(model=args.model, task=task, method=values["method"], budget=args.budget,
                     out=args.out, task_options=task_options,
                     baselines=tuple(b.strip() for b in args.baseline.split(",") if b.strip()),
                     estimates=args.estimates, estimate_prompts=args.estimate_prompts,
                     estimator=args.estimator, estimate_batches=args.estimate_batches,
                     probe_steps=args.probe_steps, profile_blocks=args.profile_blocks,
                     profile_steps=args.profile_steps,
                     seed=args.seed, train=train, full_lr=args.full_lr,
                     max_step_cost=args.max_step_cost)
    say = (lambda _: None) if args.quiet else (lambda m: print(f"layerwise: {m}", file=sys.stderr))
    result = run_tune(cfg, say)
    lines = [f"choice        {result.choice.policy}: blocks "
             f"{', '.join(map(str, result.choice.blocks))} of {result.num_blocks} "
             f"({result.choice.reason})"]
    for r in [result.run, *result.baselines.values()]:
        if r is None:
            continue
        gain = "—" if r.gain is None else f"{r.gain:+.3f}"
        forgetting = "—" if r.forgetting is None else f"{100 * r.forgetting:+.1f}%"
        step = "" if r.median_step_s is None else f"; step {r.median_step_s:.2f} s"
        lines.append(f"{r.label:<13} score {_r(r.score_before)} -> {_r(r.score_after)} (gain "
                     f"{gain}); general perplexity {forgetting}; {r.trainable_params:,} "
                     f"trainable{step}; {r.status}")
    if result.verdict:
        lines.append(f"verdict       {result.verdict['headline']}")
        lines += [f"              {c['sentence']}" for c in result.verdict["comparisons"]]
        if result.verdict.get("cost"):
            lines.append(f"cost          {result.verdict['cost']}")
    v = result.verification
    lines.append("verified      " + (
        f"nothing outside blocks {v['selection']} changed" if v.get("ok") else
        v.get("why") or f"{v.get('changed_outside'):,} entries changed OUTSIDE the choice"))
    lines.append(f"report        {result.out}/report.html")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if result.status == "completed" and v.get("ok") else 1


def _r(x) -> str:
    return "—" if x is None else f"{x:.3f}"
