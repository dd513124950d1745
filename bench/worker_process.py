"""One benchmark configuration in its own process (so one's peak memory never hides another's).

The bench scripts call themselves with `--worker ...`; the worker prints one JSON line last.
"""

from __future__ import annotations

import json
import subprocess
import sys


def run_worker(script: str, args: list[str], model: str | None, label: str) -> dict:
    """Run `script --worker ARGS [--model M]` and return the JSON it printed; exit on failure."""
    cmd = [sys.executable, script, "--worker", *args] + (["--model", model] if model else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
