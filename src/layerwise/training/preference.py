"""Preference pairs for DPO, from a user's file or from the model's own samples.

Without pair data, each train prompt is sampled `dpo_samples` times at the training temperature
and every completion is scored by the task. A prompt with at least one correct and one incorrect
sample gives a pair (chosen = a correct sample, rejected = an incorrect one). When none of the
samples is correct, the task's reference answer stands in as the chosen side, so that weak models
still get pairs; the report counts how many pairs came from each source.
"""

from __future__ import annotations

import random

import torch

from layerwise.data.records import load_records
from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation import generate_texts
from layerwise.tasks.base import Task, is_correct
from layerwise.training.config import TrainConfig

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def load_pairs(path: str) -> list[dict]:
    return [{k: str(r[k]) for k in PAIR_FIELDS} for r in load_records(path, PAIR_FIELDS)]


def self_sampled_pairs(model, tokenizer, task: Task, config: TrainConfig) -> tuple[list[dict], dict]:
    if getattr(task, "episodic", False):
        raise LayerwiseError(f"task {task.name!r} is multi-turn: DPO needs --pairs FILE.jsonl")
    n_prompts = min(config.n_train, config.steps * config.batch_size * config.grad_accum)
    items = task.items("train", n_prompts, config.seed)
    k = config.dpo_samples
    torch.manual_seed(config.seed)
    texts = generate_texts(model, tokenizer, [it.prompt for it in items for _ in range(k)],
                           config.max_completion_length or task.max_new_tokens,
                           batch_size=config.eval_batch_size, do_sample=True,
                           temperature=config.temperature)
    rng = random.Random(config.seed)
    pairs, own, reference, skipped = [], 0, 0, 0
    for i, item in enumerate(items):
        samples = texts[i * k:(i + 1) * k]
        good = [s for s in samples if is_correct(task.score(s, item))]
        bad = [s for s in samples if not is_correct(task.score(s, item))]
        if not bad:
            skipped += 1  # nothing to prefer against: the model already gets it right
            continue
        if good:
            chosen, own = rng.choice(good), own + 1
        elif item.target:
            chosen, reference = item.target, reference + 1
        else:
            skipped += 1
            continue
        pairs.append({"prompt": item.prompt, "chosen": chosen, "rejected": rng.choice(bad)})
    report = {"prompts": len(items), "samples_per_prompt": k, "pairs": len(pairs),
              "pairs_with_own_correct_sample": own, "pairs_with_reference_as_chosen": reference,
              "prompts_skipped": skipped}
    return pairs, report
