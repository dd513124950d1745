"""Keep the figures of finished your-data runs in the repository (small JSON, no weights):
OUT/{sft-*,grpo-*}/metrics.json minus the per-step curve, OUT/tune-seed*/tune.json with its
run's metrics.json, and the shared base scoring, into DEST. table.py reads DEST.

    .venv/bin/python docs/results/your_data/keep.py out/your-data docs/results/your_data/runs
"""

import json
import sys
from pathlib import Path


def _compact(doc: dict) -> str:
    doc.pop("history", None)  # the training curve: the run's curves.png has it
    return json.dumps(doc, separators=(",", ":")) + "\n"


def main(out: Path, dest: Path) -> None:
    kept = 0
    dest.mkdir(parents=True, exist_ok=True)
    if (out / "sft-base.json").is_file():
        (dest / "sft-base.json").write_text((out / "sft-base.json").read_text())
    for metrics in sorted([*out.glob("sft-*/metrics.json"), *out.glob("grpo-*/metrics.json"),
                           *out.glob("tune-seed*/run/metrics.json")]):
        doc = json.loads(metrics.read_text())
        if doc.get("status") != "completed":
            continue
        name = metrics.parent.name if metrics.parent.name != "run" else metrics.parent.parent.name
        (dest / f"{name}.json").write_text(_compact(doc))
        kept += 1
    for tune in sorted(out.glob("tune-seed*/tune.json")):
        (dest / f"{tune.parent.name}-tune.json").write_text(tune.read_text())
    print(f"kept {kept} runs in {dest}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
