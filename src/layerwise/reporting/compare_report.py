"""Plots and the HTML page of `layerwise compare`, all pure functions of compare.json's content."""

from __future__ import annotations

import html
import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from layerwise.fileio import atomic_write_text, save_figure
from layerwise.reporting.html import img_tag, page, table


def _key(tol: float) -> str:
    return f"sparsity@{tol:g}"


def plot_block_sparsity(doc: dict, path: str | Path) -> Path:
    """Per block (and embed / norm / head), per run, at the first tolerance: the update sparsity
    (top), and the share of entries that changed on a log scale (bottom), where sparse runs differ."""
    tol = doc["tolerances"][0]
    labels = [r["group"].removeprefix("block ") for r in doc["runs"][0]["blocks"]]
    fig = Figure(figsize=(max(7.0, 0.28 * len(labels) + 2), 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    floor = None
    # Blocks are joined by a line (depth is an order); embed, norm and head are separate points.
    n_blocks = sum(1 for r in doc["runs"][0]["blocks"] if r["group"].startswith("block "))
    for run in doc["runs"]:
        values = {r["group"].removeprefix("block "): r[_key(tol)] for r in run["blocks"]}
        sparsity = [values.get(g, math.nan) for g in labels]
        changed = [1 - s if 1 - s > 0 else math.nan for s in sparsity]
        for ax, ys in ((top, sparsity), (bottom, changed)):
            line, = ax.plot(range(n_blocks), ys[:n_blocks], marker="o", ms=3, label=run["label"])
            ax.plot(range(n_blocks, len(labels)), ys[n_blocks:], marker="s", ms=4, ls="none",
                    color=line.get_color())
        smallest = min((c for c in changed if c == c), default=None)
        if smallest is not None and (floor is None or smallest < floor):
            floor = smallest
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel(f"update sparsity\n(|Δ| ≤ {tol:g})")
    top.set_title("Share of entries left unchanged (top) and changed (bottom), per block", fontsize=9)
    if floor:  # a log axis needs something that changed
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=floor / 3, top=1.5)
    else:
        bottom.set_ylim(0, 1)
        bottom.text(0.5, 0.5, f"no entry changed by more than {tol:g} in any run", ha="center",
                    va="center", transform=bottom.transAxes, fontsize=9)
    bottom.set_ylabel("changed share (log)" if floor else "changed share")
    bottom.set_xticks(range(len(labels)), labels, fontsize=7, rotation=90)
    bottom.set_xlabel("block (then embed / norm / head); a missing point: nothing changed")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_module_sparsity(doc: dict, path: str | Path) -> Path:
    """Grouped bars: update sparsity per module type (q_proj, mlp.up_proj, ...) per run."""
    tol = doc["tolerances"][0]
    modules = [r["group"] for r in doc["runs"][0]["modules"]]
    n = len(doc["runs"])
    width = 0.8 / n
    fig = Figure(figsize=(max(7.0, 0.6 * len(modules) + 2), 3.6))
    ax = fig.subplots()
    for k, run in enumerate(doc["runs"]):
        values = {r["group"]: r[_key(tol)] for r in run["modules"]}
        ax.bar([i + k * width for i in range(len(modules))], [values.get(m, math.nan) for m in modules],
               width=width, label=run["label"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(modules))], modules, fontsize=7,
                  rotation=45, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"update sparsity (|Δ| ≤ {tol:g})")
    ax.set_title("Update sparsity per module type", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rank_histogram(doc: dict, path: str | Path) -> Path | None:
    """Histogram of rank / min(shape) over the updated 2-D matrices: default and relative tolerance."""
    tol = doc["tolerances"][0]
    runs = [r for r in doc["runs"] if any(t["rank_fraction"] is not None and t[_key(tol)] < 1.0
                                          for t in r["tensors"])]
    if not runs:  # no run changed a 2-D matrix: nothing to rank
        return None
    fig = Figure(figsize=(9.0, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    bins = [i / 20 for i in range(21)]
    for run in runs:
        updated = [t for t in run["tensors"] if t["rank_fraction"] is not None and t[_key(tol)] < 1.0]
        default = [t["rank_fraction"] for t in updated]
        rel = [t["rank_rel"] / min(int(x) for x in t["shape"].split("x")) for t in updated]
        for ax, values in zip(axes, (default, rel)):
            ax.hist(values, bins=bins, histtype="step", linewidth=1.5,
                    label=f"{run['label']} ({len(values)} matrices)")
    axes[0].set_title("rank / min(shape), PyTorch default tolerance", fontsize=9)
    axes[1].set_title(f"singular values > {doc['rel_rank_tol']:g} × the largest", fontsize=9)
    for ax in axes:
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("update rank / min(shape)")
    axes[0].set_ylabel("updated 2-D matrices")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_overlap_matrix(doc: dict, path: str | Path) -> Path | None:
    """o1[i][j] = share of run i's updated entries also updated in run j, with the chance level."""
    om = doc.get("overlap_matrix")
    if not om or len(om["labels"]) < 2:
        return None
    labels, o1, chance = om["labels"], om["o1"], om["chance"]
    n = len(labels)
    fig = Figure(figsize=(1.3 * n + 2.5, 1.1 * n + 1.8))
    ax = fig.subplots()
    grid = [[math.nan if v is None or i == j else v for j, v in enumerate(row)] for i, row in enumerate(o1)]
    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    im = ax.imshow(grid, vmin=0, vmax=1, cmap=cmap)
    for i in range(n):
        for j in range(n):
            if i == j or grid[i][j] != grid[i][j]:
                continue
            c = chance[i][j]
            ax.text(j, i, f"{grid[i][j]:.3f}\n(chance {c:.3f})" if c is not None else f"{grid[i][j]:.3f}",
                    ha="center", va="center", fontsize=7,
                    color="black" if grid[i][j] > 0.6 else "white")
    ax.set_xticks(range(n), labels, fontsize=7, rotation=30, ha="right")
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("run j")
    ax.set_ylabel("run i")
    ax.set_title(f"|I_i ∩ I_j| / |I_i| at |Δ| > {om['tol']:g}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


PLOTS = {"sparsity per block": (plot_block_sparsity, "sparsity_blocks.png"),
         "sparsity per module type": (plot_module_sparsity, "sparsity_modules.png"),
         "update rank": (plot_rank_histogram, "rank_hist.png"),
         "overlap": (plot_overlap_matrix, "overlap.png")}


def write_plots(doc: dict, out: Path) -> dict[str, Path]:
    """Every plot that applies; a plot that does not (no ranks, one run) is removed from `out` so
    an earlier compare into the same directory leaves nothing stale."""
    plots = {}
    for title, (plot, name) in PLOTS.items():
        path = plot(doc, out / name)
        if path is None:
            (out / name).unlink(missing_ok=True)
        else:
            plots[title] = path
    return plots


def compare_html(doc: dict, plots: dict[str, Path], path: str | Path) -> Path:
    tols = doc["tolerances"]
    parts = ["<h1>layerwise compare</h1>",
             table(None, [["base", doc["base"]], ["tolerances", ", ".join(f"{t:g}" for t in tols)],
                              ["differences", doc["precision"]], ["rounding", doc["rounding"]]]),
             "<h2>Runs</h2>",
             f'<p class="help">Update sparsity = share of entries with |Δ| ≤ tol (PAPERS.md §3). '
             f"Rank = rank(Δ) / min(shape) per 2-D matrix, mean over the matrices that changed. "
             f"Mean |θ0| changed / all: about 1 when updates land anywhere, far below 1 when only "
             f"entries near zero changed, which is what rounding to bf16/fp16 leaves.</p>"]
    header = ["run", "checkpoint", "stored as", "base rounded to"] + [f"sparsity @ {t:g}" for t in tols] \
        + ["mean update rank", "mean |θ0| changed / all", "selection check"]
    rows = []
    for run in doc["runs"]:
        check = run.get("selection_check")
        verdict = "—" if not check else (
            f"{check['spec']}: all changed entries inside" if check["ok"] else
            f"{check['spec']}: {check['changed_outside']:,} changed entries outside "
            f"({len(check['tensors_outside'])} tensors)")
        rows.append([run["label"], run["tuned"], ", ".join(run["tuned_dtypes"]),
                     ", ".join(run["base_rounded_to"]) or "—"]
                    + [run["global_sparsity"][f"{t:g}"] for t in tols]
                    + [run["mean_rank_fraction_of_updated_matrices"], run.get("magnitude_ratio"), verdict])
    parts.append(table(header, rows))
    for run in doc["runs"]:
        missing = {k: v for k, v in run["missing"].items() if v}
        unchanged = all(float(v) == 1.0 for v in run["global_sparsity"].values())
        if unchanged and not missing:
            parts.append(f'<p class="note">{html.escape(run["label"])}: nothing changed at tol '
                         f'{tols[0]:g} (sparsity 1.0): the checkpoints match, nothing to rank.</p>')
        if missing:
            parts.append(f'<p class="bad">{html.escape(run["label"])}: tensors missing — '
                         + "; ".join(f"in {k}: {', '.join(v)}" for k, v in missing.items()) + "</p>")
    for title, plot in plots.items():
        parts += [f"<h2>{html.escape(title.capitalize())}</h2>", img_tag(plot, title)]
    if doc["overlap"]:
        parts += ["<h2>Overlap table</h2>",
                  '<p class="help">o1 = |I_a ∩ I_b| / |I_a|, o2 = |I_a ∩ I_b| / |I_b|; chance: '
                  "o1_rand = 1 − s_b, o2_rand = 1 − s_a (s = sparsity).</p>",
                  table(["a", "b", "o1", "chance o1", "o2", "chance o2", "updated a", "updated b", "both"],
                        [[o["a"], o["b"], o["o1"], o["o1_rand"], o["o2"], o["o2_rand"], o["updated_a"],
                          o["updated_b"], o["both"]] for o in doc["overlap"]])]
    parts.append("<h2>Per block</h2>")
    for run in doc["runs"]:
        rows = [[r["group"], r["entries"]] + [r[_key(t)] for t in tols] + [r["mean_rank_fraction"]]
                for r in run["blocks"]]
        parts.append(f"<details><summary>{html.escape(run['label'])}</summary>"
                     + table(["group", "entries"] + [f"sparsity @ {t:g}" for t in tols]
                             + ["mean rank fraction"], rows) + "</details>")
    return atomic_write_text(path, page("layerwise compare", parts))
