"""Tables and plots of the from-scratch tying experiment (run_tying.sh -> docs/results/tying.md).

    .venv/bin/python docs/results/tying_table.py out/tying [--plot docs/results/tying/maps.png]

Reads OUT/seed*/<arm>/metrics.json; prints Markdown (mean ± sd over seeds) to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tablekit import completed_runs, mean_sd as _mean_sd

ARMS = ("untied", "all", "pairs", "mirror", "random", "dqn", "dqn-faithful", "dqn-gain",
        "retrain-dqn", "retrain-gain")


def _counts(m: dict, key: str) -> dict:
    t = m.get("tying")
    if t is None:  # untied
        return {"unique": m["trainable"]["total_params"], "trainable": m["trainable"]["params"],
                "total": m["trainable"]["total_params"]}
    return t[key]


def _mean_unique(m: dict) -> float:
    """Unique parameters averaged over the steps (a dynamic map changes during the run)."""
    t = m.get("tying")
    if not t or not t["history"]:
        return _counts(m, "counts_end")["unique"]
    hist, steps = t["history"], m["steps_completed"]
    total, last_step, current = 0.0, 0, t["counts_start"]["unique"]
    for h in hist:
        total += current * (h["decided_at"] - last_step)
        last_step, current = h["decided_at"], h["unique_params"]
    total += current * (steps - last_step)
    return total / max(1, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--smollm2", type=Path, help="out/tying-smollm2: the pretrained-model table")
    args = ap.parse_args()
    if args.smollm2:
        _smollm2(args.smollm2)
        return
    runs = completed_runs(args.out, ARMS)
    seeds = sorted({s for arm in runs.values() for s in arm})
    untied = next(iter(runs.get("untied", {}).values()), None)
    n_untied = untied["trainable"]["total_params"] if untied else None
    print(f"Seeds: {', '.join(seeds)}. Held-out: mean next-token cross-entropy (nats/token) on 256 "
          "windows of 128 tokens of WikiText-2 *test* and its perplexity; training on WikiText-2 "
          "*valid*. Unique parameters at the end (and averaged over the steps for the dynamic "
          f"policies); untied: {n_untied:,}.\n" if n_untied else "")
    print("| arm | held-out loss | perplexity | unique params (end) | unique params (mean over steps) "
          "| share of untied | optimizer state (MiB) | peak RSS (MiB) | median step (s) | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm in ARMS:
        ms = list(runs.get(arm, {}).values())
        if not ms:
            continue
        uniq = [_counts(m, "counts_end")["unique"] for m in ms]
        print(f"| {arm} | {_mean_sd([m['final']['loss'] for m in ms])} | "
              f"{_mean_sd([m['final']['perplexity'] for m in ms], '{:.1f}')} | "
              f"{_mean_sd(uniq, '{:,.0f}')} | {_mean_sd([_mean_unique(m) for m in ms], '{:,.0f}')} | "
              f"{_mean_sd([u / n_untied for u in uniq], '{:.2f}') if n_untied else '–'} | "
              f"{_mean_sd([m['optimizer_state_bytes'] / 2**20 for m in ms], '{:.1f}')} | "
              f"{_mean_sd([m['peak_memory_mb'] for m in ms], '{:.0f}')} | "
              f"{_mean_sd([m['step_seconds_median'] for m in ms], '{:.3f}')} | "
              f"{_mean_sd([m['wall_seconds'] for m in ms], '{:.0f}')} |")
    base = runs.get("untied", {})
    print("\nPer seed, the arm's held-out loss minus the untied run's (same seed, same init), "
          "mean ± sd (negative: better than untied):\n")
    print("| arm | excess loss (nats) | seeds better than untied |")
    print("|---|---:|---:|")
    for arm in ARMS[1:]:
        common = [s for s in runs.get(arm, {}) if s in base]
        if not common:
            continue
        d = [runs[arm][s]["final"]["loss"] - base[s]["final"]["loss"] for s in common]
        print(f"| {arm} | {_mean_sd(d, '{:+.3f}')} | {sum(x < 0 for x in d)}/{len(d)} |")
    print("\nFinal maps of the learned and random policies (tied blocks as i<-source):\n")
    print("| arm | seed | final map | blocks with own weights | decisions | own-weight choices "
          "in the last quarter |")
    print("|---|---|---|---:|---:|---:|")
    for arm in ("random", "dqn", "dqn-faithful", "dqn-gain"):
        for s, m in sorted(runs.get(arm, {}).items()):
            t = m["tying"]
            hist = t["history"]
            last = hist[len(hist) * 3 // 4:]
            own = sum(h["own"] for h in last) / len(last) if last else float("nan")
            print(f"| {arm} | {s} | {t['final_description']} | {len(set(t['final']))} | "
                  f"{len(hist)} | {own:.2f} |")
    if args.plot:
        _plot(runs, args.plot)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _smollm2(out: Path) -> None:
    """Tie K blocks vs remove K blocks (SLEB) on SmolLM2, the same healing (run_tying_smollm2.sh)."""
    base = _json(out / "base-arith" / "eval.json")
    diag = _json(out / "diag" / "diagnostics.json")
    pruned_arith = _json(out / "pruned-arith" / "eval.json")
    print("| arm | blocks holding weights | unique params | held-out loss before healing | "
          "held-out loss after | perplexity after | arithmetic accuracy after | forgetting "
          "(general ppl change) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    arms = (("heal-only", "nothing removed or tied"), ("tie-weight", "tie 4: neighbour-mean"),
            ("tie-repr", "tie 4: block influence"), ("remove", "remove 4: SLEB"))
    for arm, what in arms:
        m = _json(out / arm / "metrics.json")
        if not m or m.get("status") != "completed":
            continue
        ar = _json(out / arm / "arith" / "eval.json")
        t = m.get("tying") or {}
        before = (t.get("scores_tied_untrained") or {}).get("loss") if t else m["base"]["loss"]
        unique = t["counts_end"]["unique"] if t else m["trainable"]["total_params"]
        held = len(set(t["final"])) if t else (30 if arm == "heal-only" else 26)
        fg = m["forgetting"]["relative_change"]
        print(f"| {arm} ({what}) | {held} | {unique:,} | {before:.3f} | {m['final']['loss']:.3f} | "
              f"{m['final']['perplexity']:.2f} | {ar['accuracy']:.3f} | "
              f"{fg:+.1%} |" if ar else f"| {arm} | ... |")
        if t:
            print(f"|   map | {t['final_description']} | | | | | | |")
    if base:
        print(f"\nBase SmolLM2 arithmetic accuracy {base['accuracy']:.3f}"
              + (f"; pruned (SLEB, before healing) {pruned_arith['accuracy']:.3f}" if pruned_arith else ""))
    if diag:
        order = diag["metrics"]["prune"]["extra"]["order"]
        curve = diag["metrics"]["prune"]["extra"]["perplexity_curve"]
        print(f"SLEB removal order {order}, perplexity on the training text {curve[0]:.2f} -> "
              f"{curve[-1]:.2f}")


def _plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    points: dict[tuple[float, float], list[str]] = {}  # arms on the same point share one label
    for arm in ARMS:
        ms = list(runs.get(arm, {}).values())
        if ms:
            x = round(statistics.mean(_mean_unique(m) for m in ms) / 1e6, 2)
            y = round(statistics.mean(m["final"]["loss"] for m in ms), 2)
            points.setdefault((x, y), []).append(arm)
    for (x, y), arms in points.items():
        ax.scatter([x], [y])
        ax.annotate(", ".join(arms), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("unique parameters, mean over the run (M)")
    ax.set_ylabel("held-out loss (nats/token), mean of seeds")
    ax.set_title("Tying from scratch: held-out loss vs parameters (12 blocks, WikiText-2)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
