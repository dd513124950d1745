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
HELP = ("score a model on a task (greedy accuracy on held-out items, per-item records; lm: "
        "held-out loss and perplexity)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_task_args(p)
    p.add_argument("--n", type=int, default=100, help="number of held-out items (lm: windows)")
    p.add_argument("--split", choices=("eval", "train"), default="eval",
                   help="which split to score (eval: held out from training)")
    p.add_argument("--eval-seed", type=int, default=0, help="which items are drawn")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="answer budget (default: the task's)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write eval.json (summary) and records.jsonl (one line per item)")


def run(args: argparse.Namespace) -> int:
    from layerwise.evaluation.generation import ensure_pad_token
    from layerwise.evaluation.task_eval import evaluate_task, write_records
    from layerwise.models.loading import load_model
    from layerwise.tasks.registry import get_task, parse_task_options

    task = get_task(args.task, **parse_task_options(args.task_option))
    if args.out:
        from layerwise.fileio import check_output_dir

        check_output_dir(args.out)
    # The tokenizer flags belong to the shared model flags; read them once those carry them.
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, seed=args.seed,
                        trust_remote_code=args.trust_remote_code,
                        tokenizer=getattr(args, "tokenizer", None),
                        tokenizer_data=getattr(args, "tokenizer_data", None))
    ensure_pad_token(loaded.tokenizer)
    result = evaluate_task(loaded.model, loaded.tokenizer, task, n=args.n, seed=args.eval_seed,
                           split=args.split, batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens)
    summary = {**result.summary(), "model": loaded.spec, "model_source": loaded.source}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_records(result, out / "records.jsonl")
        atomic_write_text(out / "eval.json", json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(_result_line(task.name, result, loaded.spec))
    return 0


def _result_line(task_name: str, result, model: str) -> str:
    if result.loss is not None:
        return (f"{task_name}: loss {result.loss:.4f} nats/token, perplexity "
                f"{result.perplexity:.2f} on {result.n} {result.split} windows, "
                f"{result.seconds:.1f} s, model {model}\n")
    return (f"{task_name}: accuracy {result.accuracy:.3f} "
            f"({sum(r['correct'] for r in result.records)}/{result.n}), mean score "
            f"{result.mean_score:.3f}, {result.seconds:.1f} s, model {model}\n")
