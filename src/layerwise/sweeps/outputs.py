"""Writing a sweep's results: contribution.json / .csv, the C(k) plot and report.html."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from layerwise.fileio import atomic_write_text
from layerwise.reporting.sweep_report import plot_contribution, sweep_html
from layerwise.sweeps.contribution import Contribution, contributions, sweep_notes, to_csv, to_json
from layerwise.sweeps.spec import SweepSpec


def write_sweep_outputs(sweep: SweepSpec, rows: list[dict], out: str | Path
                        ) -> tuple[float, dict[int, float], list[Contribution]]:
    out = Path(out)
    s_base, full, table = contributions(rows)
    notes = sweep_notes(rows, s_base, full, table)
    from layerwise.sweeps.store import open_store

    with open_store(out) as store:
        identity = store.identity()
    atomic_write_text(out / "contribution.json", to_json(s_base, full, table, asdict(sweep), notes,
                                                         identity))
    atomic_write_text(out / "contribution.csv", to_csv(table))
    title = f"Layer contribution: {sweep.summary()}"
    plot = plot_contribution(table, out / "contribution.png", title)
    sweep_html(title, s_base, full, table, plot, out / "report.html", notes, asdict(sweep))
    return s_base, full, table
