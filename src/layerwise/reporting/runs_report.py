"""Comparing training runs: a table with the spread over seeds, and the curves side by side.

Pure functions of the runs' typed results (`RunResult`, read from metrics.json; a plot never
recomputes a metric). Runs are
grouped by (method, what trained); each group reports the mean and sample standard deviation of
base and final accuracy, the gain, forgetting, trainable share and step time over its seeds.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import save_figure
from layerwise.training.result import RunResult, read_run, stale_message


def load_runs(paths: list[str | Path]) -> list[RunResult]:
    runs = []
    for p in paths:
        path = Path(p)
        run = read_run(path)
        run_dir = path if path.is_dir() else path.parent
        stale = stale_message(run_dir, run)
        if stale:
            raise LayerwiseError(stale)
        if run.status not in ("completed", "failed") or run.final.score is None:
            raise LayerwiseError(f"{path}: the run did not finish (status {run.status!r})")
        runs.append(run)
    if not runs:
        raise LayerwiseError("no run to report")
    return runs


def _label(run: RunResult) -> str:
    return f"{run.method} | {run.trainable.description}"


def _mean_sd(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group_runs(runs: list[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[_label(run)].append(run)
    return dict(groups)


def runs_table(runs: list[dict]) -> str:
    """A Markdown table, one row per (method, trainable set), mean ± sd over seeds."""
    head = ("| method | trains | trainable | seeds | base acc | final acc | gain | per-seed final "
            "| ppl change | step s | failed |\n|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    rows = [head]
    for label, group in group_runs(runs).items():
        first = group[0]
        base = _mean_sd([r.base.score for r in group])
        final = _mean_sd([r.final.score for r in group])
        gain = _mean_sd([r.score_gain for r in group])
        ppl = _mean_sd([100 * (r.forgetting.relative_change or 0) for r in group])
        step = _mean_sd([r.step_seconds_median for r in group])
        seeds = sorted(r.seed for r in group)
        per_seed = ", ".join(f"{r.final.score:.3f}" for r in sorted(group, key=lambda r: r.seed))
        failed = sum(r.status != "completed" for r in group)
        rows.append(
            f"| {first.method} | {first.trainable.description} | "
            f"{100 * first.trainable.share:.2f}% | {len(seeds)} | {base[0]:.3f} | "
            f"{final[0]:.3f} ± {final[1]:.3f} | {gain[0]:+.3f} ± {gain[1]:.3f} | {per_seed} | "
            f"{ppl[0]:+.1f}% ± {ppl[1]:.1f} | {step[0]:.2f} | {failed} |")
    return "\n".join(rows) + "\n"


def plot_runs(runs: list[RunResult], path: str | Path, key_candidates=("reward", "loss")) -> Path:
    """One panel per method: the mean curve of each trainable set over its seeds (band: min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for label, group in group_runs(runs).items():
        by_method[group[0].method][label] = group
    fig, axes = plt.subplots(1, len(by_method), figsize=(5.5 * len(by_method), 3.6), squeeze=False)
    for ax, (method, groups) in zip(axes[0], sorted(by_method.items())):
        key = next((k for k in key_candidates
                    if any(k in h for g in groups.values() for r in g for h in r.history)), None)
        for label, group in groups.items():
            curves = []
            for run in group:
                pts = {h["step"]: h[key] for h in run.history if key in h}
                curves.append(pts)
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            mean = [statistics.fmean(c[s] for c in curves) for s in steps]
            ax.plot(steps, _smooth(mean), label=label.split(" | ", 1)[1], linewidth=1.4)
            ax.fill_between(steps, _smooth([min(c[s] for c in curves) for s in steps]),
                            _smooth([max(c[s] for c in curves) for s in steps]), alpha=0.15)
        ax.set_title(f"{method}: {key} (mean over seeds, smoothed; band min-max)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(key or "")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _smooth(values: list[float], window: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1):i + 1]
        out.append(sum(chunk) / len(chunk))
    return out
