"""`dataset`: the user's own data as a task, in any of TRL's dataset types (`--dataset SPEC`).

`--dataset FILE` is this task with option `path=FILE` (training/config.py folds the flags
`--columns`, `--reward`, `--eval-dataset`, `--eval-split`, `--chat-template`, `--loss-on` into
its options), so train, sweep, tune, estimate and eval take a dataset through the one path every
task takes.

Held-out rows: `--eval-dataset SPEC`, else a deterministic `--eval-split` (default 5%) of the
file: a fixed permutation (seed 0, whatever the training seed) puts the first share of rows in
the eval split and the rest in training, so the two never overlap.

The score S (C(k), sweeps, tune, estimate), by what the data and flags give (docs/data.md):

| data | S | also reported |
|---|---|---|
| with `--reward` (prompt-only, prompt-completion) | mean reward on greedy completions (the weighted sum) | accuracy (share of rewards = 1) for one built-in 0/1 reward; each reward's mean when several; completion loss for prompt-completion |
| prompt-completion or language modelling, no reward | held-out completion loss (nats, lower is better) | perplexity |
| preference | preference accuracy: log p(chosen) > log p(rejected) | mean margin |
| unpaired preference | mean log p per token, desirable minus undesirable | |
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from layerwise.data.chat import LOSS_ON, prompt_text, read_chat_template, sft_tokens
from layerwise.data.formats import Detected, check_rows, detect
from layerwise.data.user_data import load_user_dataset
from layerwise.errors import LayerwiseError
from layerwise.evaluation.task_eval import TaskEvaluation
from layerwise.tasks.base import TaskItem, check_split

log = logging.getLogger(__name__)
SPLIT_SEED = 0  # the eval split is the same rows whatever the training seed
DEFAULT_EVAL_SPLIT = "5%"
SAMPLE_ROWS = 4  # rows a reward is tried on before any weights load
S_NAMES = {"loss": "held-out loss", "mean_score": "mean reward",
           "preference_accuracy": "preference accuracy", "preference_margin": "preference margin"}


def parse_eval_split(text: str | int | float, rows: int) -> int:
    """How many rows `--eval-split` takes from `rows` ("5%" or a count); at least one remains."""
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            share = float(raw[:-1]) / 100
            if not 0 < share < 1:
                raise ValueError
            n = math.ceil(share * rows)
        else:
            n = int(raw)
            if n < 1:
                raise ValueError
    except ValueError:
        raise LayerwiseError(f"--eval-split {text!r}: expected a share such as 5% or a row count "
                             ">= 1") from None
    if n >= rows:
        raise LayerwiseError(f"--eval-split {raw}: the dataset has {rows} rows, too few to hold "
                             f"out {n} and train on the rest (use --eval-dataset or more rows)")
    return n


def _split_names(rewards: str | None) -> list[str]:
    return [r.strip() for r in (rewards or "").split(",") if r.strip()]


@dataclass
class DatasetTask:
    path: str
    columns: str | None = None
    reward: str | None = None  # comma-separated --reward specs
    eval_dataset: str | None = None
    eval_split: str = DEFAULT_EVAL_SPLIT
    chat_template: str | None = None
    loss_on: str = "completion"
    max_new_tokens: int = 256
    name: str = "dataset"
    kind: str = "dataset"
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _sft_cache: dict = field(default_factory=dict, init=False, repr=False)
    _checked: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self):
        if self.loss_on not in LOSS_ON:
            raise LayerwiseError(f"--loss-on {self.loss_on!r}; valid: {', '.join(LOSS_ON)}")
        self.template = read_chat_template(self.chat_template) if self.chat_template else None
        import numpy as np

        full = load_user_dataset(self.path, self.columns)
        self.detected: Detected = detect(full, self.path, content=False)
        if self.eval_dataset:
            held = load_user_dataset(self.eval_dataset, self.columns)
            other = detect(held, self.eval_dataset, content=False)
            if (other.type, other.conversational) != (self.detected.type, self.detected.conversational):
                raise LayerwiseError(f"--eval-dataset {self.eval_dataset} is {other.describe()}; "
                                     f"the training data is {self.detected.describe()}")
            self._sources = {"train": (full, np.arange(len(full))), "eval": (held, np.arange(len(held)))}
        else:
            n_eval = parse_eval_split(self.eval_split, len(full))
            perm = np.random.default_rng(SPLIT_SEED).permutation(len(full))
            # index arrays, not Dataset.select over the whole file (which costs ~100 MB per
            # million rows): a run selects only the rows it reads
            self._sources = {"train": (full, perm[n_eval:]), "eval": (full, perm[:n_eval])}
        self.rewards = self._load_rewards()
        self.higher_is_better = self.primary != "loss"
        self.description = (f"{self.path}: {self.detected.describe()}, {self.split_size('train')} "
                            f"train / {self.split_size('eval')} held-out rows; S = {self.primary}")

    # ---- what the data is ------------------------------------------------------------------
    @property
    def conversational(self) -> bool:
        return self.detected.conversational

    @property
    def primary(self) -> str:
        if self.rewards:
            return "mean_score"
        return {"preference": "preference_accuracy",
                "unpaired-preference": "preference_margin"}.get(self.detected.type, "loss")

    def _load_rewards(self):
        names = _split_names(self.reward)
        if not names:
            return []
        from layerwise.tasks.rewards import check_rewards, parse_reward_specs

        if self.detected.type not in ("prompt-only", "prompt-completion"):
            raise LayerwiseError(f"--reward scores completions of a prompt; {self.path} is "
                                 f"{self.detected.describe()}, which has no prompt to complete")
        specs = parse_reward_specs(names)
        check_rewards(specs, self.sample_rows(SAMPLE_ROWS))
        return specs

    def sample_rows(self, n: int) -> list[dict]:
        return list(self.rows("train", n, 0))

    def split_size(self, split: str) -> int:
        check_split(split)
        return len(self._sources[split][1])

    def bind(self, tokenizer) -> None:
        """The tokenizer whose chat template renders the conversations (--chat-template wins)."""
        if self.template is not None:
            tokenizer.chat_template = self.template
        if self.conversational and not getattr(tokenizer, "chat_template", None):
            raise LayerwiseError(f"{self.path} is conversational and the model's tokenizer has no "
                                 "chat template: give one with --chat-template FILE.jinja")
        self._tokenizer = tokenizer

    def rows(self, split: str, n: int, seed: int):
        """`n` rows of `split` as a `datasets.Dataset`: train drawn by the seed, eval the first n."""
        import numpy as np

        check_split(split)
        ds, index = self._sources[split]
        take = min(n, len(index))
        # eval: the first rows of the split; train: a seed-drawn sample (not Dataset.shuffle,
        # which writes a whole-file index to the cache)
        chosen = index[:take] if split == "eval" else index[
            np.random.default_rng(seed).permutation(len(index))[:take]]
        key = (split, take, seed if split == "train" else None)
        if key not in self._checked:  # the messages of every row a run reads, once
            check_rows(ds.select(chosen), self.detected, self.eval_dataset if split == "eval"
                       and self.eval_dataset else self.path, index=chosen)
            self._checked.add(key)
        return ds.select(chosen)

    # ---- the Task protocol (prompt items, for generation and rewards) ---------------------
    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        if "prompt" not in self.detected.columns:
            raise LayerwiseError(f"{self.path} is {self.detected.describe()}: it has no prompts "
                                 "to sample (use --method sft, or data with a prompt column)")
        out = []
        for i, row in enumerate(self.rows(split, n, seed)):
            prompt = self._render(row["prompt"])
            reference = _reference_text(row)
            out.append(TaskItem(id=f"{split}-{i}", prompt=prompt, answer=reference or "",
                                target=_completion_text(row.get("completion")),
                                meta={"row": _jsonable(row)}))
        return out

    def _render(self, prompt) -> str:
        if isinstance(prompt, list):
            if self._tokenizer is None:
                raise LayerwiseError("internal: a conversational dataset task was not bound to a "
                                     "tokenizer before rendering prompts")
            return prompt_text(prompt, self._tokenizer)
        return prompt

    def score(self, completion: str, item: TaskItem) -> float:
        if not self.rewards:
            raise LayerwiseError(f"{self.path}: scoring a completion needs --reward (built-in: "
                                 "math, exact, contains, or FILE.py:FUNCTION)")
        from layerwise.tasks.rewards import score_completions

        row = item.meta["row"]
        value = score_completions(self.rewards, [self._as_completion(completion)], [row])[0]
        return 0.0 if value is None or math.isnan(value) else float(value)

    def extract(self, completion: str, item: TaskItem) -> str | None:
        return completion.strip()

    def _as_completion(self, text: str):
        return [{"role": "assistant", "content": text}] if self.conversational else text

    # ---- what the trainers get ------------------------------------------------------------
    def sft_dataset(self, tokenizer, n: int, seed: int, max_length: int):
        """Pre-tokenized {"input_ids", "labels"} rows and how many were truncated."""
        from datasets import Dataset

        if self.detected.type not in ("language-modelling", "language-modelling:messages",
                                      "prompt-completion"):
            raise LayerwiseError(f"internal: SFT on {self.detected.describe()}")
        self.bind(tokenizer)
        from layerwise.tasks.lm import tokenizer_fingerprint

        # the run's check tokenized them with a tokenizer loaded alone: the same one, another object
        key = (tokenizer_fingerprint(tokenizer), tokenizer.chat_template, n, seed, max_length)
        if key in self._sft_cache:
            return self._sft_cache[key]
        tokens = [sft_tokens(r, tokenizer, self.loss_on) for r in self.rows("train", n, seed)]
        kept, truncated = truncate(tokens, max_length)
        if not kept:
            raise LayerwiseError(f"{self.path}: every one of the {len(tokens)} training rows is "
                                 f"longer than --max-length {max_length} with no loss-carrying "
                                 "token left after truncation; raise --max-length")
        self._sft_cache[key] = (Dataset.from_list(kept), {
            "rows": len(tokens), "truncated": truncated,
            "dropped_no_loss_tokens": len(tokens) - len(kept)})
        return self._sft_cache[key]

    def reward_funcs(self):
        from layerwise.tasks.rewards import reward_funcs, reward_weights

        return reward_funcs(self.rewards), reward_weights(self.rewards)

    def rl_dataset(self, n: int, seed: int):
        """TRL's rows as they are: the prompt (conversational or text) and every other column,
        which GRPOTrainer/RLOOTrainer hand to the reward functions by name. TRL withholds the
        `completion` column from rewards: without another reference column, its text is added
        as `reference` (as the held-out scoring does, tasks/rewards.py:reward_rows)."""
        from layerwise.tasks.rewards import ADDED_REFERENCE, REFERENCE_COLUMNS, completion_text

        ds = self.rows("train", n, seed)
        if "completion" in ds.column_names and not any(c in ds.column_names for c in REFERENCE_COLUMNS):
            ds = ds.map(lambda row: {ADDED_REFERENCE: completion_text(row["completion"])})
        return ds

    def preference_dataset(self, n: int, seed: int, unpaired: bool):
        ds = self.rows("train", n, seed)
        if unpaired and self.detected.type == "preference":
            from trl.data_utils import maybe_extract_prompt, unpair_preference_dataset

            if not self.detected.explicit_prompt:
                ds = ds.map(maybe_extract_prompt)
            ds = unpair_preference_dataset(ds)
        return ds

    def first_example(self, method_is_sft: bool, seed: int = 0) -> list[str]:
        """The first training row exactly as the model will see it (SFT: the token ids decoded,
        the loss-carrying spans in [[ ]]; RL: the rendered prompt) — `train --dry-run`."""
        from layerwise.data.chat import show_example

        tok = self._tokenizer
        row = self.rows("train", 1, seed)[0]
        if method_is_sft and "prompt" not in row or method_is_sft and "completion" in row:
            tokens = sft_tokens(row, tok, self.loss_on)
            carrying = sum(label != -100 for label in tokens["labels"])
            head = (f"first training example, {len(tokens['input_ids'])} tokens, {carrying} carry "
                    f"loss (--loss-on {self.loss_on}), shown between [[ ]]:")
            return [head, *show_example(tokens, tok).splitlines()]
        if "prompt" in row:
            prompt = self._render(row["prompt"])
            return [f"first training prompt ({len(tok(prompt, add_special_tokens=not self.conversational)['input_ids'])}"
                    " tokens), as the model is asked it:", *prompt.splitlines()]
        return [f"first training row: {_jsonable(row)}"]

    # ---- the held-out score ---------------------------------------------------------------
    def evaluate(self, model, tokenizer, n: int, seed: int = 0, batch_size: int = 8,
                 split: str = "eval", max_length: int | None = None) -> TaskEvaluation:
        from layerwise.evaluation.generation import generate_texts
        from layerwise.evaluation.likelihood import completion_loss

        self.bind(tokenizer)
        start = time.perf_counter()
        rows = list(self.rows(split, n, 0 if split == "eval" else seed))
        ev = TaskEvaluation(task=self.name, split=split, n=len(rows), seed=seed, accuracy=None,
                            mean_score=None, seconds=0.0, primary=self.primary)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kind = self.detected.type
        if kind in ("language-modelling", "language-modelling:messages", "prompt-completion"):
            tokens = [sft_tokens(r, tokenizer, self.loss_on) for r in rows]
            tokens, _ = truncate(tokens, max_length) if max_length else (tokens, 0)
            ev.loss = completion_loss(model, tokens, pad, batch_size)
            ev.perplexity = math.exp(ev.loss) if ev.loss < 700 else math.inf
        if kind in ("preference", "unpaired-preference"):
            self._preference(model, tokenizer, rows, ev, pad, batch_size)
        if self.rewards:
            from layerwise.tasks.rewards import score_completions

            prompts = [self._render(r["prompt"]) for r in rows]
            texts = generate_texts(model, tokenizer, prompts, self.max_new_tokens, batch_size,
                                   add_special_tokens=not self.conversational)
            completions = [self._as_completion(t) for t in texts]
            values = score_completions(self.rewards, completions, rows)
            if len(self.rewards) > 1:  # each reward's own mean, beside the weighted sum S
                ev.reward_means = {}
                for spec in self.rewards:  # unweighted, as TRL logs rewards/<name>/mean
                    alone = dataclasses.replace(spec, weight=1.0)
                    own = [v for v in score_completions([alone], completions, rows) if not math.isnan(v)]
                    ev.reward_means[spec.metric_name] = sum(own) / len(own) if own else None
            scores = [0.0 if v is None or math.isnan(v) else float(v) for v in values]
            ev.mean_score = sum(scores) / len(scores)
            if self._binary_rewards():
                ev.accuracy = sum(s >= 1 - 1e-9 for s in scores) / len(scores)
            ev.records = [{"id": f"{split}-{i}", "prompt": p, "completion": t, "score": s,
                           "correct": s >= 1 - 1e-9, "reference": _reference_text(r)}
                          for i, (p, t, s, r) in enumerate(zip(prompts, texts, scores, rows))]
        ev.seconds = time.perf_counter() - start
        return ev

    def _binary_rewards(self) -> bool:
        spec = self.rewards[0] if len(self.rewards) == 1 else None
        return bool(spec and spec.builtin and spec.builtin.binary and spec.weight == 1.0)

    def _preference(self, model, tokenizer, rows, ev, pad, batch_size) -> None:
        from trl.data_utils import maybe_extract_prompt

        from layerwise.evaluation.likelihood import token_logprob_sums

        if self.detected.type == "preference":
            rows = [maybe_extract_prompt(dict(r)) for r in rows]
            chosen = [sft_tokens({"prompt": r["prompt"], "completion": r["chosen"]}, tokenizer) for r in rows]
            rejected = [sft_tokens({"prompt": r["prompt"], "completion": r["rejected"]}, tokenizer) for r in rows]
            a = token_logprob_sums(model, chosen, pad, batch_size)
            b = token_logprob_sums(model, rejected, pad, batch_size)
            margins = [x[0] - y[0] for x, y in zip(a, b)]
            ev.preference_accuracy = sum(m > 0 for m in margins) / len(margins)
            ev.preference_margin = sum(margins) / len(margins)
        else:
            tokens = [sft_tokens({"prompt": r["prompt"], "completion": r["completion"]}, tokenizer) for r in rows]
            scores = token_logprob_sums(model, tokens, pad, batch_size)
            per_token = [s / max(c, 1) for s, c in scores]
            good = [p for p, r in zip(per_token, rows) if r["label"]]
            bad = [p for p, r in zip(per_token, rows) if not r["label"]]
            if not good or not bad:
                raise LayerwiseError(f"{self.path}: the held-out rows need desirable and undesirable "
                                     f"examples (got {len(good)} and {len(bad)}); use more rows or "
                                     "a larger --eval-split")
            ev.preference_margin = sum(good) / len(good) - sum(bad) / len(bad)


def truncate(tokens: list[dict], max_length: int) -> tuple[list[dict], int]:
    """Rows cut to `max_length` tokens (TRL's keep_start), minus rows left with no loss token."""
    kept, cut = [], 0
    for t in tokens:
        if len(t["input_ids"]) > max_length:
            cut += 1
            t = {"input_ids": t["input_ids"][:max_length], "labels": t["labels"][:max_length]}
        if any(label != -100 for label in t["labels"][1:]):
            kept.append(t)
    return kept, cut


def _completion_text(value) -> str:
    from layerwise.tasks.rewards import completion_text

    return completion_text(value)


def _reference_text(row: dict) -> str | None:
    """What the rewards compare against (tasks/rewards.py's order), for the per-item records."""
    from layerwise.tasks.rewards import REFERENCE_COLUMNS

    for name in REFERENCE_COLUMNS:
        if row.get(name) is not None:
            return _completion_text(row[name])
    return _completion_text(row.get("completion")) or None


def _jsonable(row: dict) -> dict:
    return json.loads(json.dumps(row, default=str))


def make_task(path: str | None = None, columns: str | None = None, reward: str | None = None,
              eval_dataset: str | None = None, eval_split: str = DEFAULT_EVAL_SPLIT,
              chat_template: str | None = None, loss_on: str = "completion",
              max_new_tokens: int = 256) -> DatasetTask:
    """The user's dataset (`path`: a file, a save_to_disk directory or hf:NAME) as a task."""
    if not path:
        raise LayerwiseError("the dataset task needs a dataset: --dataset FILE")
    return DatasetTask(path=str(path), columns=columns or None, reward=reward or None,
                       eval_dataset=eval_dataset or None, eval_split=str(eval_split),
                       chat_template=chat_template or None, loss_on=loss_on,
                       max_new_tokens=max_new_tokens)
