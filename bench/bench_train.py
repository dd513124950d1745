"""Step time, peak memory and optimizer state: one middle block vs full fine-tuning vs LoRA.

    .venv/bin/python bench/bench_train.py [--model M] [--block B] [--steps 6] [--json FILE]

Each configuration runs in its own process (so the peak memory of one does not hide another) with
the same batch and sequence length, through the recipe `layerwise train` runs
(training/recipe.py: check -> setup -> build trainer -> fit; the base model is not scored, since
only the training steps are measured):
- SFT: the `lm` task, batch 8 x 256 tokens of WikiText-2 test (../shared/data), loss on all tokens.
- GRPO: arithmetic, 8 completions of exactly 16 tokens per step (min = max new tokens); the step
  time is split into generation (the same for every configuration) and the update (forward +
  backward + optimizer step), which is what the trainable set changes.
Configurations: `--layers B` (one middle block), `--full`, `--lora --rank 16` on every block's
attention and MLP projections (the usual "LoRA on all blocks" baseline).
The median over the steps after the first is printed, with the ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from worker_process import run_worker

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2_test.txt"
CONFIGS = {"block": None, "full": {"full": True},
           "lora16": {"lora": True, "rank": 16, "lora_targets": "all", "lora_budget": "per-layer"}}


def recipe_for(args, method: str, what: dict, steps: int):
    """The recipe of `layerwise train` for this configuration, with the base scores skipped."""
    from layerwise.training.config import ModelConfig, TrainConfig
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.result import Scores

    if method == "sft":
        task = dict(task="lm", task_options={"seq_len": 256, "eval": str(WIKITEXT),
                                             "train": str(WIKITEXT)}, max_length=256)
    else:
        task = dict(task="arithmetic", num_generations=8, max_completion_length=16)
    config = TrainConfig(method=method, steps=steps, batch_size=8, n_train=8 * steps, lr=1e-5,
                         eval_n=1, general_seqs=1, general_seq_len=16, progress=False,
                         report_to="none", **task, **what)
    return TrainRecipe(config, ModelConfig(model=args.model), base=Scores(accuracy=0.0))


def fixed_length(trainer, tokens: int = 16) -> None:
    """GRPO completions of exactly `tokens` tokens, so every configuration samples the same."""
    trainer.generation_config.min_new_tokens = tokens
    if getattr(trainer, "generation_kwargs", None) is not None:
        trainer.generation_kwargs["min_new_tokens"] = tokens


def worker(args) -> dict:
    from layerwise.training.callbacks import peak_memory_mb
    from layerwise.training.trainable import optimizer_state_bytes

    what = CONFIGS[args.config] or {"layers": str(args.block)}
    recipe = recipe_for(args, args.method, what, args.steps)
    recipe.check()
    recipe.setup()
    recipe.build_trainer()
    gen_seconds: list[float] = []
    if args.method != "sft":
        fixed_length(recipe.trainer)
        inner = recipe.model.get_base_model() if hasattr(recipe.model, "get_base_model") else recipe.model
        generate = inner.generate

        def timed_generate(*a, **k):
            t0 = time.perf_counter()
            try:
                return generate(*a, **k)
            finally:
                gen_seconds.append(time.perf_counter() - t0)

        inner.generate = timed_generate
    recipe.fit()
    steps = recipe.recorder.step_seconds[1:]
    t = recipe.trainable
    out = {"config": args.config, "method": args.method, "trainable_params": t.trainable_params,
           "total_params": t.total_params, "step_s": statistics.median(steps),
           "optimizer_state_mb": optimizer_state_bytes(recipe.optimizer) / 2**20,
           "peak_rss_mb": peak_memory_mb("cpu"), "blocks": len(t.blocks),
           "description": t.description}
    if gen_seconds:
        gens = gen_seconds[1:len(recipe.recorder.step_seconds)]
        out["generate_s"] = statistics.median(gens)
        out["update_s"] = statistics.median(s - g for s, g in zip(steps, gens))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--block", type=int, default=15, help="the middle block (SmolLM2: 15 of 30)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--methods", default="sft,grpo")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = []
    for method in args.methods.split(","):
        for name in CONFIGS:
            res = run_worker(__file__, ["--config", name, "--method", method, "--block",
                                        str(args.block), "--steps", str(args.steps)],
                             args.model, f"{name}/{method}")
            results.append(res)
            extra = (f"  generate {res['generate_s']:.2f} s  update {res['update_s']:.2f} s"
                     if "generate_s" in res else "")
            print(f"{method:5s} {name:7s} trainable {res['trainable_params']:>12,}  step "
                  f"{res['step_s']:.2f} s{extra}  optimizer state {res['optimizer_state_mb']:.1f} MiB"
                  f"  peak RSS {res['peak_rss_mb']:.0f} MiB", flush=True)
        by = {r["config"]: r for r in results if r["method"] == method}
        b, f, lo = by["block"], by["full"], by["lora16"]
        key = "update_s" if method == "grpo" else "step_s"
        print(f"{method:5s} ratios: block/full step {b['step_s'] / f['step_s']:.2f} (target <= 0.6), "
              f"block/LoRA step {b['step_s'] / lo['step_s']:.2f} (target <= 0.8)"
              + (f"; update only: block/full {b[key] / f[key]:.2f}, block/LoRA {b[key] / lo[key]:.2f}"
                 if method == "grpo" else "")
              + f"; optimizer state block/full {b['optimizer_state_mb'] / f['optimizer_state_mb']:.4f}"
              f" (target <= 1/L = {1 / 30:.4f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
