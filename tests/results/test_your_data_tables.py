"""docs/results/your-data.md traces to kept files: its table script, run on the kept runs,
reproduces the committed table byte for byte, and the page quotes that table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "docs" / "results" / "your_data"


def test_the_table_regenerates_from_the_kept_runs():
    made = subprocess.run([sys.executable, str(HERE / "table.py"), str(HERE / "runs")],
                          capture_output=True, text=True, check=True).stdout
    assert made == (HERE / "table.md").read_text()
    page = (ROOT / "docs" / "results" / "your-data.md").read_text()
    for line in made.splitlines():
        if line.startswith("|"):
            assert line in page, line
