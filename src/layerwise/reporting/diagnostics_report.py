"""The `diagnostics.json` report: a bar plot per metric, a rank heatmap, a self-contained HTML.

A pure function of the dict `layerwise diagnose` writes: nothing here computes a metric. The only
derived numbers are ranks and rank correlations, and those come from `diagnostics.agreement`.
Non-finite values are part of the result (a removed block can blow perplexity up to inf), so every
plot and table shows them as "nan"/"inf" instead of dropping them; null (not defined for that block)
shows as "n/a" in plots and "—" in tables.

Figures are built on `matplotlib.figure.Figure` directly, which needs no pyplot and no global
backend state, so rendering is safe inside any program (and headless).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from layerwise.diagnostics.agreement import (
    agreement_table,
    field_orientations,
    normalised_ranks,
    parse_value,
)
from layerwise.fileio import atomic_write_text, save_figure
from layerwise.reporting.html import img_tag

_ORIENTATION_COLOUR = {True: "tab:blue", False: "tab:orange", None: "tab:gray"}
_ORIENTATION_TEXT = {
    True: "higher = more important",
    False: "higher = less important",
    None: "descriptive",
}
_LOG_SPAN = 1e3  # a positive field spanning more than this factor is drawn on a log axis
_DPI = 110


def render_report(diag: dict, out_dir: Path) -> list[Path]:
    """Write metric_<name>.png per metric, all_metrics_ranks.png and report.html into `out_dir`.

    Returns the written paths, plots first and report.html last.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    metric_plots: dict[str, Path] = {}
    for name, metric in diag.get("metrics", {}).items():
        if not metric.get("fields"):
            continue
        path = out_dir / f"metric_{_safe_name(name)}.png"
        _save(plot_metric(diag, name), path)
        metric_plots[name] = path
        written.append(path)
    ranks_plot = None
    ranks_figure = plot_ranks(diag)
    if ranks_figure is not None:
        ranks_plot = out_dir / "all_metrics_ranks.png"
        _save(ranks_figure, ranks_plot)
        written.append(ranks_plot)
    report = out_dir / "report.html"
    atomic_write_text(report, report_html(diag, metric_plots, ranks_plot))
    written.append(report)
    return written


# ---------------------------------------------------------------------------------------------
# Values as text


