r"""Tying policies for `layerwise train --tying POLICY`: which blocks share weights, fixed or learned.

| `--tying` | what it does |
|---|---|
| `none` | every block keeps its own weights (the default) |
| `static:all` | every block uses block 0's weights (ALBERT) |
| `static:pairs` | block 2m+1 uses block 2m's |
| `static:cycle:K` | K distinct blocks repeated in a cycle: block i uses block i mod K's |
| `static:mirror` | the second half mirrors the first: block i >= L/2 uses block L-1-i's (the official code's "Rev" ablation) |
| `static:similar:K@FILE[:FIELD]` | the K least important blocks by a diagnostics/contribution file (default field `neighbour_mean_delta_pct`: the perplexity cost of replacing a block's weights by its neighbours'; or a representation metric such as `block_influence`) each use their predecessor's weights (blocks 1..L-1) |
| `static:map:FILE` | a map from a file: a run's `tying.json` (e.g. the one a DQN run found) or a list of sources |
| `random` | every `--tie-every` steps the next block (1..L-1, in turn) draws its source uniformly from 0..i |
| `dqn[:FAULT,...]` | the Q-learning agent of Dynamic Layer Tying, the official code's faults fixed; `dqn:faithful` turns them all on (`tying_agents.FAULTS`) |
| `dqn-gain[:cost=X]` | our agent: rewarded by the loss gain on training windows (not held-out data) minus X (default 0.1) per block that keeps its own weights |

Static maps are applied before the optimizer is built, so it holds each shared tensor once. The
dynamic policies (`random`, `dqn`, `dqn-gain`) start from every block tied to block 0 (the state
the paper's agent starts from; `frozen-start` instead leaves blocks 1..L-1 untied but frozen at
their initial weights, as the official code does), decide every `--tie-every` steps (default 4,
the paper's four minibatches per decision), and need `--full` and a method that trains on text
(their reward is a cross-entropy). Everything they decide is in `metrics.json` (`tying.history`),
the run's `tying.json` and `tying.png`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from layerwise.errors import LayerwiseError
from layerwise.models.tying import TiedBlocks, check_map, describe_map, read_tying_file
from layerwise.training.tying_agents import AGENTS, FAULTS, next_block

STATIC_SCHEMES = ("all", "pairs", "cycle", "mirror", "similar", "map")
SIMILAR_FIELD = "neighbour_mean_delta_pct"
DYNAMIC = ("random", "dqn", "dqn-gain")
DEFAULT_EVERY = 4
DEFAULT_COST = 0.1


@dataclass(frozen=True)
class TyingSpec:
    text: str
    policy: str  # none, static, random, dqn, dqn-gain
    scheme: str | None = None
    arg: str | None = None
    faults: frozenset[str] = frozenset()
    cost: float = DEFAULT_COST

    @property
    def dynamic(self) -> bool:
        return self.policy in DYNAMIC

    @property
    def active(self) -> bool:
        return self.policy != "none"


def parse_tying(text: str) -> TyingSpec:
    """Syntax only (no model): one line naming what is wrong and what would be valid."""
    t = (text or "none").strip()
    head, _, rest = t.partition(":")
    valid = ("none, static:all|pairs|cycle:K|mirror|map:FILE, random, dqn[:faithful|:FAULT,...], "
             "dqn-gain[:cost=X]")
    if head == "none" and not rest:
        return TyingSpec(t, "none")
    if head == "static":
        scheme, _, arg = rest.partition(":")
        if scheme not in STATIC_SCHEMES:
            raise LayerwiseError(f"--tying {t!r}: unknown static scheme {scheme!r}; valid: "
                                 "all, pairs, cycle:K, mirror, similar:K@FILE[:FIELD], map:FILE")
        if scheme == "similar":
            k, at, where = arg.partition("@")
            file = where.split(":")[0] if where else ""
            if not at or not file:
                raise LayerwiseError(f"--tying {t!r}: expected static:similar:K@FILE[:FIELD]")
            if not Path(file).is_file():
                raise LayerwiseError(f"--tying {t!r}: scores file {file} does not exist")
            return TyingSpec(t, "static", scheme, arg)
        if scheme in ("cycle", "map") and not arg:
            raise LayerwiseError(f"--tying {t!r}: {scheme} needs "
                                 f"{'K (blocks per cycle)' if scheme == 'cycle' else 'a FILE'}")
        if scheme not in ("cycle", "map") and arg:
            raise LayerwiseError(f"--tying {t!r}: static:{scheme} takes no argument")
        if scheme == "map" and not Path(arg).exists():
            raise LayerwiseError(f"--tying {t!r}: tying map {arg} does not exist")
        return TyingSpec(t, "static", scheme, arg or None)
    if head == "random" and not rest:
        return TyingSpec(t, "random")
    if head == "dqn":
        faults = frozenset(FAULTS) if rest == "faithful" else frozenset(f for f in rest.split(",") if f)
        unknown = sorted(faults - set(FAULTS))
        if unknown:
            raise LayerwiseError(f"--tying {t!r}: unknown fault {unknown[0]!r}; valid: faithful "
                                 f"(all of them) or any of {', '.join(FAULTS)}")
        return TyingSpec(t, "dqn", faults=faults)
    if head == "dqn-gain":
        cost = DEFAULT_COST
        if rest:
            key, _, value = rest.partition("=")
            try:
                cost = float(value) if key == "cost" else math.nan
            except ValueError:
                cost = math.nan
            if not cost >= 0:
                raise LayerwiseError(f"--tying {t!r}: expected dqn-gain:cost=X with X >= 0")
        return TyingSpec(t, "dqn-gain", cost=cost)
    raise LayerwiseError(f"--tying {t!r}: unknown policy; valid: {valid}")


def static_sources(spec: TyingSpec, num_blocks: int, structure: str | None = None) -> tuple[int, ...]:
    """The map of a static scheme for a model of `num_blocks` blocks (validated)."""
    n = num_blocks
    if spec.scheme == "all":
        return tuple(0 for _ in range(n))
    if spec.scheme == "pairs":
        return tuple(i - i % 2 for i in range(n))
    if spec.scheme == "cycle":
        try:
            k = int(spec.arg)
        except ValueError:
            raise LayerwiseError(f"--tying {spec.text!r}: K {spec.arg!r} is not a whole number") from None
        if not 1 <= k <= n:
            raise LayerwiseError(f"--tying {spec.text!r}: K must be in 1..{n} (the model's blocks)")
        return tuple(i % k for i in range(n))
    if spec.scheme == "mirror":
        return tuple(i if i < n // 2 else min(i, n - 1 - i) for i in range(n))
    if spec.scheme == "map":
        return tuple(read_tying_file(spec.arg, n)["sources"])
    if spec.scheme == "similar":
        return similar_sources(spec, n, structure)
    raise LayerwiseError(f"--tying {spec.text!r} has no static map")


def similar_sources(spec: TyingSpec, n: int, structure: str | None = None) -> tuple[int, ...]:
    """Tie the K least important of blocks 1..n-1 (by the file's field) to their predecessors."""
    from layerwise.selection.scores import read_block_scores

    k_text, _, where = spec.arg.partition("@")
    file, _, fld = where.partition(":")
    try:
        k = int(k_text)
    except ValueError:
        raise LayerwiseError(f"--tying {spec.text!r}: K {k_text!r} is not a whole number") from None
    if not 1 <= k <= n - 1:
        raise LayerwiseError(f"--tying {spec.text!r}: K must be in 1..{n - 1} (block 0 has no "
                             "predecessor)")
    _metric, scores = read_block_scores(file, fld or SIMILAR_FIELD, n, structure)
    candidates = [b for b in range(1, n) if b in scores]
    if len(candidates) < k:
        raise LayerwiseError(f"--tying {spec.text!r}: {file} scores {len(candidates)} of blocks "
                             f"1..{n - 1}; K={k} needs more")
    chosen = sorted(candidates, key=lambda b: (scores[b], b))[:k]  # least important first
    return check_map([b - 1 if b in chosen else b for b in range(n)], n)


def initial_sources(spec: TyingSpec, num_blocks: int, structure: str | None = None) -> tuple[int, ...]:
    """The map a run starts from: the static map, all-to-block-0 for the agents, or untied."""
    if spec.policy == "static":
        return static_sources(spec, num_blocks, structure)
    if spec.dynamic and "frozen-start" not in spec.faults:
        return tuple(0 for _ in range(num_blocks))
    return tuple(range(num_blocks))


def check_tying(spec: TyingSpec, num_blocks: int, every: int | None,
                structure: str | None = None) -> tuple[int, ...]:
    """Everything about --tying that the model's block count decides (before loading)."""
    if spec.active and num_blocks < 2:
        raise LayerwiseError(f"--tying {spec.text!r}: the model has {num_blocks} block; tying needs two")
    if every is not None and not spec.dynamic:
        raise LayerwiseError(f"--tie-every applies to the dynamic policies ({', '.join(DYNAMIC)}); "
                             f"--tying {spec.text!r} decides nothing during the run")
    return initial_sources(spec, num_blocks, structure)


# ---- the reward: a cross-entropy on training rows ---------------------------------------------
class LossProbe:
    """Cross-entropy of the model on rows of the trainer's own dataset, collated by its collator."""

    def __init__(self, dataset, collator, rows: int, seed: int, device):
        self.dataset, self.collator, self.rows, self.device = dataset, collator, rows, device
        self.rng = random.Random(seed + 7919)
        self.fixed = self._draw()

    def _draw(self):
        n = len(self.dataset)
        idx = self.rng.sample(range(n), min(self.rows, n))
        return self.collator([self.dataset[i] for i in idx])

    @torch.no_grad()
    def loss(self, model, fixed: bool) -> float:
        batch = self.fixed if fixed else self._draw()
        was = model.training
        model.eval()
        try:
            inputs = {k: v.to(self.device) for k, v in batch.items() if torch.is_tensor(v)}
            out = model(**{k: v for k, v in inputs.items()
                           if k in ("input_ids", "attention_mask", "labels")})
            return float(out.loss)
        finally:
            model.train(was)


class _Running:
    """Welford mean and standard deviation (the gain reward's scale)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0


# ---- the callback ----------------------------------------------------------------------------------
@dataclass
class _Pending:
    block: int
    state: list[int]
    action: int
    loss_before: float | None
    step: int


class DynamicTying(TrainerCallback):
    """Every `every` steps: reward the last decision, let the agent decide for the next block."""

    def __init__(self, tied: TiedBlocks, spec: TyingSpec, every: int, probe: LossProbe, steps: int,
                 seed: int, on_change=None):
        self.tied, self.spec, self.every, self.probe = tied, spec, every, probe
        n = tied.n
        decisions = max(1, steps // every)
        self.agent = AGENTS[spec.policy](n, seed, faults=spec.faults, decisions=decisions)
        self.state = [0] * n  # the paper's start: every block "copies" block 0
        self.frozen = set(range(1, n)) if "frozen-start" in spec.faults else set()
        self.block = 1
        self.pending: _Pending | None = None
        self.history: list[dict] = []
        self.gains = _Running()
        self.steps = steps
        self.on_change = on_change or (lambda: None)

    # -- the loop
    def on_train_begin(self, args, state, control, **kw):
        if self.pending is None:
            self._decide(state.global_step)

    def on_step_end(self, args, state, control, **kw):
        step = state.global_step
        if step % self.every == 0:
            self._settle(step)
            if step < state.max_steps:
                self._decide(step)

    def on_train_end(self, args, state, control, **kw):
        if self.pending is not None and state.global_step > self.pending.step:
            self._settle(state.global_step, done=True)

    def _decide(self, step: int) -> None:
        block = self.block
        progress = step / self.steps
        action = self.agent.act(block, list(self.state), progress)
        before = list(self.state)
        loss_before = None
        if self.spec.policy == "dqn-gain":  # measured before the change: its cost is in the gain
            last = self.history[-1].get("loss_fixed") if self.history else None
            loss_before = last if last is not None else self.probe.loss(self.tied.model, fixed=True)
        if action == block and block in self.frozen:  # the official code's frozen start
            for p in self.tied.blocks[block].parameters():
                p.requires_grad_(True)
            self.frozen.discard(block)
        self.tied.set_source(block, action)
        if action != block:
            self.frozen.discard(block)
        self.state[block] = action
        self.pending = _Pending(block, before, action, loss_before, step)
        self.block = next_block(block, self.tied.n)
        if self.block == 1:
            self.agent.end_episode()
        self.on_change()

    def _reward(self, p: _Pending) -> tuple[float, dict]:
        if self.spec.policy == "dqn-gain":
            after = self.probe.loss(self.tied.model, fixed=True)
            gain = p.loss_before - after
            self.gains.add(gain)
            scale = (self.gains.std if self.gains.n >= 3 else abs(gain)) or 1.0
            own = 1.0 if p.action == p.block else 0.0
            z = max(-5.0, min(5.0, gain / scale))  # early gains are large: keep one from dominating
            return z - self.spec.cost * own, {"loss_fixed": after, "gain": gain}
        ce = self.probe.loss(self.tied.model, fixed=False)
        if "clip" in self.spec.faults:
            return max(-10.0, min(10.0, -math.exp(min(ce, 700.0)))), {"loss_batch": ce}
        return -ce, {"loss_batch": ce}

    def _settle(self, step: int, done: bool = False) -> None:
        p = self.pending
        if p is None:
            return
        reward, info = self._reward(p)
        learned = self.agent.observe(p.block, p.state, p.action, reward, list(self.state),
                                     step / self.steps, done=done)
        counts = self.tied.counts()
        self.history.append({"step": step, "decided_at": p.step, "block": p.block, "action": p.action,
                             "own": p.action == p.block, "reward": reward,
                             "epsilon": self.agent.epsilon, "sources": list(self.tied.sources),
                             "state": list(self.state), "unique_params": counts.unique,
                             "trainable_params": counts.trainable, **info, **learned})
        self.pending = None

    # -- checkpoints
    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        doc = {"block": self.block, "state": self.state, "frozen": sorted(self.frozen),
               "history": self.history, "agent": self.agent.state_dict(),
               "gains": [self.gains.n, self.gains.mean, self.gains.m2],
               "probe_rng": self.probe.rng.getstate(),
               "pending": None if self.pending is None else vars(self.pending)}
        (directory / "tying_agent.json").write_text(json.dumps(doc))
        tensors = self.agent.tensors()
        if tensors:
            save_file(tensors, str(directory / "tying_agent.safetensors"))

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        from layerwise.training.tying_agents import _tuplify

        doc = json.loads((directory / "tying_agent.json").read_text())
        f = directory / "tying_agent.safetensors"
        self.agent.load_state_dict(doc["agent"], load_file(str(f)) if f.is_file() else {})
        self.block, self.state, self.frozen = doc["block"], doc["state"], set(doc["frozen"])
        self.history = doc["history"]
        self.gains.n, self.gains.mean, self.gains.m2 = doc["gains"]
        self.probe.rng.setstate(_tuplify(doc["probe_rng"]))
        self.pending = _Pending(**doc["pending"]) if doc["pending"] else None


@dataclass
class TyingRecord:
    """What metrics.json says about tying (typed, like the rest of `RunResult`)."""

    policy: str
    every: int | None
    start: list[int]
    final: list[int]
    final_description: str
    counts_start: dict
    counts_end: dict
    untied_counts: dict
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(vars(self))


def describe(sources) -> str:
    return describe_map(sources)


__all__ = ["TyingSpec", "parse_tying", "static_sources", "initial_sources", "check_tying",
           "LossProbe", "DynamicTying", "TyingRecord", "check_map"]
