"""What a training run leaves in `--out`, written so that a killed run never looks complete.

- `model/`: the trained model as an HF checkpoint (for LoRA: the adapter), `merged/` on request;
  each is written into a hidden temporary directory and renamed into place only when complete.
- `metrics.json`: written with status "running" when the run starts and rewritten at the end
  ("completed" or "failed" with the reason), so a killed run is recognisable as such.
- `curves.png`: loss and reward per step; `eval_base.jsonl` / `eval_final.jsonl`: per-item records.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text, json_safe, save_figure

CURVE_KEYS = (("loss", "loss"), ("reward", "reward"), ("rewards/mean", "reward"),
              ("mean_token_accuracy", "token accuracy"), ("rewards/accuracies", "pair accuracy"))


def save_model_atomic(model, tokenizer, dest: str | Path) -> Path:
    """`model.save_pretrained` into a temporary directory, renamed to `dest` once complete."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.replace(old)
            tmp.replace(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LayerwiseError(f"cannot write checkpoint {dest}: {exc.strerror or exc}") from exc
    return dest


def write_metrics(out: str | Path, metrics: dict) -> Path:
    text = json.dumps(json_safe(metrics), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(Path(out) / "metrics.json", text + "\n")


def plot_curves(history: list[dict], path: str | Path, title: str) -> Path | None:
    """Loss and reward against step (one panel each); nothing when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    seen_labels = set()
    for key, label in CURVE_KEYS:
        points = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
        if points and label not in seen_labels:
            seen_labels.add(label)
            panels.append((label, points))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (label, points) in zip(axes[0], panels):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_schedule(phases: list[dict], blocks, path: str | Path, title: str) -> Path | None:
    """A blocks x steps raster: dark where a block trained at that step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not phases:
        return None
    blocks = sorted(blocks)
    steps = phases[-1]["to"]
    grid = np.zeros((len(blocks), steps))
    row = {b: i for i, b in enumerate(blocks)}
    for ph in phases:
        for b in ph["blocks"]:
            grid[row[b], ph["from"] - 1:ph["to"]] = 1
    fig, ax = plt.subplots(figsize=(min(12, 3 + steps / 20), 1 + 0.25 * len(blocks)))
    ax.imshow(grid, aspect="auto", cmap="Greys", interpolation="nearest",
              extent=(0.5, steps + 0.5, len(blocks) - 0.5, -0.5))
    ax.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("block")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
