"""Memory of block schedules: LISA G=2 vs one fixed block vs LoRA r=16 vs full fine-tuning.

    .venv/bin/python bench/bench_schedules.py [--model M] [--steps 8] [--json FILE]

Each configuration runs in its own process (peak memory is per process: VmHWM) through the recipe
`layerwise train` runs, SFT on arithmetic (batch 8), every step's optimizer state measured by a
callback, so a schedule's largest state (not only its last) is reported:
- `block15`: `--layers 15`;
- `lisa2-keep` / `lisa2-drop`: `--layers all --schedule lisa:2@1 --park keep|drop` (two random
  blocks a step; `keep` holds the state of every block visited so far, `drop` only the active ones,
  LMFlow's LISA behaviour — but embeddings and head stay frozen, unlike LMFlow);
- `lora16`: LoRA r=16 on every linear layer of every block; `full`: everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from worker_process import run_worker

CONFIGS = {
    "block15": {"layers": "15"},
    "lisa2-keep": {"layers": "all", "schedule": "lisa:2@1", "park": "keep"},
    "lisa2-drop": {"layers": "all", "schedule": "lisa:2@1", "park": "drop"},
    "lora16": {"lora": True, "rank": 16, "lora_targets": "all", "lora_budget": "per-layer"},
    "full": {"full": True},
}


def worker(args) -> dict:
    from transformers import TrainerCallback

    from layerwise.training.callbacks import peak_memory_mb
    from layerwise.training.config import ModelConfig, TrainConfig
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.result import Scores
    from layerwise.training.trainable import optimizer_state_bytes

    config = TrainConfig(method="sft", steps=args.steps, batch_size=8, n_train=8 * args.steps,
                         lr=1e-5, eval_n=1, general_seqs=1, general_seq_len=16, progress=False,
                         report_to="none", **CONFIGS[args.config])
    recipe = TrainRecipe(config, ModelConfig(model=args.model), base=Scores(accuracy=0.0))
    states: list[int] = []

    class StateSize(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            states.append(optimizer_state_bytes(recipe.optimizer))

    recipe.extra_callbacks.append(StateSize())
    recipe.check()
    recipe.setup()
    recipe.build_trainer()
    with recipe.stop:
        recipe.fit()
    t = recipe.trainable
    return {"config": args.config, "trainable_params": t.trainable_params,
            "optimizer_state_max_mib": max(states) / 2**20,
            "optimizer_state_last_mib": states[-1] / 2**20,
            "step_s": statistics.median(recipe.recorder.step_seconds[1:]),
            "peak_rss_mib": peak_memory_mb("cpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = []
    for name in CONFIGS:
        res = run_worker(__file__, ["--config", name, "--steps", str(args.steps)], args.model, name)
        results.append(res)
        print(f"{name:11s} trainable {res['trainable_params']:>12,}  optimizer state max "
              f"{res['optimizer_state_max_mib']:7.1f} MiB (last {res['optimizer_state_last_mib']:.1f})"
              f"  peak RSS {res['peak_rss_mib']:6.0f} MiB  step {res['step_s']:.2f} s", flush=True)
    by = {r["config"]: r for r in results}
    lora = by["lora16"]
    for name in ("lisa2-keep", "lisa2-drop"):
        r = by[name]
        print(f"{name} / lora16: optimizer state {r['optimizer_state_max_mib'] / lora['optimizer_state_max_mib']:.2f}x, "
              f"peak RSS {r['peak_rss_mib'] / lora['peak_rss_mib']:.2f}x (goal <= 1; LMFlow's LISA 1.2-1.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
