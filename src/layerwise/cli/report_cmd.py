"""`layerwise report`: merge sweeps into a C(k) heatmap and a rank-consistency table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from layerwise.fileio import atomic_write_text, json_safe

NAME = "report"
HELP = "merge sweeps: heatmap of C(k) (blocks x sweeps) and Spearman/Kendall between sweeps"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="+", metavar="DIR", help="sweep output directories")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write heatmap.png, consistency.json and report.html here")


def run(args: argparse.Namespace) -> int:
    from layerwise.sweeps.compare import load_sweep, plot_heatmap, rank_consistency

    if args.out:
        from layerwise.fileio import check_output_dir

        check_output_dir(args.out)
    columns = distinct_names([load_sweep(p) for p in args.sweeps])
    rows = rank_consistency(columns)
    lines = [f"{'sweep A':<40} {'sweep B':<40} {'blocks':>6} {'spearman':>9} {'kendall':>8}"]
    for r in rows:
        lines.append(f"{r['a']:<40} {r['b']:<40} {r['blocks']:>6} {r['spearman']:>9.3f} {r['kendall']:>8.3f}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot_heatmap(columns, out / "heatmap.png")
        atomic_write_text(out / "consistency.json", json.dumps(json_safe(
            {"sweeps": [{"name": c.name, "path": c.path} for c in columns], "pairs": rows}, "null"),
            indent=2) + "\n")
        _html(columns, rows, out)
        print(f"wrote {out / 'report.html'}", file=sys.stderr)
    return 0


def distinct_names(columns):
    """Sweeps with the same task/method/model get what tells them apart (steps=40, seeds=0,1...),
    or, if their settings are equal, their directory."""
    from collections import defaultdict

    groups = defaultdict(list)
    for c in columns:
        groups[c.name].append(c)
    for name, same in groups.items():
        if len(same) < 2:
            continue
        flat = [_flat(c.doc.get("sweep") or {}) for c in same]
        keys = sorted({k for f in flat for k in f if len({repr(g.get(k)) for g in flat}) > 1})
        for c, f in zip(same, flat):
            extra = ", ".join(f"{k}={f.get(k)}" for k in keys) if keys else c.path
            c.name = f"{name} ({extra})"
    return columns


def _flat(spec: dict) -> dict:
    out = {k: v for k, v in spec.items() if k != "train"}
    out.update(spec.get("train") or {})
    return out


def _html(columns, rows, out: Path) -> None:
    import html

    from layerwise.reporting.html import img_tag, page

    body = ["<h1>layerwise report: C(k) across sweeps</h1>",
            "<p>C(k) = (S_k - S_base) / (S_full - S_base) per single block, one column per sweep; "
            "rank agreement between sweeps over the blocks both measured.</p>",
            img_tag(out / "heatmap.png", "C(k) heatmap"),
            *[f"<p class=\"help\"><b>{html.escape(c.name)}</b>: {html.escape(n)}</p>"
              for c in columns for n in (c.doc.get("notes") or [])],
            "<h2>Sweeps</h2><table><tr><th>name</th><th>directory</th><th>blocks</th></tr>"]
    body += [f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.path)}</td>"
             f"<td>{len(c.per_block)}</td></tr>" for c in columns]
    body.append("</table><h2>Rank agreement</h2>")
    if rows:
        body.append("<table><tr><th>sweep A</th><th>sweep B</th><th>blocks</th><th>Spearman</th>"
                    "<th>Kendall</th></tr>")
        body += [f"<tr><td>{html.escape(r['a'])}</td><td>{html.escape(r['b'])}</td>"
                 f"<td>{r['blocks']}</td>" + (
                     f"<td>{r['spearman']:.3f}</td><td>{r['kendall']:.3f}</td>" if r["blocks"] >= 2
                     else '<td colspan="2">— (fewer than 2 blocks with a finite C(k) in both)</td>')
                 + "</tr>" for r in rows]
        body.append("</table>")
    else:
        body.append('<p class="note">' + ("one sweep: nothing to compare its ranking with"
                                          if len(columns) < 2 else
                                          "no two sweeps share two blocks with a finite C(k): "
                                          "no rank agreement to compute") + "</p>")
    atomic_write_text(out / "report.html", page("layerwise report", body))
