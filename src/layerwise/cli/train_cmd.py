"""`layerwise train`: fine-tune only the selected blocks (or all, or LoRA) with SFT, RL or DPO."""

from __future__ import annotations

import argparse
import sys

from layerwise.cli.main import add_model_args
from layerwise.errors import LayerwiseError
from layerwise.tasks.registry import parse_task_options, task_names
from layerwise.training.config import LORA_BUDGETS, LORA_TARGETS, METHODS, TrainConfig

NAME = "train"
HELP = "train only the selected blocks (or --full, or --lora) on a task, then compare with the base"


def add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="arithmetic",
                   help=f"{', '.join(task_names())}, or FILE.py:FACTORY for your own")
    p.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="task knob, repeatable (arithmetic: digits, ops, steps; gsm8k: train, test; "
                        "decision: low, high, max_turns; code: see docs/training.md)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--method", default="sft", choices=METHODS, help="training method")
    what = p.add_argument_group("what trains (exactly one)")
    what.add_argument("--layers", metavar="SPEC", help="train these blocks/parts in full, e.g. 15, "
                      "mid:2, 20%%-80%%, 8-11:mlp (docs/selection.md)")
    what.add_argument("--full", action="store_true", help="train every parameter")
    what.add_argument("--lora", action="store_true", help="train PEFT LoRA adapters")
    what.add_argument("--rank", type=int, default=16, help="LoRA rank per module (with --lora-budget "
                      "fixed: the rank standard LoRA would give each block)")
    what.add_argument("--lora-layers", default="all", metavar="SPEC",
                      help="blocks that get adapters, e.g. 40%%-60%% for the middle depth segment")
    what.add_argument("--lora-targets", default="attn", choices=tuple(LORA_TARGETS),
                      help="attn: q,k,v,o (the mid-block paper); all: every linear layer")
    what.add_argument("--lora-budget", default="fixed", choices=LORA_BUDGETS,
                      help="fixed: total rank = rank x blocks, shared by --lora-layers (mid-block "
                           "LoRA); per-layer: --rank in each selected block")
    what.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    what.add_argument("--lr-scale", action="append", default=[], metavar="SPEC=X",
                      help="multiply the learning rate of these blocks by X, repeatable (e.g. 12-14=3)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=50, help="optimizer steps")
    opt.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-4 SFT, "
                     "1e-5 RL/DPO; LoRA 1e-3 SFT, 2e-4 RL/DPO)")
    opt.add_argument("--batch-size", type=int, default=8,
                     help="sequences per step (RL: completions per step, a multiple of --num-generations)")
    opt.add_argument("--grad-accum", type=int, default=1)
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--warmup-ratio", type=float, default=0.0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute activations in backward (non-reentrant: works with frozen blocks)")
    opt.add_argument("--n-train", type=int, default=1000, help="training items drawn from the task")
    opt.add_argument("--max-length", type=int, default=256, help="SFT/DPO: max tokens per example")
    rl = p.add_argument_group("RL and preference")
    rl.add_argument("--num-generations", type=int, default=8, help="completions per prompt (RL)")
    rl.add_argument("--max-completion-length", type=int, default=None,
                    help="tokens per completion (default: the task's answer budget)")
    rl.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    rl.add_argument("--beta", type=float, default=0.0, help="KL coefficient for GRPO/RLOO")
    rl.add_argument("--dpo-beta", type=float, default=0.1, help="DPO beta")
    rl.add_argument("--dpo-samples", type=int, default=4,
                    help="DPO without --pairs: samples per prompt used to build pairs")
    rl.add_argument("--pairs", default=None, metavar="FILE.jsonl",
                    help="DPO preference pairs (fields prompt, chosen, rejected)")
    what.add_argument("--mask-from", default=None, metavar="BASE,TUNED",
                      help="subnetwork-only training: only entries where BASE and TUNED differ "
                           "(|delta| > --mask-tol, in fp32) may change; BASE may be 'embedded', "
                           "TUNED a run directory")
    what.add_argument("--mask-tol", type=float, default=1e-5)
    ev = p.add_argument_group("evaluation and outputs")
    ev.add_argument("--eval-n", type=int, default=100, help="held-out items scored before and after")
    ev.add_argument("--eval-batch-size", type=int, default=32)
    ev.add_argument("--general-data", default=None, metavar="D",
                    help="text for the forgetting check (default: the embedded text)")
    ev.add_argument("--out", default=None, metavar="DIR",
                    help="write model/, metrics.json, curves.png, eval records, TensorBoard logs")
    ev.add_argument("--merge", action="store_true", help="LoRA: also save a merged copy (merged/)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        task=args.task, task_options=parse_task_options(args.task_option), method=args.method,
        layers=args.layers, full=args.full, lora=args.lora, rank=args.rank,
        lora_alpha=args.lora_alpha, lora_layers=args.lora_layers, lora_targets=args.lora_targets,
        lora_budget=args.lora_budget, lr_scale=args.lr_scale, steps=args.steps, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm,
        gradient_checkpointing=args.gradient_checkpointing, seed=args.seed, n_train=args.n_train,
        max_length=args.max_length, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, temperature=args.temperature,
        beta=args.beta, dpo_beta=args.dpo_beta, dpo_samples=args.dpo_samples, pairs=args.pairs,
        eval_n=args.eval_n, eval_batch_size=args.eval_batch_size, general_data=args.general_data,
        out=args.out, merge=args.merge, progress=not args.quiet, mask_from=args.mask_from,
        mask_tol=args.mask_tol)


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def summary_lines(m: dict) -> list[str]:
    t = m["trainable"]
    f = m["forgetting"]
    return [
        f"task          {m['task']}  method {m['method']}  seed {m['seed']}",
        f"trains        {t['description']}: {t['params']:,} of {t['total_params']:,} "
        f"parameters ({100 * t['share']:.2f}%)",
        f"accuracy      base {_fmt(m['base']['accuracy'])} -> final {_fmt(m['final']['accuracy'])} "
        f"({m['accuracy_gain']:+.3f}) on {m['eval']['n']} held-out items",
        f"forgetting    perplexity {_fmt(f['perplexity_before'], '.3f')} -> "
        f"{_fmt(f['perplexity_after'], '.3f')} on {f['general_data']}",
        f"cost          {m['steps_completed']} steps, median step {_fmt(m['step_seconds_median'])} s, "
        f"optimizer state {m['optimizer_state_bytes'] / 2**20:.1f} MiB, peak memory "
        f"{m['peak_memory_mb']:.0f} MiB, wall {m['wall_seconds']:.1f} s",
        *_subnetwork_lines(m.get("subnetwork")),
        f"status        {m['status']}" + (f": {m['failure']}" if m.get("failure") else ""),
    ]


def _subnetwork_lines(sub: dict | None) -> list[str]:
    if not sub:
        return []
    same = ", ".join(f"{_fmt(v, '.2%')} at {t}" for t, v in sub["identical_share"].items())
    inside = ", ".join(f"{_fmt(v, '.2%')} at {t}" for t, v in sub["identical_share_in_mask"].items())
    ref = sub.get("reference_accuracy")
    return [f"subnetwork    {sub['trainable_share_kept']:.2%} of the trainable entries could move; "
            f"entries identical to {sub['reference']}: {same} (within the mask: {inside})"
            + (f"; its accuracy {_fmt(ref)}" if ref is not None else "")]


def run(args: argparse.Namespace) -> int:
    from layerwise.training.runner import train

    config = config_from_args(args)
    result = train(config, args.model, dtype=args.dtype, device=args.device,
                   trust_remote_code=args.trust_remote_code)
    sys.stdout.write("\n".join(summary_lines(result.metrics)) + "\n")
    if result.metrics["status"] != "completed":
        where = f"; the last good weights are in {config.out}/model" if config.out else ""
        raise LayerwiseError(f"training failed: {result.metrics['failure']}{where}")
    return 0
