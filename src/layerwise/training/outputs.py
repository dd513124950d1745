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
              ("mean_token_accuracy", "token accuracy"), ("rewards/accuracies", "pair accuracy"),
              ("eval_score", "held-out score"))


def save_model_atomic(model, tokenizer, dest: str | Path, writer=None) -> Path:
    """`model.save_pretrained` (or `writer(tmp)`) into a temporary directory, renamed to `dest`
    once complete."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if writer is not None:
            writer(tmp)
        else:
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


def write_tying(path: str | Path, record: dict | None) -> Path | None:
    """The run's tying over time: the starting map, every decision, the final map, the counts."""
    if record is None:
        return None
    return atomic_write_text(Path(path), json.dumps(json_safe(record), indent=2) + "\n")


def plot_tying(record: dict | None, path: str | Path, title: str) -> Path | None:
    """Blocks x steps, each cell coloured by the block whose weights that block used (its own:
    white), with the unique parameter count over the run beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if record is None:
        return None
    n = len(record["start"])
    marks = [(0, record["start"])] + [(h["decided_at"], h["sources"]) for h in record["history"]]
    steps = max([m[0] for m in marks] + [h["step"] for h in record["history"]] + [1])
    grid = np.full((n, len(marks)), np.nan)
    for c, (_s, src) in enumerate(marks):
        for b, j in enumerate(src):
            grid[b, c] = np.nan if j == b else j
    edges = [m[0] for m in marks] + [steps]
    fig, axes = plt.subplots(2 if record["history"] else 1, 1, squeeze=False,
                             figsize=(min(12, 4 + len(marks) / 15), 2 + 0.3 * n),
                             gridspec_kw={"height_ratios": [3, 1]} if record["history"] else None)
    ax = axes[0][0]
    cmap = plt.get_cmap("viridis", max(2, n)).with_extremes(bad="white")
    mesh = ax.pcolormesh(edges, np.arange(n + 1) - 0.5, np.ma.masked_invalid(grid), cmap=cmap,
                         vmin=-0.5, vmax=n - 0.5, shading="flat")
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_yticks(range(n), [str(b) for b in range(n)], fontsize=7)
    ax.set_ylabel("block")
    ax.set_title(f"{title}: colour = the block whose weights it uses (white: its own)", fontsize=9)
    fig.colorbar(mesh, ax=ax, label="source block", ticks=range(n))
    if record["history"]:
        bx = axes[1][0]
        bx.step([0] + [h["step"] for h in record["history"]],
                [record["counts_start"]["unique"]] + [h["unique_params"] for h in record["history"]],
                where="post")
        bx.set_ylabel("unique params")
        bx.set_xlabel("step")
        bx.set_xlim(ax.get_xlim())
    else:
        ax.set_xlabel("step (a static map)")
    fig.tight_layout()
    return save_figure(fig, path)
