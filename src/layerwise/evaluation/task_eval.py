"""Greedy accuracy of a model on a task's held-out items, with a record per item.

The score of each completion comes from the task's own `score` (the same function the RL reward
calls). Episodic tasks (`decision`) play a whole multi-turn episode per item. The records hold
everything needed to audit a number: prompt, completion, extracted answer, reference, score.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation import generate_texts
from layerwise.fileio import atomic_write_text
from layerwise.tasks.base import Task, is_correct


@dataclass
class TaskEvaluation:
    task: str
    split: str
    n: int
    seed: int
    accuracy: float
    mean_score: float
    seconds: float
    records: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("records")
        return out


def evaluate_task(model, tokenizer, task: Task, n: int = 100, seed: int = 0, split: str = "eval",
                  batch_size: int = 16, max_new_tokens: int | None = None) -> TaskEvaluation:
    """Greedy accuracy on `n` items of `split` (the eval split unless asked otherwise)."""
    if n < 1:
        raise LayerwiseError(f"--n {n}: evaluate at least one item")
    items = task.items(split, n, seed)
    if not items:
        raise LayerwiseError(f"task {task.name!r} has no {split} items")
    budget = max_new_tokens or task.max_new_tokens
    start = time.perf_counter()
    records = []
    if getattr(task, "episodic", False):
        def generate(prompts):
            return generate_texts(model, tokenizer, prompts, budget, batch_size)

        for item in items:
            ep = task.play(generate, item)
            records.append({"id": item.id, "prompt": item.prompt, "answer": item.answer,
                            "turns": ep.turns, "score": ep.score, "correct": bool(ep.success)})
    else:
        completions = generate_texts(model, tokenizer, [it.prompt for it in items], budget,
                                     batch_size)
        for item, completion in zip(items, completions):
            score = float(task.score(completion, item))
            records.append({"id": item.id, "prompt": item.prompt, "completion": completion,
                            "extracted": task.extract(completion, item), "answer": item.answer,
                            "score": score, "correct": is_correct(score)})
    seconds = time.perf_counter() - start
    accuracy = sum(r["correct"] for r in records) / len(records)
    mean_score = sum(r["score"] for r in records) / len(records)
    return TaskEvaluation(task=task.name, split=split, n=len(records), seed=seed,
                          accuracy=accuracy, mean_score=mean_score, seconds=seconds,
                          records=records)


def write_records(evaluation: TaskEvaluation, path: str | Path) -> Path:
    """The per-item records as JSONL (atomically written)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in evaluation.records]
    return atomic_write_text(path, "\n".join(lines) + "\n")
