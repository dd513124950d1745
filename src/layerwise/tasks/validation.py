"""A task's validation view: runs scored on items carved from the training split, never trained on.

A block selection (`top:K@FILE`), a schedule's importance (`sample:...@FILE`, `growth@FILE`) or
`tune --estimates` read per-block scores that a sweep measured. If that sweep was scored on the
held-out `eval` items, and the runs it selects for are scored on the same items, the selection
has seen the answers it is then judged by. `--score-on validation` scores a run (and so a sweep)
on `eval_n` items of the *training* split instead, drawn with a fixed seed, and takes them out of
every training draw: a split disjoint from the `eval` items, and from what the run trains on.

    task = validation_view(get_task("arithmetic"), n=60)
    task.items("eval", 60, 0)    # 60 training-split problems, the same for every seed
    task.items("train", 1000, 3) # training-split problems without those 60

Tasks whose SFT data is not their items (`sft_examples`), language-modelling text and `--dataset`
tasks (which have their own `--eval-split`) are refused.
"""

from __future__ import annotations

from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import TaskItem, check_split

VALIDATION_SEED = 1_000_003  # never a training seed by accident
SCORE_ON = ("eval", "validation")


class ValidationView:
    """`task` with its `eval` split replaced by `n` training-split items, which training skips."""

    def __init__(self, task: Any, n: int):
        self._task = task
        self._held = task.items("train", n, VALIDATION_SEED)
        self._ids = {it.id for it in self._held}

    def __getattr__(self, name: str) -> Any:  # name, description, score, extract, play, ...
        return getattr(self._task, name)

    @property
    def validation_ids(self) -> set[str]:
        return set(self._ids)

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        check_split(split)
        if split == "eval":
            return self._held[:n]
        drawn = self._task.items("train", n + len(self._ids), seed)
        return [it for it in drawn if it.id not in self._ids][:n]


def validation_view(task: Any, n: int) -> ValidationView:
    kind = getattr(task, "kind", None)
    if kind in ("lm", "dataset") or hasattr(task, "sft_examples"):
        what = {"lm": "the lm task scores perplexity on its own eval text",
                "dataset": "a --dataset run has its own held-out rows (--eval-split, "
                           "--eval-dataset)"}.get(kind, f"task {getattr(task, 'name', '?')!r} "
                                                        "builds its SFT data itself")
        raise LayerwiseError(f"--score-on validation needs a task whose items are its data: {what}")
    return ValidationView(task, n)
