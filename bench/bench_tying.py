"""Memory of layer tying: untied vs static schemes, at two widths of a 12-block llama.

    .venv/bin/python bench/bench_tying.py [--steps 4] [--json FILE]

Each (model, policy) runs in its own process (peak memory is per process: VmHWM) through the
recipe `layerwise train` runs: `lm` on WikiText-2 valid, --full, batch 8 x 128 tokens, AdamW.
Reported: unique and trainable parameters, the optimizer state, peak RSS, and the training state
proper (weights + gradients + AdamW moments = 4 x unique + 4 x trainable + optimizer bytes, fp32),
which is what "training memory" means without the interpreter's and activations' share.
- `w128`: the model of docs/results/tying.md (width 128, bpe:8192: embeddings are 40% of it);
- `w512`: width 512, MLP 2048, byte tokenizer (blocks are 99% of it, as at the paper's width 1600).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from worker_process import run_worker

MODELS = {
    "w128": ("tiny:llama:layers=12,hidden=128,heads=4,ffn=512", "bpe:8192"),
    "w512": ("tiny:llama:layers=12,hidden=512,heads=8,ffn=2048", None),
}
POLICIES = ("none", "static:pairs", "static:cycle:3", "static:all")


def worker(args) -> dict:
    from layerwise.training.callbacks import peak_memory_mb
    from layerwise.training.config import ModelConfig, TrainConfig
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.result import Scores
    from layerwise.training.trainable import optimizer_state_bytes

    model, tok = MODELS[args.size]
    config = TrainConfig(task="lm", method="sft", full=True, steps=args.steps, batch_size=8,
                         n_train=8 * args.steps, lr=1e-3, eval_n=1, general_seqs=1,
                         general_seq_len=16, progress=False, report_to="none", tying=args.policy)
    recipe = TrainRecipe(config, ModelConfig(model=model, tokenizer=tok), base=Scores(loss=0.0))
    recipe.check()
    recipe.setup()
    recipe.build_trainer()
    with recipe.stop:
        recipe.fit()
    from layerwise.models.tying import count_parameters

    c = count_parameters(recipe.model, recipe.optimizer)
    state = optimizer_state_bytes(recipe.optimizer)
    return {"size": args.size, "policy": args.policy, "total": c.total, "unique": c.unique,
            "trainable": c.trainable, "optimizer_state_mib": state / 2**20,
            "training_state_mib": (4 * c.unique + 4 * c.trainable + state) / 2**20,
            "step_s": statistics.median(recipe.recorder.step_seconds[1:]),
            "peak_rss_mib": peak_memory_mb("cpu")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = []
    for size in MODELS:
        for policy in POLICIES:
            r = run_worker(__file__, ["--size", size, "--policy", policy, "--steps", str(args.steps)],
                           None, f"{size} {policy}")
            results.append(r)
            print(f"{size} {policy:15s} unique {r['unique']:>11,} of {r['total']:>11,}  optimizer "
                  f"{r['optimizer_state_mib']:7.1f} MiB  training state {r['training_state_mib']:7.1f} "
                  f"MiB  peak RSS {r['peak_rss_mib']:6.0f} MiB  step {r['step_s']:.2f} s", flush=True)
    for size in MODELS:
        base = next(r for r in results if r["size"] == size and r["policy"] == "none")
        for r in results:
            if r["size"] == size and r["policy"] != "none":
                print(f"{size} {r['policy']:15s} / untied: unique {base['unique'] / r['unique']:.2f}x "
                      f"fewer, training state {base['training_state_mib'] / r['training_state_mib']:.2f}x "
                      f"less, peak RSS {base['peak_rss_mib'] / r['peak_rss_mib']:.2f}x less")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
