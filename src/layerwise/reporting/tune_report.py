"""The page of `layerwise tune`: the choice, its evidence, the verification, the baselines.

Pure functions of a `TuneResult` (tuning/recipe.py): a bar chart of each estimator per block with
the chosen blocks marked, and one HTML page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from layerwise.fileio import atomic_write_text, save_figure
from layerwise.reporting.html import img_tag, page, table


def estimate_plot(result, path: Path) -> Path:
    from matplotlib.figure import Figure

    names = list(result.estimates)
    fig = Figure(figsize=(max(6.0, 0.25 * result.num_blocks + 3), 1.6 + 1.6 * len(names)),
                 layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    chosen = set(result.choice.blocks)
    for ax, name in zip(axes, names):
        values = [v if v is not None and math.isfinite(v) else 0.0 for v in result.estimates[name]]
        total = sum(abs(v) for v in values) or 1.0
        ax.bar(range(len(values)), [v / total for v in values],
               color=["tab:orange" if b in chosen else "tab:grey" for b in range(len(values))])
        ax.set_ylabel(f"{name}\n(share)", fontsize=8)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([str(b) for b in range(len(values))], fontsize=7)
    axes[-1].set_xlabel("block (orange: chosen)")
    axes[0].set_title(f"per-block estimates; chosen by {result.choice.policy}: blocks "
                      f"{', '.join(map(str, result.choice.blocks))}", fontsize=9, loc="left")
    return save_figure(fig, path)


def _round(x, digits: int = 3):
    return round(x, digits) if isinstance(x, float) and math.isfinite(x) else x


def _run_rows(result) -> list[list]:
    runs = ([result.run] if result.run else []) + list(result.baselines.values())
    return [[r.label, r.trains, r.trainable_params, _round(r.score_before),
             _round(r.score_after), _round(r.gain),
             None if r.forgetting is None else f"{100 * r.forgetting:+.1f}%",
             _round(r.median_step_s, 2), _round(r.optimizer_state_mib, 1), r.status]
            for r in runs]


def _verdict_parts(result) -> list[str]:
    """The verdict first: the choice against every baseline, with the evaluation's noise."""
    v = getattr(result, "verdict", None) or {}
    if not v:
        return []
    bad = v["headline"].startswith("the choice LOST")
    items = "".join(f"<li>{html.escape(c['sentence'])}</li>" for c in v.get("comparisons", []))
    if v.get("cost"):
        items += f"<li>{html.escape(v['cost'])}</li>"
    return [f"<p class=\"{'bad' if bad else 'note'}\"><b>Verdict:</b> "
            f"{html.escape(v['headline'])}.</p>" + (f"<ul>{items}</ul>" if items else ""),
            "<p class=\"help\">Paired over the same held-out items: per item, the chosen run's "
            "score minus the baseline's, with a 95% bootstrap interval of the mean difference; "
            "\"matched\" means the interval contains 0.</p>"]


def _setting(result, key: str, value) -> str:
    """A setting as the tune resolved it (the model actually loaded, not `None`)."""
    if key == "model" and result.run is not None and getattr(result.run, "model_source", None):
        return f"{value or 'embedded'}: {result.run.model_source}"
    return str(value)


def _resolved_lr(result) -> list[list]:
    runs = ([result.run] if result.run else []) + list(result.baselines.values())
    return [[f"lr used by {r.label}", f"{r.lr:g}"] for r in runs if getattr(r, "lr", None)]


def write_tune_report(result, out: Path) -> Path:
    plot = estimate_plot(result, out / "estimates.png")
    s = result.settings
    c = result.choice
    parts = [f"<h1>layerwise tune: {html.escape(str(s['method']))} on "
             f"{html.escape(str(s['task']))}, budget {html.escape(str(s['budget']))} "
             f"({result.k} of {result.num_blocks} blocks)</h1>",
             *_verdict_parts(result),
             f"<p class=\"note\">Chosen: {html.escape(c.policy)}, blocks "
             f"{', '.join(map(str, c.blocks))}. Why: {html.escape(c.reason)}.</p>",
             "<h2>Evidence</h2>",
             f"<p class=\"help\">Estimator ranking the blocks: {html.escape(result.estimator)}"
             + (f"; cost {result.estimate_seconds:.1f} s ("
                + ("short single-block training runs" if result.estimator == "profile" else
                   "forward and backward passes" if result.estimator != "probe" else
                   "backward passes and a few steps per block") + ")"
                if result.estimate_seconds else "")
             + (f"; Spearman between the two estimators {c.agreement:.2f}"
                if c.agreement is not None else "")
             + (f"; Spearman of the estimate with depth (first block first) "
                f"{c.depth_spearman:.2f}" + (": it ranks by depth almost alone, which is a free "
                                            "prior" if abs(c.depth_spearman) >= 0.9 else "")
                if getattr(c, "depth_spearman", None) is not None else "") + ".</p>",
             img_tag(plot, "per-block estimates"),
             table(["policy", "blocks", "share of the estimated gain",
                    "step cost (backward depth; 1 = every block)"],
                   [[name, ", ".join(map(str, v["blocks"])), _round(v.get("share")),
                     _round(v.get("step_cost"))] for name, v in c.candidates.items()]),
             "<h2>Training and verification</h2>",
             table(["run", "trains", "trainable", "score before", "score after", "gain",
                    "general perplexity", "median step (s)", "optimizer state (MiB)", "status"],
                   _run_rows(result))]
    harness = [[r.label, task, m["metric"], m["before"], m["after"]] for r in
               ([result.run] if result.run else []) + list(result.baselines.values())
               for task, m in (getattr(r, "lm_eval", None) or {}).items()]
    if harness:
        parts += ["<h3>Forgetting, lm-evaluation-harness</h3>",
                  table(["run", "task", "metric", "before", "after"], harness)]
    v = result.verification
    if v:
        parts.append(
            f"<p class=\"{'note' if v.get('ok') else 'bad'}\">compare against the base: "
            + (f"all {v.get('changed_inside'):,} changed entries lie inside blocks {v['selection']}"
               if v.get("ok") else html.escape(
                   v.get("why") or f"{v.get('changed_outside'):,} changed entries OUTSIDE the "
                   f"choice, in {', '.join(v.get('tensors_outside', [])[:5])}"))
            + "</p>")
    parts += ["<h2>Settings</h2>",
              table(None, [[k, _setting(result, k, s[k])] for k in s if k != "train"]
                    + [[k, str(val)] for k, val in sorted(s["train"].items())]
                    + _resolved_lr(result))]
    return atomic_write_text(out / "report.html", page("layerwise tune", parts))