def format_value(value) -> str:
    """A stored value as text: null -> "—", non-finite -> "nan"/"inf"/"-inf", else 4 digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    parsed = parse_value(value)
    if parsed is None:  # a non-numeric entry: show it as it is
        return value if isinstance(value, str) else json.dumps(value)
    if not math.isfinite(parsed):
        return "nan" if math.isnan(parsed) else ("inf" if parsed > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    return f"{parsed:.4g}"


def _missing_label(value: float | None) -> str:
    """How a block with no finite value is marked in a plot."""
    return "n/a" if value is None else format_value(value)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def block_labels(diag: dict) -> list[str]:
    """The block index of each row of `layers` (its position when the record names none)."""
    return [str(layer.get("index", i)) for i, layer in enumerate(diag.get("layers", []))]


def table_fields(diag: dict) -> list[str]:
    """Every per-block field: declared ones in run order, then any others the records carry."""
    names = list(field_orientations(diag))
    for layer in diag.get("layers", []):
        names += [k for k in layer if k != "index" and k not in names]
    return names


# ---------------------------------------------------------------------------------------------
# Figures


def plot_metric(diag: dict, name: str) -> Figure:
    """One bar panel per field of metric `name`, over block index."""
    fields = diag["metrics"][name]["fields"]
    labels = block_labels(diag)
    fig = Figure(figsize=(max(7.0, 0.28 * len(labels) + 2.5), 2.6 * len(fields) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(fields), 1, squeeze=False)[:, 0]
    for ax, (field, orientation) in zip(axes, fields.items()):
        values = [parse_value(layer.get(field)) for layer in diag.get("layers", [])]
        _bar_panel(ax, values, labels, _ORIENTATION_COLOUR[orientation])
        ax.set_title(f"{field}  ({_ORIENTATION_TEXT[orientation]})", fontsize=10, loc="left")
    axes[-1].set_xlabel("block")
    fig.suptitle(f"{name}", fontsize=11)
    return fig


def _bar_panel(ax, values: list[float | None], labels: list[str], colour: str) -> None:
    """Bars for the finite values; a hatched, labelled band for every other block."""
    xs = range(len(values))
    finite = [(x, v) for x, v in zip(xs, values) if v is not None and math.isfinite(v)]
    if _wants_log(v for _, v in finite):
        ax.set_yscale("log")
    if finite:
        ax.bar([x for x, _ in finite], [v for _, v in finite], width=0.8, color=colour)
    else:
        ax.set_ylim(0, 1)
    for x, v in zip(xs, values):
        if v is None or not math.isfinite(v):
            _mark_missing(ax, x, _missing_label(v))
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.set_xticks(list(xs) if len(values) <= 40 else list(xs)[:: max(1, len(values) // 20)])
    ax.set_xticklabels(labels if len(values) <= 40 else labels[:: max(1, len(values) // 20)],
                       fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _wants_log(values) -> bool:
    values = list(values)
    return bool(values) and min(values) > 0 and max(values) / min(values) > _LOG_SPAN


def _mark_missing(ax, x: int, label: str) -> None:
    colour = "tab:gray" if label == "n/a" else "tab:red"
    ax.axvspan(x - 0.4, x + 0.4, facecolor="none", edgecolor=colour, hatch="///", linewidth=0)
    ax.text(x, 0.97, label, transform=ax.get_xaxis_transform(), ha="center", va="top",
            fontsize=7, color=colour, fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})


def plot_ranks(diag: dict) -> Figure | None:
    """Heatmap of normalised importance rank: rows = oriented fields, columns = blocks."""
    ranks = normalised_ranks(diag)
    if not ranks:
        return None
    import numpy as np  # only here: the rest of the module needs no arrays

    orientation = field_orientations(diag)
    labels = block_labels(diag)
    grid = np.ma.masked_invalid(
        np.array([[math.nan if r is None else r for r in row] for row in ranks.values()], float)
    )
    fig = Figure(figsize=(max(7.0, 0.3 * len(labels) + 4.5), 0.42 * len(ranks) + 1.8),
                 layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")  # a new map, not the shared one
    image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    for row, field in enumerate(ranks):
        for col, layer in enumerate(diag.get("layers", [])):
            if ranks[field][col] is None:
                ax.text(col, row, _missing_label(parse_value(layer.get(field))), ha="center",
                        va="center", fontsize=7, color="tab:red")
    ax.set_yticks(range(len(ranks)))
    ax.set_yticklabels([f if orientation[f] else f"{f} (negated)" for f in ranks], fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlabel("block")
    # Two lines: one line is wider than the figure at few blocks and was cut off.
    ax.set_title("importance per metric as a normalised rank\n(1 = the block it ranks most "
                 "important, 0 = least; grey = no finite value)", fontsize=10, loc="left")
    fig.colorbar(image, ax=ax, label="normalised importance rank (1 = most important)")
    return fig


def _save(fig: Figure, path: Path) -> None:
    save_figure(fig, path, dpi=_DPI)


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
td.nonfinite { color: #b2182b; font-weight: bold; } td.null { color: #999; }
img { max-width: 100%; } .help { color: #555; } .n { font-size: 0.8em; }
"""


