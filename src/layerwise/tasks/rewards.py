"""Rewards as TRL users write them: built-in reference checks, your own `FILE.py:FUNCTION`, weights.

A reward is a plain TRL reward function `f(completions, **columns) -> list[float | None]`: TRL's
`GRPOTrainer` calls it with `prompts`, `completions`, `completion_ids`, `trainer_state`,
`log_extra`, `log_metric` and every other dataset column by name, one list entry per completion.
`None` means "not applicable" (TRL turns it into NaN and leaves it out of the sum). A reward file
written for TRL works here unchanged, and ours work in TRL unchanged.

| spec | reward |
|---|---|
| `math` | math-verify equivalence of answer and reference (TRL's accuracy_reward + plain numbers) |
| `exact` | 1 if the stripped completion equals the stripped reference |
| `contains` | 1 if the reference appears in the completion |
| `FILE.py:FUNCTION` | your own TRL reward function |

Any spec may carry a weight, `NAME=WEIGHT` (default 1): the weights become
`GRPOConfig(reward_weights=...)`, and `score_completions` combines rewards exactly as
`GRPOTrainer` does, so evaluation scores what training rewarded.

The reference is the first of `REFERENCE_COLUMNS` a row has. `GRPOTrainer` never passes a
dataset's `completion` column to rewards (it withholds `prompt`, `completion`, `completion_ids`),
so for a prompt-completion dataset `reward_rows` copies the completion's text into a `reference`
column; the rows given to the trainer, to `check_rewards` and to `score_completions` are
`reward_rows(rows)`.

`check_rewards` calls every reward on a few of the user's rows before any weights load, so a
broken reward is one line at once rather than a traceback after the model has loaded.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any, Callable

from layerwise.errors import LayerwiseError

REFERENCE_COLUMNS = ("solution", "answer", "reference", "ground_truth")
COMPLETION_COLUMN = "completion"  # a prompt-completion dataset's target, a reference of last resort
ADDED_REFERENCE = "reference"  # where `reward_rows` puts a completion column's text
# Columns GRPOTrainer does not pass under their own name, and the keywords it adds to the columns.
WITHHELD_COLUMNS = ("prompt", "completion", "completion_ids")
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra",
                "log_metric", "environments")
SAMPLE_ROWS = 4  # rows check_rewards tries each reward on
DUMMY_COMPLETION = "The answer is 42."  # the check's completion when the rows carry no reference
GSM8K_MARK = "####"  # a GSM8K-style reference keeps its final answer after the last mark

RewardFunction = Callable[..., "list[float | None]"]


# --- the built-in rewards -----------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """A completion's text: a string as is; a conversational one (a list of messages) as the
    last message's content."""
    if isinstance(completion, (list, tuple)):
        return (completion[-1].get("content") or "") if completion else ""
    return "" if completion is None else str(completion)


def reference_column(columns: dict[str, Any]) -> str:
    """The name of the reference column among a row's (or TRL's keyword) columns; one line that
    says what is looked for and what was found when there is none."""
    for name in REFERENCE_COLUMNS:
        if name in columns:
            return name
    found = [c for c in columns if c not in TRL_KEYWORDS] + (["prompt"] if "prompts" in columns else [])
    raise LayerwiseError(f"no reference column: looked for {', '.join(REFERENCE_COLUMNS)} "
                         f"(or a prompt-completion {COMPLETION_COLUMN!r}); the rows have "
                         f"{', '.join(found) or 'no column'}")


def _references(completions: list, columns: dict[str, Any]) -> list[str | None]:
    values = columns[reference_column(columns)]
    if len(values) != len(completions):
        raise LayerwiseError(f"{len(completions)} completions but {len(values)} references")
    return [None if v is None else completion_text(v) for v in values]


