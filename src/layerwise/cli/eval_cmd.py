"""`layerwise eval`: greedy accuracy of a model on a task's held-out items, with per-item records;
for the `lm` task, the held-out next-token loss and perplexity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layerwise.cli.main import add_model_args
from layerwise.cli.train_cmd import add_task_args
from layerwise.fileio import atomic_write_text

NAME = "eval"
HELP = ("score a model on a task or your --dataset (held-out S, per-item records) and/or on "
        "lm-evaluation-harness tasks (--lm-eval)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_task_args(p)
    p.set_defaults(task=None)  # with --lm-eval alone, no task is scored
    p.add_argument("--n", type=int, default=100, help="number of held-out items (lm: windows)")
    p.add_argument("--split", choices=("eval", "train"), default="eval",
                   help="which split to score (eval: held out from training)")
    p.add_argument("--eval-seed", type=int, default=0, help="which items are drawn")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer budget (default: the task's)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write eval.json (summary) and records.jsonl (one line per item)")
    h = p.add_argument_group("lm-evaluation-harness")
    h.add_argument("--lm-eval", default=None, metavar="TASKS",
                   help="comma-separated lm-eval task or group names, run on the loaded model "
                        "(alone, unless --task or --dataset is also given) (default: none)")
    h.add_argument("--lm-eval-limit", type=int, default=None, metavar="N",
                   help="items per lm-eval task (default: every item)")
    h.add_argument("--lm-eval-include", default=None, metavar="DIR",
                   help="a directory of your own lm-eval task YAMLs (default: none)")


def run(args: argparse.Namespace) -> int:
    from layerwise.evaluation.generation import ensure_pad_token
    from layerwise.evaluation.task_eval import evaluate_task, write_records
    from layerwise.models.loading import load_model
    from layerwise.tasks.registry import get_task, parse_task_options

    from layerwise.training.config import DATASET_FLAGS, fold_dataset

    values = fold_dataset({"task": args.task or "arithmetic",
                           "task_options": parse_task_options(args.task_option),
                           **{f: getattr(args, f) for f in DATASET_FLAGS}})
    score_task = not args.lm_eval or args.task is not None or args.dataset is not None
    task = get_task(values["task"], **values["task_options"]) if score_task else None
    harness = _check_harness(args)
    if args.out:
        from layerwise.fileio import check_output_dir

        check_output_dir(args.out)
    # The tokenizer flags belong to the shared model flags; read them once those carry them.
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, seed=args.seed,
                        trust_remote_code=args.trust_remote_code,
                        tokenizer=getattr(args, "tokenizer", None),
                        tokenizer_data=getattr(args, "tokenizer_data", None))
    ensure_pad_token(loaded.tokenizer)
    summary: dict = {"model": loaded.spec, "model_source": loaded.source}
    result = None
    if task is not None:
        result = evaluate_task(loaded.model, loaded.tokenizer, task, n=args.n, seed=args.eval_seed,
                               split=args.split, batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens)
        summary = {**result.summary(), **summary}
        sys.stdout.write(_result_line(task.name, result, loaded.spec))
    if harness:
        from layerwise.evaluation.harness import run_lm_eval

        lm = run_lm_eval(loaded.model, loaded.tokenizer, harness, limit=args.lm_eval_limit,
                         include=args.lm_eval_include, batch_size=args.batch_size)
        summary["lm_eval"] = lm.to_dict()
        for name, (metric, value, _higher) in lm.headline().items():
            sys.stdout.write(f"lm-eval {name}: {metric} {value:.4f} on {lm.n_samples.get(name)} "
                             f"items, model {loaded.spec}\n")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if result is not None:
            write_records(result, out / "records.jsonl")
        atomic_write_text(out / "eval.json", json.dumps(summary, indent=2) + "\n")
    return 0


def _check_harness(args) -> list[str]:
    """The lm-eval tasks, checked against lm-eval's own index before any weights load."""
    from layerwise.errors import LayerwiseError

    if not args.lm_eval:
        if args.lm_eval_limit is not None or args.lm_eval_include is not None:
            raise LayerwiseError("--lm-eval-limit/--lm-eval-include configure --lm-eval TASKS; add it")
        return []
    from layerwise.evaluation.harness import check_lm_eval, parse_lm_eval_tasks

    if args.lm_eval_limit is not None and args.lm_eval_limit < 1:
        raise LayerwiseError(f"--lm-eval-limit {args.lm_eval_limit}: must be >= 1")
    tasks = parse_lm_eval_tasks(args.lm_eval)
    check_lm_eval(tasks, args.lm_eval_include)
    return tasks


def _result_line(task_name: str, result, model: str) -> str:
    if result.primary:
        extra = "".join(f", {k.replace('_', ' ')} {getattr(result, k):.4f}"
                        for k in ("accuracy", "mean_score", "loss", "preference_accuracy",
                                  "preference_margin")
                        if k != result.primary and getattr(result, k) is not None)
        extra += "".join(f", reward {name} {value:.4f}" for name, value in
                         (result.reward_means or {}).items() if value is not None)
        from layerwise.tasks.dataset import S_NAMES

        return (f"{task_name}: S = {S_NAMES[result.primary]} {result.score:.4f} on "
                f"{result.n} {result.split} rows{extra}, {result.seconds:.1f} s, model {model}\n")
    if result.loss is not None:
        return (f"{task_name}: loss {result.loss:.4f} nats/token, perplexity "
                f"{result.perplexity:.2f} on {result.n} {result.split} windows, "
                f"{result.seconds:.1f} s, model {model}\n")
    return (f"{task_name}: accuracy {result.accuracy:.3f} "
            f"({sum(r['correct'] for r in result.records)}/{result.n}), mean score "
            f"{result.mean_score:.3f}, {result.seconds:.1f} s, model {model}\n")
