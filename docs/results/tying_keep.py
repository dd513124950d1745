"""Keep the figures of finished tying runs in the repository: OUT/seed*/ARM/metrics.json, minus
the per-step training curve, into DEST/seed*/ARM/metrics.json (compact JSON). tying_table.py reads
DEST as it reads OUT, so seeds run in different sittings (out/ does not survive a machine) add up:
    .venv/bin/python docs/results/tying_keep.py out/tying docs/results/tying/runs
    .venv/bin/python docs/results/tying_table.py docs/results/tying/runs > docs/results/tying/table.md
"""

import json
import sys
from pathlib import Path


def main(out: Path, dest: Path) -> None:
    kept = 0
    for metrics in sorted(out.glob("seed*/*/metrics.json")):
        doc = json.loads(metrics.read_text())
        if doc.get("status") != "completed":
            continue
        doc.pop("history", None)  # the training curve: the run's curves.png has it
        target = dest / metrics.parent.parent.name / metrics.parent.name / "metrics.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        kept += 1
    print(f"kept {kept} runs in {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
