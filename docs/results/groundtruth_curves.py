"""Held-out score against step for the ground-truth curve runs (run_groundtruth.sh curves).

    .venv/bin/python docs/results/groundtruth_curves.py out/groundtruth docs/results/groundtruth

Keeps each curve run's metrics.json under DEST/curves/NAME/ (out/ does not survive a machine),
draws DEST/curves.png (one panel per task and method: the full run and block 15, at each learning
rate tried) and prints a markdown table of the points.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path


def main() -> None:
    src, dest = Path(sys.argv[1]), Path(sys.argv[2])
    runs = {}
    for metrics in sorted(src.glob("curve-*/metrics.json")):
        doc = json.loads(metrics.read_text())
        if doc.get("status") != "completed":
            continue
        keep = dest / "curves" / metrics.parent.name
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(metrics, keep / "metrics.json")
    for metrics in sorted((dest / "curves").glob("curve-*/metrics.json")):
        doc = json.loads(metrics.read_text())
        points = [(0, doc["base"]["accuracy"])]
        points += [(h["step"], h["eval_score"]) for h in doc["history"] if "eval_score" in h]
        points.append((doc["steps_completed"], doc["final"]["accuracy"]))
        lr = (doc.get("config") or {}).get("lr")
        runs[metrics.parent.name.removeprefix("curve-")] = (points, doc.get("wall_seconds"), lr)
    if not runs:
        raise SystemExit(f"no completed curve runs under {src} or {dest / 'curves'}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a run is TASK-METHOD-WHAT[-TAG] (WHAT: full or block15; TAG: another learning rate):
    # one panel per TASK-METHOD, one line per WHAT and rate
    parsed = {name: re.fullmatch(r"(.*)-(full|block15)(-.*)?", name) for name in runs}
    panels = sorted({m.group(1) for m in parsed.values() if m})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name, m in sorted(parsed.items()):
            if m and m.group(1) == panel:
                pts, _, lr = runs[name]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".",
                        label=m.group(2) + (f", lr {lr:g}" if lr else ""))
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("held-out accuracy (60 items)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest / "curves.png", dpi=110)
    steps = sorted({s for pts, _, _ in runs.values() for s, _ in pts})
    print("| run | lr | " + " | ".join(str(s) for s in steps) + " | wall s |")
    print("|---|---:|" + "---:|" * (len(steps) + 1))
    for name, (pts, wall, lr) in sorted(runs.items()):
        by = dict(pts)
        cells = [f"{by[s]:.3f}" if s in by else "" for s in steps]
        print(f"| {name} | {lr:g} | " + " | ".join(cells) + f" | {wall:.0f} |")


if __name__ == "__main__":
    main()
