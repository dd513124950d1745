"""The recipe's cost: its per-step overhead against the raw TRL trainer, and the time to resume.

    .venv/bin/python bench/bench_recipe.py [--model M] [--block 15] [--steps 6] [--rounds 2]
                                           [--json FILE]

1. Overhead, in one process on one loaded model: the same frozen model (only block B trains),
   the same data, the same AdamW over the trainable parameters and the same TrainingArguments go
   (a) straight into TRL's `SFTTrainer` / `GRPOTrainer`, built here by hand with nothing but a
   step timer, and (b) through `TrainRecipe` (check -> setup -> build trainer -> fit, with its
   NaN guard, interruption handler, checkpoint seal and recorder). Raw and recipe runs alternate
   (`--rounds` each) on fresh copies of the model; the figure is the median step time over the
   steps after the first of every run. SFT: the `lm` task, 8 x 256 tokens of WikiText-2 test per
   step; GRPO: arithmetic, 8 completions of exactly 16 tokens.
2. Resume: an arithmetic SFT run on block B is interrupted (a real SIGINT) after its checkpoint,
   then `python -m layerwise train --resume OUT` runs in a fresh process; printed: the wall time
   from launching it to the end of its first new step, and that step's own duration.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2_test.txt"


def _config(method: str, block: int, steps: int, **extra):
    from layerwise.training.config import TrainConfig

    if method == "sft":
        task = dict(task="lm", task_options={"seq_len": 256, "eval": str(WIKITEXT),
                                             "train": str(WIKITEXT)}, max_length=256)
    else:
        task = dict(task="arithmetic", num_generations=8, max_completion_length=16)
    return TrainConfig(method=method, layers=str(block), steps=steps, batch_size=8,
                       n_train=8 * steps, lr=1e-5, eval_n=1, general_seqs=1, general_seq_len=16,
                       progress=False, report_to="none", **task, **extra)


def _fixed_length(trainer, tokens: int = 16) -> None:
    trainer.generation_config.min_new_tokens = tokens
    if getattr(trainer, "generation_kwargs", None) is not None:
        trainer.generation_kwargs["min_new_tokens"] = tokens


def raw_trl(pristine, config) -> list[float]:
    """TRL's trainer as a user would build it by hand: no layerwise callback but a step timer."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from layerwise.models.arch import discover_layers
    from layerwise.selection.freeze import apply_selection
    from layerwise.selection.resolve import resolve_selection
    from layerwise.tasks.base import reward_function
    from layerwise.tasks.registry import get_task
    from layerwise.training.callbacks import RunRecorder
    from layerwise.training.methods import common_args
    from layerwise.training.trainable import build_optimizer

    model, tok = copy.deepcopy(pristine.model), pristine.tokenizer
    apply_selection(model, resolve_selection(discover_layers(model), config.layers))
    optimizer = build_optimizer(model, config)
    timer = RunRecorder()
    scratch = tempfile.mkdtemp(prefix="bench-raw-")
    args = common_args(config, scratch, [], next(model.parameters()).device, torch_dtype(model))
    task = get_task(config.task, **config.task_kwargs())
    if config.method == "sft":
        trainer = SFTTrainer(model=model, args=SFTConfig(**args, max_length=256, packing=False,
                                                         completion_only_loss=False,
                                                         dataset_kwargs={"skip_prepare_dataset": True}),
                             train_dataset=task.train_dataset(tok, config.n_train, config.seed),
                             processing_class=tok, callbacks=[timer], optimizers=(optimizer, None))
    else:
        rows = [it.to_row() for it in task.items("train", config.n_train, config.seed)]
        grpo = GRPOConfig(**args, num_generations=8, max_completion_length=16, temperature=1.0,
                          beta=0.0, loss_type="grpo")
        trainer = GRPOTrainer(model=model, reward_funcs=reward_function(task), args=grpo,
                              train_dataset=Dataset.from_list(rows), processing_class=tok,
                              callbacks=[timer], optimizers=(optimizer, None))
        _fixed_length(trainer)
    for cb in list(trainer.callback_handler.callbacks):
        if type(cb).__name__ in ("PrinterCallback", "ProgressCallback"):
            trainer.remove_callback(cb)
    trainer.train()
    return timer.step_seconds[1:]