def math_reward(completions: list, **columns: Any) -> list[float | None]:
    """1 if math-verify finds the completion's answer equal to the reference, else 0; None when
    the reference has no parsable answer (TRL's convention: skip the example).

    TRL's `accuracy_reward`, with three differences: the completion's answer may be a plain number
    ("... #### 72", "The answer is 72.") as well as LaTeX (TRL extracts LaTeX only, which scores
    every plain-number answer 0); a GSM8K-style reference ("...#### 72") is read after its last
    `####`; and a conversational completion is read from its last message (TRL's: its first).
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # As in TRL: math-verify's timeouts use signal.alarm(), which works in the main thread only.
    main_thread = threading.current_thread() is threading.main_thread()
    parsing_timeout, verify_timeout = (10, 5) if main_thread else (None, None)
    if not main_thread:
        logging.getLogger("math_verify.parser").setLevel(logging.ERROR)
        logging.getLogger("math_verify.grader").setLevel(logging.ERROR)
    answer_config = [
        LatexExtractionConfig(normalization_config=NormalizationConfig(units=True),
                              boxed_match_priority=0, try_extract_without_anchor=False),
        ExprExtractionConfig(),
    ]
    rewards: list[float | None] = []
    for completion, reference in zip(completions, _references(completions, columns)):
        gold = parse(reference.rsplit(GSM8K_MARK, 1)[-1], parsing_timeout=parsing_timeout) \
            if reference is not None else []
        if not gold:
            rewards.append(None)
            continue
        answer = parse(completion_text(completion), extraction_config=answer_config,
                       extraction_mode="first_match", parsing_timeout=parsing_timeout)
        rewards.append(float(verify(gold, answer, timeout_seconds=verify_timeout)))
    return rewards


def exact_reward(completions: list, **columns: Any) -> list[float | None]:
    """1 if the stripped completion equals the stripped reference, else 0 (None: no reference)."""
    return [None if ref is None else float(completion_text(c).strip() == ref.strip())
            for c, ref in zip(completions, _references(completions, columns))]


def contains_reward(completions: list, **columns: Any) -> list[float | None]:
    """1 if the stripped reference appears in the completion, else 0; None for a missing or empty
    reference (an empty one would be found in every completion)."""
    return [None if not (ref or "").strip() else float(ref.strip() in completion_text(c))
            for c, ref in zip(completions, _references(completions, columns))]


@dataclass(frozen=True)
class Reward:
    name: str
    function: RewardFunction
    description: str
    binary: bool  # returns only 0 and 1 (or None)
    needs_reference: bool  # reads one of REFERENCE_COLUMNS


REWARDS: dict[str, Reward] = {r.name: r for r in (
    Reward("math", math_reward, "math-verify equivalence of the answer (LaTeX, \\boxed{} or a plain "
           "number, e.g. '#### 72') and the reference (after its last ####)", binary=True,
           needs_reference=True),
    Reward("exact", exact_reward, "the stripped completion equals the stripped reference",
           binary=True, needs_reference=True),
    Reward("contains", contains_reward, "the reference appears in the completion", binary=True,
           needs_reference=True),
)}


def get_reward(name: str) -> Reward:
    try:
        return REWARDS[name]
    except KeyError:
        raise LayerwiseError(f"unknown reward {name!r}; valid: {', '.join(REWARDS)}, "
                             "or FILE.py:FUNCTION for your own") from None


def describe() -> str:
    """Help text for `--reward`, generated from the table."""
    width = max(len(n) for n in [*REWARDS, "FILE.py:FUNCTION"])
    lines = [f"{r.name:<{width}}  {r.description}" + (" (0 or 1)" if r.binary else "")
             for r in REWARDS.values()]
    lines.append(f"{'FILE.py:FUNCTION':<{width}}  your own TRL reward f(completions, **columns) -> "
                 "list[float | None]")
    return ("\n".join(lines) + f"\nAppend =WEIGHT to weight a reward (default 1). The reference is "
            f"the first column of {', '.join(REFERENCE_COLUMNS)} (or a prompt-completion "
            f"'{COMPLETION_COLUMN}').")


# --- specs: NAME[=WEIGHT] or FILE.py:FUNCTION[=WEIGHT] ----------------------------------------


@dataclass(frozen=True)
class RewardSpec:
    source: str  # the built-in name or FILE.py:FUNCTION, as written
    function: RewardFunction
    weight: float = 1.0
    builtin: Reward | None = None  # the table entry, for a built-in

    @property
    def metric_name(self) -> str:
        """The name TRL logs this reward under (`rewards/<name>/mean`): TRL's get_callable_name."""
        func = self.function
        while isinstance(func, functools.partial):
            func = func.func
        return getattr(func, "__name__", type(func).__name__)


