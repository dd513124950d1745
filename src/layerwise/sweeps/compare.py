"""Merging sweeps: a blocks x sweeps matrix of C(k), and how consistently sweeps rank the blocks.

The paper reports Spearman 0.76 between block rankings from different data sets and 0.59 between
math and code (PAPERS.md section 1); `rank_consistency` gives Spearman's rho and Kendall's tau-b
between every pair of sweeps, over the blocks both measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from layerwise.diagnostics.agreement import spearman
from layerwise.errors import LayerwiseError
from layerwise.fileio import read_json, save_figure


@dataclass
class SweepColumn:
    name: str  # "task/method/model" of the sweep
    path: str
    per_block: dict[int, float]  # block -> mean C(k), single-block selections only
    doc: dict  # the whole contribution.json


def load_sweep(path: str | Path) -> SweepColumn:
    path = Path(path)
    doc_path = path / "contribution.json" if path.is_dir() else path
    if not path.exists():
        raise LayerwiseError(f"sweep {path} does not exist (give a `layerwise sweep --out` "
                             "directory)")
    if not doc_path.is_file():
        raise LayerwiseError(f"{path} holds no contribution.json (run `layerwise sweep --out {path}`)")
    doc = read_json(doc_path)
    per_block = {}
    for sel in doc.get("selections", []):
        if len(sel["blocks"]) == 1 and sel["contribution_mean"] is not None and (
                sel["label"].startswith("block ") or sel["label"].isdigit()):
            per_block[sel["blocks"][0]] = float(sel["contribution_mean"])
    spec = doc.get("sweep", {})
    name = "/".join(str(spec.get(k) or "embedded") for k in ("task", "method", "model")) if spec else str(path)
    return SweepColumn(name=name, path=str(path), per_block=per_block, doc=doc)


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties handled); NaN with fewer than 3 pairs or no ordering on a side."""
    n = len(a)
    if n < 3:
        return math.nan
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else math.nan


def rank_consistency(columns: list[SweepColumn]) -> list[dict]:
    rows = []
    for i, x in enumerate(columns):
        for y in columns[i + 1:]:
            common = sorted(set(x.per_block) & set(y.per_block))
            a = [x.per_block[b] for b in common]
            b = [y.per_block[k] for k in common]
            rho, n = spearman(a, b)
            rows.append({"a": x.name, "b": y.name, "blocks": n, "spearman": rho,
                         "kendall": kendall_tau_b(a, b) if n >= 3 else math.nan})
    return rows


def _single_blocks(column: SweepColumn) -> set[int]:
    """Every single-block selection of a sweep, also those whose C(k) is undefined."""
    return {sel["blocks"][0] for sel in column.doc.get("selections", [])
            if len(sel.get("blocks") or []) == 1 and (str(sel.get("label", "")).startswith("block ")
                                                      or str(sel.get("label", "")).isdigit())}


def plot_heatmap(columns: list[SweepColumn], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import numpy as np
    from matplotlib import colormaps

    blocks = sorted(set().union(*(c.per_block for c in columns), *(_single_blocks(c) for c in columns)))
    data = np.ma.masked_invalid(np.array(
        [[c.per_block.get(b, math.nan) for c in columns] for b in blocks] or [[math.nan] * len(columns)],
        dtype=float))
    # At least 4.5 in wide: the title does not fit a one- or two-column figure.
    fig, ax = plt.subplots(figsize=(max(4.5, 2.2 + 1.4 * len(columns)),
                                    1.5 + 0.22 * max(1, len(blocks))))
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(data, aspect="auto", cmap=cmap)
    ax.set_yticks(range(len(blocks)))
    ax.set_yticklabels([str(b) for b in blocks], fontsize=7)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c.name for c in columns], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("block")
    if data.count():
        fig.colorbar(im, ax=ax, label="C(k)")
    else:
        ax.text(0.5, 0.5, "no finite C(k) in any sweep\n(see each sweep's notes)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
    ax.set_title("Layer contribution across sweeps (grey: undefined)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
