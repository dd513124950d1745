"""What a sweep runs: the expansion of `--layers` items into runs with stable ids.

A sweep is the central experiment of "Is One Layer Enough?" (PAPERS.md section 1): the base
score, full training, and one training run per selection (per block with `each`), for every seed.
Items of `--layers` (separated by `;`):
- `each`: every block on its own; `window:K`: every run of K consecutive blocks;
- `mid:K` (the K blocks around L/2), `top:K@FILE[:METRIC]`, or any selection spec (docs/selection.md);
- `boost:SPEC=X`: full training with the learning rate of SPEC's blocks multiplied by X (the
  paper's "raise the LR of the best blocks" strategy).
Two items that resolve to the same parameters run once. A run's id is a hash of everything that
determines its result (model, task, method, what trains, seed, every training option), so the
same command always maps onto the same ids and a rerun can skip finished work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap
from layerwise.selection.resolve import resolve_selection
from layerwise.training.config import TrainConfig

BASE_LABEL = "base"
FULL_LABEL = "full"
# Stored in every sweep's run ids since the first sweeps: always present, so their ids stay stable.
LEGACY_TRAIN_KEYS = ("steps", "lr", "batch_size", "num_generations", "n_train", "eval_n",
                     "max_completion_length", "temperature")
SPEC_FIELDS = ("task", "task_options", "method")  # SweepSpec's own fields, not per-run training


@dataclass(frozen=True)
class RunSpec:
    """One unit of work: scoring the base model, or one training run."""

    label: str  # "base", "full", "block 7", "mid:4", "boost:10-12=3", ...
    kind: str  # "base" | "train"
    seed: int
    train: dict[str, Any]  # TrainConfig fields (without `out`)
    model: str | None
    blocks: tuple[int, ...] = ()
    inputs: str | None = None  # the key of what the sweep reads (layerwise.inputs.identity_key)

    @property
    def run_id(self) -> str:
        what = {"kind": self.kind, "seed": self.seed, "train": self.train, "model": self.model}
        if self.inputs is not None:  # runs of other weights or data never share an id
            what["inputs"] = self.inputs
        payload = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def config(self) -> TrainConfig:
        return TrainConfig(**self.train)


@dataclass
class SweepSpec:
    model: str | None
    task: str
    method: str
    layers: str = "each"
    seeds: tuple[int, ...] = (0,)
    task_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # steps, lr, batch_size, ... for every run
    full_lr: float | None = None  # the paper tunes full training's LR separately

    def sweep_id(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def summary(self) -> str:
        return (f"{self.method} on {self.task} for {self.model or 'embedded'}, layers "
                f"{self.layers!r}, seeds {','.join(map(str, self.seeds))}")


def train_options(values: dict) -> dict:
    """The per-run training options of a sweep (`SweepSpec.train`), from TrainConfig field values.

    The legacy keys always, every other option only when it differs from its default, and never
    the spec's own fields: a run's id hashes these, so a sweep keeps its ids when TrainConfig
    gains an option, and the command and `layerwise.sweep()` give the same ids.
    """
    defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
                for f in fields(TrainConfig)}
    out = {k: values[k] for k in LEGACY_TRAIN_KEYS}
    for key, value in values.items():
        if key not in out and key not in SPEC_FIELDS and value != defaults.get(key):
            out[key] = value
    return out


def _items(layers: str) -> list[str]:
    items = [i.strip() for i in layers.split(";") if i.strip()]
    if not items:
        raise LayerwiseError("--layers is empty; use each, window:K, mid:K, top:K@FILE or a spec")
    return items


def expand_selections(layers: LayerMap, spec: str) -> list[tuple[str, dict[str, Any], tuple[int, ...]]]:
    """[(label, TrainConfig fields for what trains, blocks)], duplicates (same parameters) once."""
    out: list[tuple[str, dict[str, Any], tuple[int, ...]]] = []
    seen: dict[frozenset, str] = {}
    n = layers.num_blocks
    for item in _items(spec):
        if item == "each":
            expanded = [(f"block {i}", str(i)) for i in range(n)]
        elif item.startswith("window:"):
            try:
                k = int(item.split(":", 1)[1])
            except ValueError:
                raise LayerwiseError(f"--layers item {item!r}: window:K needs an integer K") from None
            if not 1 <= k <= n:
                raise LayerwiseError(f"--layers item {item!r}: K must be 1..{n}")
            expanded = [(f"blocks {i}-{i + k - 1}", f"{i}-{i + k - 1}") for i in range(n - k + 1)]
        elif item.startswith("boost:"):
            body = item[len("boost:"):]
            if "=" not in body:
                raise LayerwiseError(f"--layers item {item!r}: boost:SPEC=X (e.g. boost:10-12=3)")
            sel = resolve_selection(layers, body.rpartition("=")[0])
            key = frozenset({("boost", body)})
            if key not in seen:
                seen[key] = item
                out.append((item, {"full": True, "lr_scale": [body]}, sel.blocks))
            continue
        else:
            expanded = [(item, item)]
        for label, sel_spec in expanded:
            sel = resolve_selection(layers, sel_spec)
            if sel.names in seen:
                continue  # the same parameters as an earlier item: one run
            seen[sel.names] = label
            out.append((label, {"layers": sel_spec}, sel.blocks))
    return out


def plan_runs(sweep: SweepSpec, layers: LayerMap, inputs: str | None = None) -> list[RunSpec]:
    """The base run, then per seed: full training and one run per selection; `inputs` (the key
    of the model and data the sweep reads) is part of every run's id."""
    common = {**sweep.train, "task": sweep.task, "task_options": sweep.task_options,
              "method": sweep.method, "progress": False, "out": None}
    # --schedule applies to the runs of selections; the references (base, full, boost) train in full
    reference = {**common, "schedule": "fixed"} if "schedule" in common else common
    try:
        TrainConfig(**{**reference, "full": True})  # validate the shared options once
    except TypeError as exc:
        raise LayerwiseError(f"sweep training options: {exc}") from exc
    base_train = {**reference, "full": True, "seed": 0}
    runs = [RunSpec(BASE_LABEL, "base", 0, base_train, sweep.model, inputs=inputs)]
    selections = expand_selections(layers, sweep.layers)
    schedule = common.get("schedule", "fixed")
    if schedule != "fixed":
        from layerwise.models.identity import structure_fingerprint
        from layerwise.training.schedules import make_plan

        for label, what, blocks in selections:
            if "layers" not in what:
                raise LayerwiseError(f"--schedule {schedule!r} draws blocks from a selection; "
                                     f"'{label}' trains in full (drop it or the schedule)")
            try:
                make_plan(schedule, tuple(blocks), int(common.get("steps", TrainConfig.steps)), 0,
                          lambda text: resolve_selection(layers, text).blocks,
                          num_blocks=layers.num_blocks, structure=structure_fingerprint(layers))
            except LayerwiseError as exc:
                raise LayerwiseError(f"--layers item '{label}': {exc}") from None
    for seed in sweep.seeds:
        full = {**reference, "full": True, "seed": seed}
        if sweep.full_lr is not None:
            full["lr"] = sweep.full_lr
        runs.append(RunSpec(FULL_LABEL, "train", seed, full, sweep.model,
                            tuple(range(layers.num_blocks)), inputs))
        for label, what, blocks in selections:
            train = {**(reference if "full" in what else common), **what, "seed": seed}
            if "lr_scale" in what and sweep.full_lr is not None:
                train["lr"] = sweep.full_lr
            runs.append(RunSpec(label, "train", seed, train, sweep.model, tuple(blocks), inputs))
    return runs
