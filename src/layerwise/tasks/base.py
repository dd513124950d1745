"""What a task is: items with prompts and SFT targets, one scoring function, and a registry.

A task's `score` is the single place where "is this completion right?" is decided. The RL reward
(`reward_function`) and the evaluation (`layerwise eval`) both call it, so training and evaluation
can never disagree about what counts as correct (the nanochat habit).

A task is a plain object with:
- `name`, `description`, `max_new_tokens` (how long an answer may be when generated);
- `items(split, n, seed)`: `n` `TaskItem`s of the `train` or `eval` split; the two splits are
  disjoint whatever the seeds;
- `score(completion, item) -> float` in [0, 1] (1 = fully correct), and `extract(completion, item)`
  the answer it read from the completion (for the per-item record);
- optionally `sft_examples(split, n, seed)` (prompt, target) pairs, when SFT data is not simply
  (item.prompt, item.target) — e.g. the per-turn expert moves of a multi-turn environment;
- optionally `episodic = True` with `play(generate, item)`: a multi-turn episode driven by a
  `generate(prompts) -> completions` function, returning an `Episode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from layerwise.errors import LayerwiseError

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class TaskItem:
    """One problem: what the model sees, what a correct answer is, and an SFT target."""

    id: str
    prompt: str
    answer: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, str]:
        """A flat row for a `datasets.Dataset` (meta as JSON so every row has the same schema)."""
        return {"item_id": self.id, "prompt": self.prompt, "answer": self.answer,
                "target": self.target, "meta": json.dumps(self.meta, sort_keys=True)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "TaskItem":
        return cls(id=row["item_id"], prompt=row["prompt"], answer=row["answer"],
                   target=row.get("target", ""), meta=json.loads(row.get("meta") or "{}"))


@dataclass
class Episode:
    """The record of one multi-turn episode (decision tasks)."""

    success: bool
    score: float
    turns: list[dict[str, str]]  # [{"prompt": ..., "action": ..., "feedback": ...}, ...]


@runtime_checkable
class Task(Protocol):
    name: str
    description: str
    max_new_tokens: int

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]: ...

    def score(self, completion: str, item: TaskItem) -> float: ...

    def extract(self, completion: str, item: TaskItem) -> str | None: ...


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise LayerwiseError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def sft_examples(task: Task, split: str, n: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, target) pairs for SFT: the task's own method if it has one, else its items."""
    if hasattr(task, "sft_examples"):
        return task.sft_examples(split, n, seed)
    return [(it.prompt, it.target) for it in task.items(split, n, seed)]


def is_correct(score: float) -> bool:
    """Accuracy counts an item as correct only when it is fully right (score 1)."""
    return score >= 1.0 - 1e-9


def call_task(task, method: str, completion: str, item: "TaskItem"):
    """`task.score(...)` / `task.extract(...)`, a failure (a user's task) as one line naming the item."""
    try:
        value = getattr(task, method)(completion, item)
        return float(value) if method == "score" else value
    except LayerwiseError:
        raise
    except Exception as exc:  # noqa: BLE001 - the task's own code
        raise LayerwiseError(f"task {task.name!r}: {method}() failed on item {item.id!r}: "
                             f"{type(exc).__name__}: {exc}") from exc


def reward_function(task: Task) -> Callable[..., list[float]]:
    """A TRL reward `f(completions, **columns) -> list[float]` that is exactly `task.score`.

    The dataset rows carry the item (`item_id`, `prompt`, `answer`, `target`, `meta`), and TRL
    passes every column to the reward, so the reward rebuilds the item and asks the task.
    """

    def reward(completions, item_id, answer, meta, prompts=None, target=None, **_):
        # TRL passes the dataset's `prompt` column as `prompts`, the others under their names.
        out = []
        for i, completion in enumerate(completions):
            if isinstance(completion, list):  # conversational format: the last message's text
                completion = completion[-1]["content"]
            item = TaskItem(id=item_id[i], prompt=prompts[i] if prompts is not None else "", answer=answer[i],
                            target=target[i] if target is not None else "",
                            meta=json.loads(meta[i] or "{}"))
            out.append(call_task(task, "score", completion, item))
        return out

    reward.__name__ = f"{task.name}_reward"
    return reward
