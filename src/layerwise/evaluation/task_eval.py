"""How well a model does a task on held-out data: greedy accuracy, or a loss for `lm`.

The score of each completion comes from the task's own `score` (the same function the RL reward
calls). Episodic tasks (`decision`) play a whole multi-turn episode per item. The records hold
everything needed to audit a number: prompt, completion, extracted answer, reference, score.
A task that scores itself (`lm`: held-out next-token loss) has an `evaluate` method, and
`evaluate_task` hands it the model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import call_task
from layerwise.evaluation.generation import generate_texts
from layerwise.fileio import atomic_write_text
from layerwise.tasks.base import Task, is_correct


@dataclass
class TaskEvaluation:
    """One scoring: generative tasks fill `accuracy` and `mean_score`, `lm` fills `loss`
    (mean next-token cross-entropy, nats) and `perplexity` (exp of it); a user's dataset fills
    what its type gives (tasks/dataset.py) and names its headline in `primary`."""

    task: str
    split: str
    n: int
    seed: int
    accuracy: float | None
    mean_score: float | None
    seconds: float
    records: list[dict] = field(default_factory=list)
    loss: float | None = None
    perplexity: float | None = None
    preference_accuracy: float | None = None
    preference_margin: float | None = None
    primary: str | None = None  # the field that is S; None: accuracy, else the loss (lm)
    reward_means: dict | None = None  # several --reward: each one's mean (S is their weighted sum)

    @property
    def score(self) -> float | None:
        """The headline number, S in C(k): `primary`, else accuracy, or the held-out loss."""
        if self.primary:
            return getattr(self, self.primary)
        return self.accuracy if self.accuracy is not None else self.loss

    @property
    def higher_is_better(self) -> bool:
        return self.primary != "loss" if self.primary else self.loss is None

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("records")
        out.update(score=self.score, higher_is_better=self.higher_is_better)
        # A diverged model's loss or perplexity is inf or nan, which strict JSON cannot hold.
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in out.items()}


def evaluate_task(model, tokenizer, task: Task, n: int = 100, seed: int = 0, split: str = "eval",
                  batch_size: int = 16, max_new_tokens: int | None = None,
                  max_length: int | None = None) -> TaskEvaluation:
    """Greedy accuracy on `n` items of `split` (the eval split unless asked otherwise).

    A task with its own `evaluate` (the `lm` task's held-out loss) is scored by it instead.
    """
    if n < 1:
        raise LayerwiseError(f"--n {n}: evaluate at least one item")
    if callable(getattr(task, "evaluate", None)):
        if getattr(task, "kind", None) == "dataset":  # held-out rows cut as training cuts them
            if max_new_tokens:
                task.max_new_tokens = max_new_tokens
            return task.evaluate(model, tokenizer, n, seed=seed, batch_size=batch_size,
                                 split=split, max_length=max_length)
        return task.evaluate(model, tokenizer, n, seed=seed, batch_size=batch_size, split=split)
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
            score = call_task(task, "score", completion, item)
            records.append({"id": item.id, "prompt": item.prompt, "completion": completion,
                            "extracted": call_task(task, "extract", completion, item),
                            "answer": item.answer,
                            "score": score, "correct": is_correct(score)})
    seconds = time.perf_counter() - start
    accuracy = sum(r["correct"] for r in records) / len(records)
    mean_score = sum(r["score"] for r in records) / len(records)
    return TaskEvaluation(task=task.name, split=split, n=len(records), seed=seed,
                          accuracy=accuracy, mean_score=mean_score, seconds=seconds,
                          records=records)


def write_records(evaluation: TaskEvaluation, path: str | Path) -> Path:
    """The per-item records as JSONL (atomically written)."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in evaluation.records]
    return atomic_write_text(path, "".join(lines))
