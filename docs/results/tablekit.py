"""What the results-table scripts beside this file share: mean ± sd text and completed runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def mean_sd(values: list[float], fmt: str = "{:.3f}") -> str:
    """'m ± sd' over the values that exist; one value alone; a dash for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def completed_runs(out: Path, arms) -> dict[str, dict[str, dict]]:
    """{arm: {seedN: metrics.json}} of the completed runs under OUT/seedN/ARM/."""
    runs: dict[str, dict[str, dict]] = {}
    for seed_dir in sorted(out.glob("seed*")):
        for arm in arms:
            path = seed_dir / arm / "metrics.json"
            if path.is_file():
                m = json.loads(path.read_text())
                if m.get("status") == "completed":
                    runs.setdefault(arm, {})[seed_dir.name] = m
    return runs
