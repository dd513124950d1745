"""Tables of the block-schedule comparison (docs/results/run_schedules.sh -> docs/results/schedules.md).

    .venv/bin/python docs/results/schedules_table.py docs/results/schedules/runs > docs/results/schedules/table.md

Reads OUT/{sft,grpo}/seed*/ARM/metrics.json (docs/results/schedules/runs, kept by
run_schedules.sh); prints Markdown (mean ± sd over seeds, then every seed) to stdout.
Step time: the fastest seed's median step, since other work (tests, CI) shared the 2 cores during
some runs and only ever makes a step slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tablekit import mean_sd as _ms

ARMS = {
    "block-mid": "block mid:1 (14)",
    "mid4": "mid:4 (13-16)",
    "lisa2": "LISA G=2 @5",
    "sample2": "sampled G=2 @5",
    "growth": "growth (4 phases)",
    "growth-fulllr": "growth, full's lr",
    "lora16": "LoRA r=16, all linear",
    "full": "full",
}


def _blocks_per_step(m: dict) -> float | None:
    sched = m.get("schedule")
    if m["trainable"].get("lora"):
        return None
    if not sched:
        return float(len(m["trainable"]["blocks"]))
    phases = sched["phases"]
    return (sum((p["to"] - p["from"] + 1) * len(p["blocks"]) for p in phases)
            / sum(p["to"] - p["from"] + 1 for p in phases))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    for method in ("sft", "grpo"):
        root = args.out / method
        runs: dict[str, list[dict]] = {}
        for path in sorted(root.glob("seed*/*/metrics.json")):
            m = json.loads(path.read_text())
            if m.get("status") == "completed":
                runs.setdefault(path.parent.name, []).append(m)
        if not runs:
            continue
        base = [m["base"]["accuracy"] for ms in runs.values() for m in ms]
        print(f"\n### {method.upper()}\n")
        print(f"Base accuracy {statistics.mean(base):.3f} (60 problems, the same for every run).\n")
        print("| arm | seeds | accuracy | gain over base | general perplexity change | "
              "blocks trained per step | trainable pool | optimizer state at the end (MiB) | "
              "median step (s), fastest seed |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for arm, label in ARMS.items():
            ms = runs.get(arm, [])
            if not ms:
                continue
            bps = [_blocks_per_step(m) for m in ms]
            print(f"| {label} | {len(ms)} | {_ms([m['final']['accuracy'] for m in ms])} | "
                  f"{_ms([m['final']['accuracy'] - m['base']['accuracy'] for m in ms], '{:+.3f}')} | "
                  f"{_ms([100 * m['forgetting']['relative_change'] for m in ms], '{:+.1f}%')} | "
                  f"{_ms(bps, '{:.1f}') if bps[0] is not None else 'LoRA'} | "
                  f"{ms[0]['trainable']['params']:,} | "
                  f"{_ms([m['optimizer_state_bytes'] / 2**20 for m in ms], '{:.1f}')} | "
                  f"{min(m['step_seconds_median'] for m in ms):.2f} |")
        seeds = sorted({m["seed"] for ms in runs.values() for m in ms})
        print(f"\nPer seed, accuracy ({method.upper()}):\n")
        print("| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |")
        print("|---|" + "---:|" * len(seeds))
        for arm, label in ARMS.items():
            by_seed = {m["seed"]: m["final"]["accuracy"] for m in runs.get(arm, [])}
            if by_seed:
                print(f"| {label} | " + " | ".join(
                    f"{by_seed[s]:.3f}" if s in by_seed else "–" for s in seeds) + " |")


if __name__ == "__main__":
    main()
