"""tune's choice with and without a step-cost bound, judged by the ground-truth sweeps (issue 30).

    .venv/bin/python docs/results/groundtruth_policy_table.py docs/results/groundtruth > docs/results/groundtruth/policy.md

For each kept sweep (DEST/sweeps/NAME/runs.jsonl) and each kept 4-batch gradient estimate
(DEST/estimates/NAME/seedS-b4.json), `tune`'s own `choose` picks K = 3 blocks from adam-gain
(gradient as the second opinion) under each `--max-step-cost`; the row gives what the sweep
measured for those blocks: the mean single-block C of the chosen blocks (a proxy: the C of the
three trained together was not measured) and the median step seconds of the shallowest one's
single-block runs (its backward depth sets the step). One value per gradient seed, in seed order.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from layerwise.tuning.choose import choose

BOUNDS = (1.0, 0.9, 0.8, 0.7)
K = 3


def measured(rows: list[dict]) -> tuple[dict[int, float], dict[int, float]]:
    """Per block: the mean over sweep seeds of its single-block C, and its median step seconds."""
    base = next(r["metrics"]["mean_score"] for r in rows if r["label"] == "base")
    full = {r["seed"]: r["metrics"]["final"]["mean_score"] for r in rows
            if r["label"] == "full" and r["status"] == "completed"}
    c: dict[int, list[float]] = {}
    step: dict[int, list[float]] = {}
    for r in rows:
        blocks = r["spec"].get("blocks") or []
        if r["status"] != "completed" or len(blocks) != 1 or r["label"] == "full":
            continue
        score = r["metrics"]["final"]["mean_score"]
        c.setdefault(blocks[0], []).append((score - base) / (full[r["seed"]] - base))
        step.setdefault(blocks[0], []).append(r["metrics"]["step_seconds_median"])
    return ({b: statistics.mean(v) for b, v in c.items()},
            {b: statistics.median(v) for b, v in step.items()})


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/groundtruth")
    lines = ["| sweep | --max-step-cost | blocks chosen (per gradient seed) | mean single-block C "
             "| step of the shallowest (s) |", "|---|---:|---|---|---|"]
    for sweep_dir in sorted((dest / "sweeps").glob("*/")):
        est_dir = dest / "estimates" / sweep_dir.name
        files = sorted(est_dir.glob("seed*-b4.json"))
        if not files:
            continue
        rows = [json.loads(line) for line in (sweep_dir / "runs.jsonl").read_text().splitlines()
                if line.strip()]
        c, step = measured(rows)
        best = sorted(sorted(c, key=lambda b: -c[b])[:K])
        for bound in BOUNDS:
            picks = []
            for f in files:
                est = json.loads(f.read_text())["estimates"]
                picks.append(choose({"adam-gain": est["adam-gain"], "gradient": est["gradient"]},
                                    K, "adam-gain", max_step_cost=bound).blocks)
            lines.append(
                f"| {sweep_dir.name} | {bound:g} | "
                + "; ".join(",".join(map(str, p)) for p in picks) + " | "
                + ", ".join(f"{statistics.mean(c[b] for b in p):.3f}" for p in picks) + " | "
                + ", ".join(f"{step[min(p)]:.2f}" for p in picks) + " |")
        lines.append(f"| {sweep_dir.name} | the best {K} by measured C | {','.join(map(str, best))} "
                     f"| {statistics.mean(c[b] for b in best):.3f} | {step[min(best)]:.2f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
