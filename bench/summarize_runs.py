"""Summarise training runs: the mean ± sd table over seeds and the curves, from metrics.json files.

    .venv/bin/python bench/summarize_runs.py RUN_DIR... [--table FILE.md] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import sys

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text
from layerwise.reporting.runs_report import load_runs, plot_runs, runs_table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--table", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    try:
        runs = load_runs(args.runs)
    except LayerwiseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = runs_table(runs)
    print(table)
    if args.table:
        atomic_write_text(args.table, table)
    if args.plot:
        plot_runs(runs, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
