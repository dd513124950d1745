"""`gsm8k`: grade-school math word problems with a numeric answer after `####`.

Data comes from JSONL files with `question` and `answer` fields (the official format; the shared
data folder holds train and test) or from the Hugging Face dataset (`hf:openai/gsm8k:main@train`).
The train split reads `train`, the eval split reads `test`: the official splits are disjoint.
Without options the files `../shared/data/gsm8k_{train,test}.jsonl` are used when they exist
beside the working directory, else the Hub dataset.

The model's answer is the number after its own `####` if it wrote one, else the last number it
wrote; score 1 if it equals the reference. The SFT target is the reference solution with the
calculator annotations (`<<3*4=12>>`) removed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from layerwise.data.records import load_records
from layerwise.tasks.base import TaskItem, check_split
from layerwise.tasks.numbers import last_number, same_number

FIELDS = ("question", "answer")
CALCULATOR = re.compile(r"<<[^>]*>>")
SHARED_DIR = Path("../shared/data")


def _default(split_file: str, hf_split: str) -> str:
    """The shared data file (beside the working directory or the checkout), as an absolute path
    so a sweep that stores it still finds it from another directory; else the Hub dataset."""
    from layerwise.tasks.lm import shared_data_candidates

    for path in shared_data_candidates(split_file):
        if path.is_file():
            return str(path)
    return f"hf:openai/gsm8k:main@{hf_split}"


def reference_answer(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


@dataclass
class GSM8KTask:
    train: str = field(default_factory=lambda: _default("gsm8k_train.jsonl", "train"))
    test: str = field(default_factory=lambda: _default("gsm8k_test.jsonl", "test"))
    name: str = "gsm8k"
    max_new_tokens: int = 256
    description: str = "GSM8K grade-school math, numeric answer after ####"

    def __post_init__(self):
        self._cache: dict[str, list[TaskItem]] = {}

    def _all(self, split: str) -> list[TaskItem]:
        if split not in self._cache:
            source = self.train if split == "train" else self.test
            items = []
            for i, rec in enumerate(load_records(source, FIELDS)):
                solution = CALCULATOR.sub("", str(rec["answer"])).strip()
                items.append(TaskItem(
                    id=f"{split}-{i}", prompt=f"Question: {str(rec['question']).strip()}\nAnswer:",
                    answer=reference_answer(solution), target=" " + solution + "\n"))
            self._cache[split] = items
        return self._cache[split]

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        check_split(split)
        pool = list(self._all(split))
        random.Random(f"gsm8k-{split}-{seed}").shuffle(pool)
        return pool[:n]

    def extract(self, completion: str, item: TaskItem) -> str | None:
        if "####" in completion:
            after = completion.split("####", 1)[1]
            # The answer ends at the line's end; a model that keeps talking must not shift it.
            return last_number(after.strip().splitlines()[0] if after.strip() else "")
        return last_number(completion)

    def score(self, completion: str, item: TaskItem) -> float:
        return 1.0 if same_number(self.extract(completion, item), item.answer) else 0.0


def make_task(train: str | None = None, test: str | None = None,
              max_new_tokens: int = 256) -> GSM8KTask:
    """GSM8K from JSONL files or an HF dataset (`train`, `test`: path or hf:NAME[:CONFIG][@SPLIT])."""
    task = GSM8KTask(max_new_tokens=max_new_tokens)
    if train:
        task.train = train
    if test:
        task.test = test
    return task