def _split_weight(spec: str) -> tuple[str, float]:
    source, sep, text = spec.rpartition("=")
    if not sep:
        return spec.strip(), 1.0
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise LayerwiseError(f"reward {spec!r}: weight {text!r} is not a finite number "
                             "(NAME=WEIGHT, e.g. math=0.5)")
    return source.strip(), weight


def _is_file_spec(source: str) -> bool:
    return ":" in source and source.rpartition(":")[0].endswith(".py")


def _load_file_function(source: str) -> RewardFunction:
    from layerwise.userfile import load_callable

    function = load_callable(source, "reward", "function")
    _check_signature(source, function)
    return function


def _check_signature(source: str, function: Callable) -> None:
    """TRL calls a reward with keywords only and always passes more than it names."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return  # no signature to read (a builtin or C callable): check_rewards will call it
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if not takes_any or positional_only:
        shown = ", ".join(str(p) for p in params)
        raise LayerwiseError(f"reward {source!r} takes ({shown}); TRL calls rewards by keyword as "
                             "f(completions, **kwargs): it needs **kwargs and no positional-only "
                             "parameter")


def parse_reward_specs(specs: list[str]) -> list[RewardSpec]:
    """`["math=0.5", "my.py:brevity"]` -> RewardSpecs, each with its function and weight."""
    parsed: list[RewardSpec] = []
    for spec in specs:
        source, weight = _split_weight(spec)
        if _is_file_spec(source):
            parsed.append(RewardSpec(source, _load_file_function(source), weight))
        else:
            reward = get_reward(source)
            parsed.append(RewardSpec(source, reward.function, weight, reward))
    names: dict[str, str] = {}
    for spec in parsed:
        if spec.metric_name in names:
            raise LayerwiseError(f"rewards {names[spec.metric_name]!r} and {spec.source!r} share the "
                                 f"name {spec.metric_name!r}, under which TRL logs and reports "
                                 "them; give each reward once, under its own function name")
        names[spec.metric_name] = spec.source
    return parsed


def reward_funcs(specs: list[RewardSpec]) -> list[RewardFunction]:
    """`GRPOTrainer(reward_funcs=...)`."""
    return [s.function for s in specs]


def reward_weights(specs: list[RewardSpec]) -> list[float]:
    """`GRPOConfig(reward_weights=...)`, in the order of `reward_funcs`."""
    return [s.weight for s in specs]


# --- calling rewards as TRL does ----------------------------------------------------------------


def reward_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as rewards should see them: a prompt-completion dataset without a reference
    column gets its completion's text as `reference` (GRPOTrainer withholds `completion`)."""
    if not rows or any(c in rows[0] for c in REFERENCE_COLUMNS) or COMPLETION_COLUMN not in rows[0]:
        return rows
    return [{**row, ADDED_REFERENCE: completion_text(row[COMPLETION_COLUMN])} for row in rows]


def _ignore(*_: Any, **__: Any) -> None:
    """Stands in for TRL's log_extra / log_metric outside a trainer."""


def trl_keywords(rows: list[dict[str, Any]], completions: list,
                 completion_ids: list[list[int]] | None = None) -> dict[str, Any]:
    """The keyword arguments GRPOTrainer gives each reward for these rows and completions (one
    row per completion): `prompts`, `completions`, `completion_ids`, every column but the
    withheld ones by name, and a fresh `trainer_state` and no-op loggers. Without token ids the
    completions' UTF-8 bytes stand in (before the tokenizer loads, only their lengths mean much)."""
    from transformers import TrainerState

    if len(rows) != len(completions):
        raise LayerwiseError(f"{len(completions)} completions for {len(rows)} rows (one row each)")
    columns = [c for c in rows[0] if c not in WITHHELD_COLUMNS] if rows else []
    keywords = {c: [row[c] for row in rows] for c in columns}
    if completion_ids is None:
        completion_ids = [list(completion_text(c).encode()) for c in completions]
    keywords.update(prompts=[row.get("prompt") for row in rows], completions=list(completions),
                    completion_ids=completion_ids, trainer_state=TrainerState(),
                    log_extra=_ignore, log_metric=_ignore)
    return keywords


