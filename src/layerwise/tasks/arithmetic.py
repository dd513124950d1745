"""`arithmetic`: procedurally generated integer arithmetic, the embedded default task.

Nothing is downloaded: problems such as `37 + 58 - 12` are generated from a seed, with difficulty
knobs `digits` (size of each operand), `ops` (which of + - * may appear) and `steps` (how many
operations per problem). The default, one-digit `+ - *` with one operation, is what a 135M model
gets right about a third of the time: room to improve, and rewards that vary for RL. An item's split is decided by a stable hash of the problem text, so the
train and eval splits are disjoint whatever seeds draw from them.

The answer is the first integer the model writes after the prompt; score 1 if it equals the exact
value, else 0. The SFT target is the value followed by a newline.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import TaskItem, check_split
from layerwise.tasks.numbers import first_number, same_number

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str]] = set()
EVAL_SHARE = 5  # one problem in five belongs to the eval split
VALID_OPS = "+-*"


def split_of(problem: str) -> str:
    digest = hashlib.blake2b(problem.encode(), digest_size=8).digest()
    return "eval" if int.from_bytes(digest, "big") % EVAL_SHARE == 0 else "train"


@dataclass
class ArithmeticTask:
    digits: int = 1
    ops: str = "+-*"
    steps: int = 1
    name: str = "arithmetic"
    max_new_tokens: int = 8

    def __post_init__(self):
        if not 1 <= self.digits <= 9:
            raise LayerwiseError(f"arithmetic digits={self.digits}: must be 1..9")
        if not 1 <= self.steps <= 8:
            raise LayerwiseError(f"arithmetic steps={self.steps}: must be 1..8")
        self.ops = str(self.ops)
        bad = sorted(set(self.ops) - set(VALID_OPS))
        if bad or not self.ops:
            raise LayerwiseError(f"arithmetic ops={self.ops!r}: use one or more of {VALID_OPS!r}")
        self.description = (f"integer arithmetic: {self.steps} operation(s) from '{self.ops}' on "
                            f"{self.digits}-digit numbers")

    def _problem(self, rng: random.Random) -> str:
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        hi = 10 ** self.digits - 1
        parts = [str(rng.randint(lo, hi))]
        for _ in range(self.steps):
            parts += [rng.choice(self.ops), str(rng.randint(lo, hi))]
        return " ".join(parts)

    def _item(self, problem: str) -> TaskItem:
        value = eval(problem, {"__builtins__": {}})  # our own generated digits and + - * only
        return TaskItem(id=problem, prompt=f"Question: What is {problem}?\nAnswer:",
                        answer=str(value), target=f" {value}\n", meta={})

    def _space(self) -> int:
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        operands = 10 ** self.digits - lo
        return operands ** (self.steps + 1) * len(set(self.ops)) ** self.steps

    def _enumerate(self) -> list[str]:
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        numbers = [str(v) for v in range(lo, 10 ** self.digits)]
        problems = list(numbers)
        for _ in range(self.steps):
            problems = [f"{p} {op} {v}" for p in problems for op in sorted(set(self.ops))
                        for v in numbers]
        return problems

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        """`n` distinct problems of `split`; all of them (with a warning) if fewer exist."""
        check_split(split)
        rng = random.Random(f"arithmetic-{split}-{seed}")
        if self._space() <= 50_000:  # small spaces: enumerate, so every problem can be drawn
            pool = [p for p in self._enumerate() if split_of(p) == split]
            rng.shuffle(pool)
            if len(pool) < n and (self.description, split) not in _WARNED:
                _WARNED.add((self.description, split))  # once per process, not once per run
                log.warning("arithmetic (%s) has only %d distinct %s problems; using all of them",
                            self.description, len(pool), split)
            return [self._item(p) for p in pool[:n]]
        seen: dict[str, TaskItem] = {}
        while len(seen) < n:
            problem = self._problem(rng)
            if problem not in seen and split_of(problem) == split:
                seen[problem] = self._item(problem)
        return list(seen.values())

    def extract(self, completion: str, item: TaskItem) -> str | None:
        return first_number(completion)

    def score(self, completion: str, item: TaskItem) -> float:
        return 1.0 if same_number(self.extract(completion, item), item.answer) else 0.0


def make_task(digits: int = 1, ops: str = "+-*", steps: int = 1,
              max_new_tokens: int = 8) -> ArithmeticTask:
    """Arithmetic problems; `digits` per operand, `ops` from '+-*', `steps` operations each."""
    return ArithmeticTask(digits=digits, ops=ops, steps=steps, max_new_tokens=max_new_tokens)
