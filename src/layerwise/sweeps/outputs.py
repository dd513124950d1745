"""Writing a sweep's results: contribution.json / .csv, the C(k) plot and report.html."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from layerwise.fileio import atomic_write_text
from layerwise.reporting.sweep_report import plot_contribution, sweep_html
from layerwise.sweeps.contribution import Contribution, contributions, sweep_notes, to_csv, to_json
from layerwise.sweeps.spec import BASE_LABEL, FULL_LABEL, SweepSpec


def write_sweep_outputs(sweep: SweepSpec, rows: list[dict], out: str | Path,
                        extra_notes: list[str] | None = None
                        ) -> tuple[float, dict[int, float], list[Contribution]]:
    out = Path(out)
    s_base, full, table = contributions(rows)
    notes = list(extra_notes or []) + sweep_notes(rows, s_base, full, table)
    from layerwise.sweeps.store import open_store

    with open_store(out) as store:
        identity, inputs = store.identity(), store.inputs()
    atomic_write_text(out / "contribution.json", to_json(s_base, full, table, asdict(sweep), notes,
                                                         identity, inputs))
    atomic_write_text(out / "contribution.csv", to_csv(table))
    title = f"Layer contribution: {sweep.summary()}"
    plot = plot_contribution(table, out / "contribution.png", title)
    sweep_html(title, s_base, full, table, plot, out / "report.html", notes, asdict(sweep))
    return s_base, full, table


PARTIAL_NOTE = ("partial: {n} completed runs when the sweep was interrupted; C(k) of the "
                "selections they cover only. Rerun the same command to finish the sweep.")


def partial_note(notes: list | None) -> str | None:
    """The partial note of a contribution.json's notes (an interrupted sweep's outputs), or None."""
    return next((str(n) for n in notes or [] if str(n).startswith("partial: ")), None)


def write_partial_outputs(sweep: SweepSpec, out: str | Path) -> int | None:
    """After an interrupted sweep: contribution.* and report.html from the runs completed so far
    (marked partial in their notes), so a sweep spread over several sittings can be read and
    estimated against between them. The finished sweep overwrites them. Returns the number of
    completed runs, or None when there is nothing to show yet (no base run or no full run)."""
    from layerwise.sweeps.store import STORE_NAME, open_store

    if not (Path(out) / STORE_NAME).is_file():
        return None
    with open_store(out) as store:
        rows = [r for r in store.current_runs() if r["status"] == "completed"]
    if not any(r["label"] == BASE_LABEL for r in rows) or \
            not any(r["label"] == FULL_LABEL for r in rows):
        return None
    write_sweep_outputs(sweep, rows, out, [PARTIAL_NOTE.format(n=len(rows))])
    return len(rows)