def _describe_value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def call_reward(spec: RewardSpec, keywords: dict[str, Any]) -> list[float | None]:
    """`spec.function(**keywords)`, its failure or a result TRL would choke on (or silently
    mis-score: NaN reads as None there, inf poisons the group's advantages) as one line."""
    n = len(keywords["completions"])
    try:
        out = spec.function(**keywords)
    except LayerwiseError as exc:
        raise LayerwiseError(f"reward {spec.source!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's reward
        raise LayerwiseError(f"reward {spec.source!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, (list, tuple)):
        raise LayerwiseError(f"reward {spec.source!r} returned a {type(out).__name__}; it must "
                             "return a list with one float (or None) per completion")
    if len(out) != n:
        raise LayerwiseError(f"reward {spec.source!r} returned {len(out)} rewards for {n} "
                             "completions; it must return one per completion")
    for i, value in enumerate(out):
        if value is None:
            continue
        if not isinstance(value, numbers.Real):
            raise LayerwiseError(f"reward {spec.source!r} returned {_describe_value(value)} for "
                                 f"completion {i}; rewards must be numbers (or None: not applicable)")
        if not math.isfinite(value):
            raise LayerwiseError(f"reward {spec.source!r} returned {value} for completion {i}; "
                                 "rewards must be finite (return None for 'not applicable')")
    return list(out)


def _sample_completions(rows: list[dict[str, Any]]) -> list:
    """What the check scores: each row's reference (else a dummy answer), as a conversational
    completion when the prompts are conversational."""
    try:
        column = reference_column(rows[0])
    except LayerwiseError:
        texts = [DUMMY_COMPLETION] * len(rows)
    else:
        texts = [completion_text(row[column]) for row in rows]
    if isinstance(rows[0].get("prompt"), (list, tuple)):
        return [[{"role": "assistant", "content": t}] for t in texts]
    return texts


def check_rewards(rewards: list[RewardSpec], rows: list[dict[str, Any]],
                  completions_for_rows: list | None = None) -> None:
    """Call each reward as GRPOTrainer would on up to SAMPLE_ROWS of the user's rows (with their
    references as completions, or `completions_for_rows`); a reward that cannot work on this
    data is one LayerwiseError naming it and the problem."""
    if not rows:
        raise LayerwiseError("no rows to check the rewards on (the dataset is empty)")
    rows = reward_rows(list(rows[:SAMPLE_ROWS]))
    for spec in rewards:
        if spec.builtin is not None and spec.builtin.needs_reference:
            try:
                reference_column(rows[0])
            except LayerwiseError as exc:
                raise LayerwiseError(f"reward {spec.source!r} compares with a reference: {exc}") from None
    if completions_for_rows is not None:
        completions = list(completions_for_rows[:len(rows)])
    else:
        completions = _sample_completions(rows)
    keywords = trl_keywords(rows, completions)
    for spec in rewards:
        call_reward(spec, keywords)


def score_completions(specs: list[RewardSpec], completions: list, rows: list[dict[str, Any]],
                      completion_ids: list[list[int]] | None = None) -> list[float]:
    """The reward of each completion exactly as GRPOTrainer combines them: each function's
    None becomes NaN, the weighted rewards are summed with nansum in float32, and a completion
    every function returned None for is NaN (TRL leaves it out of the baseline and the logs)."""
    import torch

    keywords = trl_keywords(reward_rows(rows), completions, completion_ids)
    per_function = torch.tensor(
        [[math.nan if r is None else float(r) for r in call_reward(s, keywords)] for s in specs],
        dtype=torch.float32).reshape(len(specs), len(completions)).T  # (completions, functions)
    weights = torch.tensor(reward_weights(specs), dtype=torch.float32)
    total = (per_function * weights.unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(per_function).all(dim=1)] = math.nan
    return total.tolist()
