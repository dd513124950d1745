"""GSM8K in TRL's conversational prompt-completion form, made from ../shared/data (never kept).

Each row: `prompt` = [user: the question], `completion` = [assistant: the reference solution
without calculator annotations, ending in "#### N"], `solution` = N (what `--reward math`
checks a completion against). Train rows come from gsm8k_train.jsonl, held-out rows from
gsm8k_test.jsonl (the official splits are disjoint).

    .venv/bin/python docs/results/your_data/make_gsm8k_chat.py out/your-data/data
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
CALCULATOR = re.compile(r"<<[^>]*>>")


def convert(source: Path, dest: Path) -> int:
    rows = 0
    with open(source, encoding="utf-8") as src, open(dest, "w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            rec = json.loads(line)
            solution = CALCULATOR.sub("", rec["answer"]).strip()
            final = solution.rsplit("####", 1)[-1].strip().replace(",", "")
            out.write(json.dumps({
                "prompt": [{"role": "user", "content": rec["question"].strip()}],
                "completion": [{"role": "assistant", "content": solution}],
                "solution": final}) + "\n")
            rows += 1
    return rows


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        n = convert(SHARED / f"gsm8k_{split}.jsonl", out / f"gsm8k_chat_{split}.jsonl")
        print(f"{out / f'gsm8k_chat_{split}.jsonl'}: {n} rows")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/your-data/data")
