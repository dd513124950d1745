"""Every results table in docs/results traces to kept files: each table script, run on the kept
per-run files, reproduces its committed table byte for byte, and the page quotes that table.
A script whose runs are not kept yet is listed with the reason, and its page must say so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"

# script -> (kept files it reads, committed table, the page that quotes its rows verbatim or None:
# tying.md summarises its table.md in tables of its own)
TRACED = {
    "tying_table.py": ("tying/runs", "tying/table.md", None),
    "groundtruth_table.py": ("groundtruth", "groundtruth/table.md", "groundtruth.md"),
    "groundtruth_policy_table.py": ("groundtruth", "groundtruth/policy.md", "groundtruth.md"),
    "your_data/table.py": ("your_data/runs", "your_data/table.md", "your-data.md"),
    "schedules_table.py": ("schedules/runs", "schedules/table.md", "schedules.md"),
}
# scripts whose runs are not (yet) kept in the repository: the page must say so in these words
PENDING = {
    "growth_table.py": ("growth.md", "not kept in the repository"),
}


def test_every_table_script_is_traced_or_declared_pending():
    scripts = {str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*table.py")}
    assert scripts == set(TRACED) | set(PENDING)
    for page, words in PENDING.values():
        text = " ".join(line.lstrip("> ").strip() for line in (RESULTS / page).read_text()
                        .splitlines())  # as read: quoted and wrapped lines joined
        assert words in text, page


@pytest.mark.parametrize("script", sorted(TRACED))
def test_the_table_regenerates_from_the_kept_files(script, tmp_path):
    kept, table, page = TRACED[script]
    source = RESULTS / kept
    if script == "groundtruth_table.py":  # it writes DEST/table.md itself: run it on a copy
        source = tmp_path / "groundtruth"
        shutil.copytree(RESULTS / kept, source)
    made = subprocess.run([sys.executable, str(RESULTS / script), str(source)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert made == (RESULTS / table).read_text()
    if page is None:
        return
    quoted = (RESULTS / page).read_text()
    for line in made.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            assert line in quoted, line
