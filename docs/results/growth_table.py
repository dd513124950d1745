"""Tables and curves of the growth experiment (docs/results/run_growth.sh -> docs/results/growth.md).

    .venv/bin/python docs/results/growth_table.py out/growth --steps 400 [--plot docs/results/growth/curves.png]

Reads OUT/seed*/{probe,uniform,growth,growth50,growth-last,growth50-last}/metrics.json and
OUT/seed*/diag/diagnostics.json; prints Markdown (mean ± sd over seeds) to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tablekit import completed_runs, mean_sd as _mean_sd

ARMS = ("uniform", "growth", "growth50", "growth-last", "growth50-last", "growth-random")


def _active_mean(m: dict) -> float:
    """Blocks trained per step, averaged over the run (12 for uniform)."""
    sched = m.get("schedule")
    if not sched:
        return float(len(m["trainable"]["blocks"]))
    total = sum((p["to"] - p["from"] + 1) * len(p["blocks"]) for p in sched["phases"])
    return total / sum(p["to"] - p["from"] + 1 for p in sched["phases"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    runs = completed_runs(args.out, ("probe", *ARMS))
    seeds = sorted({s for arm in runs.values() for s in arm})
    print(f"Seeds: {', '.join(seeds)}. Held-out loss: mean next-token cross-entropy (nats/token) on "
          "256 windows of 128 tokens of WikiText-2 *test*; training on WikiText-2 *valid*.\n")
    print("| arm | steps | blocks trained per step (mean) | held-out loss | perplexity | "
          "train time (s) | median step (s) | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm in ("probe", *ARMS):
        ms = list(runs.get(arm, {}).values())
        if not ms:
            continue
        print(f"| {arm} | {ms[0]['steps_completed']} | {_mean_sd([_active_mean(m) for m in ms], '{:.2f}')} | "
              f"{_mean_sd([m['final']['loss'] for m in ms])} | "
              f"{_mean_sd([m['final']['perplexity'] for m in ms], '{:.1f}')} | "
              f"{_mean_sd([m['train_seconds'] for m in ms], '{:.1f}')} | "
              f"{_mean_sd([m['step_seconds_median'] for m in ms], '{:.3f}')} | "
              f"{_mean_sd([m['wall_seconds'] for m in ms], '{:.1f}')} |")
    uni = runs.get("uniform", {})
    print("\nRatios against uniform at the full step count, per seed, then mean ± sd "
          "(loss ratio = arm's held-out loss / uniform's; the paper's 4.7x is uniform / growth = 0.599 / 0.127; "
          "times = the arm's over uniform's; the median step is robust to a short disturbance, the "
          "train time is not):\n")
    print("| arm | uniform loss / arm loss | arm excess loss over uniform (nats) | "
          "arm median step / uniform's | arm train time / uniform's |")
    print("|---|---:|---:|---:|---:|")
    for arm in ARMS[1:]:
        common = [s for s in runs.get(arm, {}) if s in uni]
        if not common:
            continue
        a = runs[arm]
        print(f"| {arm} | {_mean_sd([uni[s]['final']['loss'] / a[s]['final']['loss'] for s in common])} | "
              f"{_mean_sd([a[s]['final']['loss'] - uni[s]['final']['loss'] for s in common])} | "
              f"{_mean_sd([a[s]['step_seconds_median'] / uni[s]['step_seconds_median'] for s in common])} | "
              f"{_mean_sd([a[s]['train_seconds'] / uni[s]['train_seconds'] for s in common])} |")
    print("\nImportance (diagnose `removal_delta_pct` of the probe model, % perplexity change when the "
          "block is skipped, on 64 windows of the training text) and the growth phases, per seed:\n")
    for seed in seeds:
        diag = args.out / seed / "diag" / "diagnostics.json"
        if not diag.is_file():
            continue
        d = json.loads(diag.read_text())
        deltas = ", ".join(f"{layer['removal_delta_pct']:+.2f}" for layer in d["layers"])
        print(f"- {seed}: probe perplexity {d['baseline_perplexity']:.1f}; removal delta by block: {deltas}")
        for arm in ("growth", "growth-last", "growth-random"):
            m = runs.get(arm, {}).get(seed)
            if m:
                phases = "; ".join(f"{p['from']}-{p['to']}: {','.join(map(str, p['blocks']))}"
                                   for p in m["schedule"]["phases"])
                print(f"  - {arm}: {phases}")
    if args.plot:
        _plot(runs, args.plot)


def _plot(runs: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = dict(zip(ARMS, ("black", "tab:blue", "tab:cyan", "tab:red", "tab:orange", "tab:green")))
    for arm in ARMS:
        for i, m in enumerate(runs.get(arm, {}).values()):
            steps = [h["step"] for h in m["history"] if "loss" in h]
            raw = [h["loss"] for h in m["history"] if "loss" in h]
            loss = [sum(raw[max(0, j - 19):j + 1]) / len(raw[max(0, j - 19):j + 1])
                    for j in range(len(raw))]  # mean of the last 20 steps
            ax.plot(steps, loss, color=colors[arm], alpha=0.6, lw=0.8, label=arm if i == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss, mean of the last 20 steps (nats/token)")
    ax.set_ylim(top=7.5)
    ax.set_title("Growth vs uniform from scratch, 12-block 10.0M llama, WikiText-2 (3 seeds)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
