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
                   help="write heatmap.png and consistency.json here")


def run(args: argparse.Namespace) -> int:
    from layerwise.sweeps.compare import load_sweep, plot_heatmap, rank_consistency

    if args.out:
        from layerwise.fileio import check_output_dir

        check_output_dir(args.out)
    columns = [load_sweep(p) for p in args.sweeps]
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
            {"sweeps": [c.path for c in columns], "pairs": rows}, "null"), indent=2) + "\n")
    return 0
