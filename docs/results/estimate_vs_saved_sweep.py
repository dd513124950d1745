"""The gradient estimators (gradient, adam-gain, adam-val, adam-snr, probe) against a sweep's
saved C(k), when the sweep's store is gone but its estimators.json is kept
(docs/results/sweeps-smollm2/*/).

    .venv/bin/python docs/results/estimate_vs_saved_sweep.py docs/results/sweeps-smollm2/sft \
        [--prompts 8] [--seeds 0,1,2] [--batches 1] [--probe-steps 0]

Reads the sweep's settings and measured C(k) from DIR/estimators.json and DIR/contribution.json,
computes the estimators on the sweep's model, task and method for each seed (the seed draws the
prompts), and prints Spearman and top-1 regret per estimator and seed, with the seconds each took.
The estimators' own code is `layerwise.sweeps.estimators.gradient_norms`, as `layerwise estimate`
runs it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from layerwise.models import load_model
from layerwise.sweeps.estimators import agreement, gradient_norms, probe_gains
from layerwise.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", type=int, default=1, help="gradient batches (adam-snr: >= 2)")
    parser.add_argument("--probe-steps", type=int, default=0, help="probe steps (0: no probe)")
    args = parser.parse_args()
    d = Path(args.sweep_dir)
    saved = json.loads((d / "estimators.json").read_text())
    spec = json.loads((d / "contribution.json").read_text())["sweep"]
    measured = {int(k): v for k, v in saved["measured"].items()}
    train = spec.get("train") or {}
    loaded = load_model(spec.get("model"))
    task = get_task(spec["task"], **(spec.get("task_options") or {}))
    print(f"{d}: {spec['method']} on {spec['task']}, {len(measured)} blocks measured, "
          f"{args.prompts} prompts")
    for seed in [int(s) for s in args.seeds.split(",")]:
        start = time.perf_counter()
        est = gradient_norms(loaded.model, loaded.tokenizer, task, spec["method"],
                             n_prompts=args.prompts,
                             num_generations=int(train.get("num_generations") or 8),
                             max_new_tokens=train.get("max_completion_length"), seed=seed,
                             validate=True, batches=args.batches)
        seconds = {"gradient": time.perf_counter() - start}
        if args.probe_steps:
            est["probe"] = probe_gains(
                loaded.model, loaded.tokenizer, task, spec["method"], lr=float(train["lr"]),
                steps=args.probe_steps, n_prompts=args.prompts,
                num_generations=int(train.get("num_generations") or 8),
                max_new_tokens=train.get("max_completion_length"), seed=seed,
                weight_decay=float(train.get("weight_decay") or 0.0), seconds=seconds)
        for row in agreement(est, measured, {}, 0.0):
            cost = seconds["probe" if row["estimator"] == "probe" else "gradient"]
            print(f"  seed {seed} {row['estimator']:<10} spearman {row['spearman']:6.3f}  "
                  f"top-1 regret {row['top1_regret']:.3f}  ({cost:.0f} s)")


if __name__ == "__main__":
    main()