def report_html(diag: dict, metric_plots: dict[str, Path], ranks_plot: Path | None) -> str:
    """The whole page; plots are read from disk and embedded as base64 data URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>layerwise diagnostics: {html.escape(str(diag.get('model', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header_html(diag),
        "<h2>Agreement between metrics</h2>",
        _agreement_html(diag),
    ]
    if ranks_plot is not None:
        parts.append(img_tag(ranks_plot, "importance rank per metric"))
    parts.append("<h2>Metrics</h2>")
    for name, metric in diag.get("metrics", {}).items():
        parts.append(_metric_html(name, metric, metric_plots.get(name)))
    parts += ["<h2>Per-block values</h2>", _block_table_html(diag), "</body></html>"]
    return "\n".join(parts)


def _header_html(diag: dict) -> str:
    windows = diag.get("windows") or {}
    rows = [
        ("model", diag.get("model")),
        ("model type", diag.get("model_type")),
        ("blocks", diag.get("num_blocks")),
        ("data", diag.get("data")),
        ("windows", f"{windows.get('num_seqs')} × {windows.get('seq_len')} tokens "
                    f"= {windows.get('tokens')} tokens" if windows else None),
        ("baseline perplexity", format_value(diag.get("baseline_perplexity"))),
        ("total seconds", format_value(diag.get("seconds"))),
        ("layerwise version", diag.get("layerwise_version")),
    ]
    body = "".join(
        f'<tr><th class="name">{html.escape(k)}</th>'
        f'<td class="name">{html.escape("—" if v is None else str(v))}</td></tr>'
        for k, v in rows
    )
    return (f"<h1>layerwise diagnostics</h1><table>{body}</table>"
            + _json_details("options", diag.get("options")))


def _metric_html(name: str, metric: dict, plot: Path | None) -> str:
    orientation = ", ".join(
        f"{html.escape(f)} ({_ORIENTATION_TEXT[o]})" for f, o in metric.get("fields", {}).items()
    )
    parts = [
        f'<h3 id="metric-{html.escape(_safe_name(name))}">{html.escape(name)}</h3>',
        f'<p class="help">{html.escape(str(metric.get("help", "")))}</p>',
        f"<p>{html.escape(format_value(metric.get('seconds')))} s; "
        f"fields: {orientation or '—'}</p>",
    ]
    summary = metric.get("summary") or {}
    if summary:
        rows = "".join(
            f'<tr><th class="name">{html.escape(str(k))}</th>{_value_cell(v)}</tr>'
            for k, v in summary.items()
        )
        parts.append(f"<table>{rows}</table>")
    if plot is not None:
        parts.append(img_tag(plot, name))
    parts.append(_json_details("extra", metric.get("extra")))
    return "\n".join(parts)


def _block_table_html(diag: dict) -> str:
    fields = table_fields(diag)
    head = "<tr><th>block</th>" + "".join(f"<th>{html.escape(f)}</th>" for f in fields) + "</tr>"
    rows = [
        f"<tr><th>{html.escape(label)}</th>"
        + "".join(_value_cell(layer.get(f)) for f in fields) + "</tr>"
        for label, layer in zip(block_labels(diag), diag.get("layers", []))
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _value_cell(value) -> str:
    if isinstance(value, (dict, list)):
        return f'<td class="name">{html.escape(_short_json(value))}</td>'
    text = format_value(value)
    parsed = parse_value(value)
    css = "null" if value is None else ("nonfinite" if text in ("nan", "inf", "-inf") else "")
    if parsed is None and value is not None:
        css = "name"
    return f'<td class="{css}">{html.escape(text)}</td>' if css else f"<td>{html.escape(text)}</td>"


def _agreement_html(diag: dict) -> str:
    table = agreement_table(diag)
    fields = table["fields"]
    if not fields:
        return "<p>No metric with an importance orientation ran.</p>"
    num_blocks = len(diag.get("layers", []))
    head = '<tr><th class="name">Spearman ρ</th>' + "".join(
        f"<th>{html.escape(f)}</th>" for f in fields) + "</tr>"
    rows = []
    for i, field in enumerate(fields):
        cells = "".join(
            _rho_cell(table["rho"][i][j], table["n"][i][j], num_blocks) for j in range(len(fields))
        )
        rows.append(f'<tr><th class="name">{html.escape(field)}</th>{cells}</tr>')
    note = ("<p class=\"help\">Rank correlation of block importance (fields that rank low values "
            "as important are negated first). +1: the two metrics order blocks alike; −1: "
            "opposite. n = blocks where both are finite, shown when fewer than all "
            f"{num_blocks}.</p>")
    # Many metrics make a wide table: it scrolls inside its box instead of overflowing the page.
    return f"{note}<div class=\"wide\"><table>{head}{''.join(rows)}</table></div>"


def _rho_cell(rho: float, n: int, num_blocks: int) -> str:
    count = f' <span class="n">(n={n})</span>' if n < num_blocks else ""
    if not math.isfinite(rho):
        return f'<td style="background:#eee">nan{count}</td>'
    red, green, blue = (33, 102, 172) if rho >= 0 else (178, 24, 43)
    text = "#fff" if abs(rho) > 0.6 else "#222"
    style = f"background:rgba({red},{green},{blue},{abs(rho) * 0.85:.2f});color:{text}"
    return f'<td style="{style}">{rho:+.2f}{count}</td>'


def _short_json(value, limit: int = 20_000) -> str:
    text = json.dumps(value, indent=1)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit} more characters)"


def _json_details(title: str, value) -> str:
    if not value:
        return ""
    return (f"<details><summary>{html.escape(title)}</summary>"
            f"<pre>{html.escape(_short_json(value))}</pre></details>")
