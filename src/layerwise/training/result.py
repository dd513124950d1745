"""The typed result of one training run, and its on-disk form, `metrics.json`.

`RunResult` is what the recipe returns and what every reader (train, sweep, estimate, report,
the benches) reads, by attribute. Its `to_dict()` is metrics.json, key for key as it has always
been, so sweep stores and runs written before the recipe existed still load with `from_dict()`.

How a run ended is one of `STATUSES`: "running" only while a live process owns the directory
(its pid and host are recorded, so a later command can tell a run killed by `kill -9` from one
still going), then "completed", "failed", "interrupted" (a checkpoint to `--resume` from) or
"invalid" (its arguments were refused before any model was loaded).
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.fileio import read_json

STATUSES = ("running", "completed", "failed", "interrupted", "invalid")


@dataclass
class Scores:
    """One scoring of a model: the task's held-out score and the general-text perplexity.

    Generative tasks fill `accuracy` and `mean_score`; the `lm` task fills `loss` (held-out mean
    next-token cross-entropy, nats) and `perplexity`. `score` is the task's headline number, the S
    of C(k) = (S_k - S_base) / (S_full - S_base): accuracy, or the held-out loss for `lm` (the
    ratio of differences is the same whichever way "better" points).
    """

    accuracy: float | None = None
    mean_score: float | None = None
    general_perplexity: float | None = None
    loss: float | None = None
    perplexity: float | None = None
    preference_accuracy: float | None = None
    preference_margin: float | None = None
    primary: str | None = None  # which field is S (a user's dataset: docs/data.md); None: as above
    reward_means: dict | None = None  # several --reward: each one's mean on the held-out rows
    lm_eval: dict | None = None  # --forgetting lm-eval:TASKS: the harness's metrics

    @property
    def score(self) -> float | None:
        if self.primary:
            return getattr(self, self.primary)
        return self.accuracy if self.accuracy is not None else self.loss

    @classmethod
    def from_dict(cls, d: dict | None) -> "Scores":
        d = d or {}
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass
class TrainableSummary:
    description: str = ""
    params: int = 0
    total_params: int = 0
    share: float = 0.0
    blocks: list[int] = field(default_factory=list)
    lowest_block: int | None = None
    lora: dict = field(default_factory=dict)
    lr_groups: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainableSummary":
        d = d or {}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class Forgetting:
    general_data: str = "embedded"
    perplexity_before: float | None = None
    perplexity_after: float | None = None
    relative_change: float | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "Forgetting":
        d = d or {}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


@dataclass
class RunResult:
    """Everything a run measured. Nested parts are dataclasses; the rest are plain values."""

    status: str = "running"
    failure: str | None = None
    task: str = ""
    task_options: dict = field(default_factory=dict)
    method: str = ""
    mode: str = ""
    seed: int = 0
    config: dict = field(default_factory=dict)
    started: str = ""
    owner: dict = field(default_factory=_owner)
    model: str | None = None
    model_source: str | None = None
    trainable: TrainableSummary = field(default_factory=TrainableSummary)
    base: Scores = field(default_factory=Scores)
    final: Scores = field(default_factory=Scores)
    accuracy_gain: float | None = None
    forgetting: Forgetting = field(default_factory=Forgetting)
    eval: dict = field(default_factory=dict)
    steps_completed: int = 0
    steps_planned: int | None = None
    last_good_step: int = 0
    resumed_from_step: int | None = None
    checkpoint: str | None = None
    step_seconds_median: float | None = None
    train_seconds: float | None = None
    tokens_seen: int = 0
    tokens_per_second: float | None = None
    optimizer_state_bytes: int = 0
    peak_memory_mb: float | None = None
    precision: dict = field(default_factory=dict)
    pairs: dict | None = None
    data: dict | None = None  # --dataset: its type, rows per split, S, rows truncated at --max-length
    lm_eval: dict | None = None  # --forgetting lm-eval:TASKS: the harness before and after
    subnetwork: dict | None = None
    schedule: dict | None = None  # --schedule: the policy, --park, and the active blocks per phase
    learning_signal: dict | None = None  # RL: steps whose groups all had equal rewards
    warnings: list[str] = field(default_factory=list)  # things the run finished despite
    tying: dict | None = None  # --tying: the policy, the maps at start and end, counts, decisions
    history: list[dict] = field(default_factory=list)
    platform: dict = field(default_factory=dict)
    processes: int = 1
    first_step_seconds: float | None = None  # from the command's start to its first step's end
    wall_seconds: float | None = None
    # In memory only (not in metrics.json): the trained model and what trained it.
    model_object: Any = field(default=None, repr=False, compare=False, metadata={"transient": True})
    tokenizer: Any = field(default=None, repr=False, compare=False, metadata={"transient": True})
    trainer: Any = field(default=None, repr=False, compare=False, metadata={"transient": True})

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def score_gain(self) -> float | None:
        """final - base of the task's score (accuracy, or held-out loss for `lm`)."""
        if self.final.score is None or self.base.score is None:
            return None
        return self.final.score - self.base.score

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: every field but the in-memory objects."""
        out = {}
        for f in fields(self):
            if f.metadata.get("transient"):
                continue
            value = getattr(self, f.name)
            out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        nested = {"trainable": TrainableSummary, "base": Scores, "final": Scores,
                  "forgetting": Forgetting}
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d or f.metadata.get("transient"):
                continue
            value = d[f.name]
            kw[f.name] = nested[f.name].from_dict(value) if f.name in nested else value
        if "owner" not in d:
            kw["owner"] = {}
        return cls(**kw)


def process_alive(owner: dict) -> bool | None:
    """Is the process that wrote a "running" metrics.json still there? None: another host."""
    if not owner or "pid" not in owner:
        return False
    if owner.get("host") not in (None, socket.gethostname()):
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(path: str | Path) -> RunResult:
    """The run in a directory (or its metrics.json); a run whose process died says so."""
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise LayerwiseError(f"{file} does not exist (expected a run directory or metrics.json)")
    data = read_json(file)
    if not isinstance(data, dict) or "status" not in data:
        raise LayerwiseError(f"{file} is not the metrics.json of a layerwise run")
    return RunResult.from_dict(data)


def stale_message(run_dir: str | Path, result: RunResult) -> str | None:
    """A one-line explanation when `result` says "running" but its process is gone."""
    if result.status != "running" or process_alive(result.owner) is not False:
        return None
    ckpt = latest_checkpoint(Path(run_dir))
    pid = result.owner.get("pid", "?")
    if ckpt is not None:
        return (f"{run_dir} holds a run that stopped without a word (status 'running', process "
                f"{pid} is gone, e.g. kill -9) with a checkpoint at step {ckpt[0]}: continue it "
                f"with `layerwise train --resume {run_dir}`, or start afresh with --overwrite")
    return (f"{run_dir} holds a run that stopped without a word (status 'running', process {pid} "
            f"is gone, e.g. kill -9) and no checkpoint to resume from (use --save-every N): start "
            f"afresh with --overwrite")


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete Trainer checkpoint in RUN/checkpoints (step, path), if any."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = []
    for d in root.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if step.isdigit() and (d / "trainer_state.json").is_file() and (d / "COMPLETE").is_file():
            found.append((int(step), d))
    return max(found) if found else None
