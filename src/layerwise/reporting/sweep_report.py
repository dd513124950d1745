"""Plots and HTML for sweeps: C(k) over depth, and a heatmap + rank agreement across sweeps.

Pure functions of the contribution tables (see sweeps/contribution.py); nothing is recomputed.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from layerwise.fileio import atomic_write_text, save_figure
from layerwise.reporting.html import img_tag, page
from layerwise.sweeps.contribution import Contribution


def plot_contribution(rows: list[Contribution], path: str | Path, title: str) -> Path:
    """Bars of C(k) (mean, error bar = sd over seeds); single blocks in depth order first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    singles = sorted((r for r in rows if len(r.blocks) == 1 and r.label.startswith("block ")),
                     key=lambda r: r.blocks[0])
    others = [r for r in rows if r not in singles]
    ordered = singles + others
    labels = [str(r.blocks[0]) if r in singles else r.label for r in ordered]
    means = [r.contribution_mean if math.isfinite(r.contribution_mean) else 0.0 for r in ordered]
    sds = [r.contribution_sd if math.isfinite(r.contribution_sd) else 0.0 for r in ordered]
    colors = ["#3b75af" if r in singles else "#e08b3c" for r in ordered]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(ordered) + 2), 3.6))
    ax.bar(range(len(ordered)), means, yerr=sds, color=colors, capsize=2)
    ax.axhline(1.0, color="k", linewidth=0.8, linestyle="--", label="C = 1 (as good as full)")
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xticks(range(len(ordered)))
    ax.set_xticklabels(labels, rotation=90 if len(ordered) > 12 else 0, fontsize=7)
    ax.set_xlabel("block (depth order)" + (", then other selections" if others else ""))
    ax.set_ylabel("C(k)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)  # a long title wraps, not cut
    if ordered and not any(math.isfinite(r.contribution_mean) for r in ordered):
        ax.text(0.5, 0.5, "no finite C(k): see the notes in report.html", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def display_order(rows: list[Contribution]) -> list[Contribution]:
    """full first, then single blocks by depth, then every other selection as given."""
    full = [r for r in rows if r.label == "full"]
    singles = sorted((r for r in rows if len(r.blocks) == 1 and r not in full),
                     key=lambda r: r.blocks[0])
    return full + singles + [r for r in rows if r not in full and r not in singles]


def _settings_table(settings: dict | None) -> str:
    if not settings:
        return ""
    train = dict(settings.get("train") or {})
    rows = [("model", settings.get("model") or "embedded"), ("task", settings.get("task")),
            ("task options", settings.get("task_options") or "none"),
            ("method", settings.get("method")), ("selections", settings.get("layers")),
            ("seeds", ", ".join(map(str, settings.get("seeds") or []))),
            ("full training's lr", settings.get("full_lr") or "the runs' lr")]
    rows += sorted((k, v) for k, v in train.items())
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return f"<h2>Settings</h2><table>{cells}</table>"


def sweep_html(title: str, s_base: float, full: dict[int, float], rows: list[Contribution],
               plot: Path, path: str | Path, notes: list[str] | None = None,
               settings: dict | None = None) -> Path:
    rows = display_order(rows)
    body = [f"<h1>{html.escape(title)}</h1>",
            *([("<div class=\"help\"><b>Notes</b><ul>"
                + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>")] if notes else []),
            f"<p>S_base = {s_base:.4f}; S_full per seed: "
            + ", ".join(f"seed {k}: {v:.4f}" for k, v in sorted(full.items())) + "</p>",
            "<p>C(k) = (S_k - S_base) / (S_full - S_base), per seed, then mean ± sd.</p>",
            img_tag(plot, "C(k) over depth"),
            "<table><tr><th>selection</th><th>blocks</th><th>score</th><th>C(k)</th>"
            "<th>per seed</th><th>trainable</th><th>step s</th><th>failed</th></tr>"]
    for r in rows:
        per_seed = ", ".join(f"{k}: {v:.3f}" for k, v in r.contribution_per_seed.items())
        body.append(
            f"<tr><td>{html.escape(r.label)}</td><td>{html.escape(' '.join(map(str, r.blocks)))}</td>"
            f"<td>{r.score_mean:.3f} ± {r.score_sd:.3f}</td>"
            f"<td>{r.contribution_mean:.3f} ± {r.contribution_sd:.3f}</td><td>{per_seed}</td>"
            f"<td>{r.trainable_params or '-'}</td><td>{(r.step_seconds or math.nan):.3f}</td>"
            f"<td>{html.escape('; '.join(r.failed))}</td></tr>")
    body.append("</table>")
    body.append(_settings_table(settings))
    return atomic_write_text(path, page(title, body))