def through_recipe(pristine, config) -> list[float]:
    from layerwise.training.config import ModelConfig
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.result import Scores

    loaded = dataclasses.replace(pristine, model=copy.deepcopy(pristine.model))
    recipe = TrainRecipe(config, ModelConfig(model=pristine.spec), loaded=loaded,
                         base=Scores(accuracy=0.0))
    recipe.check()
    recipe.setup()
    recipe.build_trainer()
    if config.method != "sft":
        _fixed_length(recipe.trainer)
    with recipe.stop:
        recipe.fit()
    return recipe.recorder.step_seconds[1:]


def torch_dtype(model):
    return next(model.parameters()).dtype


def overhead(args) -> list[dict]:
    from layerwise.models.loading import load_model

    pristine = load_model(args.model)
    rows = []
    for method in args.methods.split(","):
        config = _config(method, args.block, args.steps)
        times: dict[str, list[float]] = {"raw": [], "recipe": []}
        ratios = []
        runs = (("raw", raw_trl), ("recipe", through_recipe))
        for r in range(args.rounds):
            medians = {}
            # ABBA: the order alternates, so a drift of the machine's speed cancels out.
            for kind, fn in (runs if r % 2 == 0 else runs[::-1]):
                gc.collect()
                steps = fn(pristine, config)
                times[kind] += steps
                medians[kind] = statistics.median(steps)
                print(f"{method} round {r + 1} {kind:6s}: median step {medians[kind]:.3f} s "
                      f"({len(steps)} steps)", flush=True)
            ratios.append(medians["recipe"] / medians["raw"])
        raw, rec = statistics.median(times["raw"]), statistics.median(times["recipe"])
        ratio = statistics.median(ratios)
        rows.append({"method": method, "raw_step_s": raw, "recipe_step_s": rec,
                     "round_ratios": ratios, "overhead": ratio - 1, "steps_each": len(times["raw"])})
        print(f"{method}: raw TRL {raw:.3f} s/step, recipe {rec:.3f} s/step (pooled medians); "
              f"per-round recipe/raw {', '.join(f'{x:.3f}' for x in ratios)}; overhead (median of "
              f"the rounds) {100 * (ratio - 1):+.2f}% (target <= 3%)", flush=True)
    return rows


def resume_time(args) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-resume-")) / "run"
    base = [sys.executable, "-m", "layerwise", "train", "--layers", str(args.block), "--steps",
            "1000", "--batch-size", "8", "--eval-n", "1", "--general-seqs", "1",
            "--general-seq-len", "16", "--save-every", "1", "--report-to", "none", "-q"]
    if args.model:
        base += ["--model", args.model]
    proc = subprocess.Popen([*base, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while time.time() < deadline and not list((out / "checkpoints").glob("checkpoint-*/COMPLETE")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    print("first run:", err.strip().splitlines()[-1:], flush=True)
    start = time.perf_counter()
    resumed = subprocess.Popen([sys.executable, "-m", "layerwise", "train", "--resume", str(out), "-q"],
                               stderr=subprocess.PIPE, text=True)
    state = out / "checkpoints"
    first_step = None
    while time.time() < deadline and resumed.poll() is None:
        steps = sorted(int(p.parent.name.split("-")[1]) for p in state.glob("checkpoint-*/COMPLETE"))
        metrics = json.loads((out / "metrics.json").read_text())
        if steps and metrics.get("resumed_from_step") is not None and steps[-1] > metrics["resumed_from_step"]:
            first_step = time.perf_counter() - start
            break
        time.sleep(0.05)
    resumed.send_signal(signal.SIGINT)
    _, err = resumed.communicate(timeout=600)
    if first_step is None:
        raise SystemExit(f"the resumed run made no step: {err.strip()[-2000:]}")
    final = json.loads((out / "metrics.json").read_text())
    step_s = final.get("step_seconds_median")
    row = {"resume_to_first_new_step_s": first_step, "first_step_in_process_s":
           final.get("first_step_seconds"), "resumed_from_step": final.get("resumed_from_step"),
           "note": "wall time from launching `layerwise train --resume` until the checkpoint of its "
                   "first new step is sealed (includes that step and its checkpoint)",
           "median_step_s": step_s}
    print(f"resume: {first_step:.1f} s from launching --resume to the first new step's sealed "
          f"checkpoint (resumed at step {row['resumed_from_step']}; in-process to the end of that "
          f"step {row['first_step_in_process_s']:.1f} s)", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--block", type=int, default=15)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", default="sft,grpo")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {} if args.skip_overhead else {"overhead": overhead(args)}
    if not args.skip_resume:
        result["resume"] = resume_time(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
