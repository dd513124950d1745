"""Keep the figures of finished runs in the repository: every OUT/**/metrics.json of a completed
run, minus the per-step training curve, into the same relative path under DEST (compact JSON).
The table scripts read DEST as they read OUT, so runs made in different sittings (out/ does not
survive a machine) add up:

    .venv/bin/python docs/results/keep_runs.py out/tying docs/results/tying/runs
    .venv/bin/python docs/results/keep_runs.py out/schedules/runs docs/results/schedules/runs
"""

import json
import sys
from pathlib import Path


def keep(out: Path, dest: Path) -> int:
    kept = 0
    for metrics in sorted(out.rglob("metrics.json")):
        doc = json.loads(metrics.read_text())
        if doc.get("status") != "completed":
            continue
        doc.pop("history", None)  # the training curve: the run's curves.png has it
        target = dest / metrics.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        kept += 1
    return kept


if __name__ == "__main__":
    dest = Path(sys.argv[2])
    print(f"kept {keep(Path(sys.argv[1]), dest)} runs in {dest}")
