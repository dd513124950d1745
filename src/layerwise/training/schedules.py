r"""Block schedules: which blocks of the `--layers` selection train at each step (one table of policies).

| `--schedule` | active blocks |
|---|---|
| `fixed` | the whole selection, every step (the default: plain layer-selective training) |
| `lisa:G@K` | G blocks drawn uniformly from the selection every K steps (LMFlow's LISA) |
| `sample:G@K@FILE[:FIELD][@T]` | G blocks drawn every K steps with probability ~ exp(z/T), z the block's importance in FILE (diagnostics.json, contribution.json, CSV) standardised over the selection; T (default 1) is the temperature: large -> uniform, small -> the top G |
| `phases:SPEC@N;SPEC@N;...` | an explicit list of (blocks, steps); the steps add up to `--steps` |
| `growth@FILE[:FIELD][@P][@skip\|@last]` | Growth Transformer Training (PAPERS.md section 4), P phases (default 4) of equal length: the critical core (the top third of the selection by importance) trains in every phase; the other blocks join one phase at a time, the more important first, so the least important train only in the last phases; "anti-layers" (importance < 0, e.g. a negative removal delta: removing them helped) never train (`skip`, the default) or only in the last phase (`last`) |

The whole plan is drawn before training from `random.Random(seed)`, so a schedule is reproducible
and recorded in metrics.json (`schedule.phases`). How it trains (`BlockSchedule`, a callback): the
optimizer holds every parameter of the selection; at each step the inactive blocks get
`requires_grad=False`, so they receive no gradient, and AdamW skips a parameter without one: its
weights, its step count and both moments stay exactly as they were (weight decay included).
`--park` says what happens to an inactive block's optimizer state: `keep` (in place), `cpu`
(moved to host memory while inactive, back when the block returns), or `drop` (deleted when the
block leaves, LISA's behaviour: the block starts afresh next time).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from layerwise.errors import LayerwiseError

PARKS = ("keep", "cpu", "drop")
POLICIES = ("fixed", "lisa", "sample", "phases", "growth")


@dataclass(frozen=True)
class Plan:
    """The active blocks of every step (index 0 = step 1)."""

    spec: str
    per_step: tuple[frozenset[int], ...]

    def phases(self) -> list[dict]:
        """Consecutive steps with the same active set, as {"from", "to", "blocks"} (1-based)."""
        out: list[dict] = []
        for step, active in enumerate(self.per_step, start=1):
            if out and out[-1]["blocks"] == sorted(active):
                out[-1]["to"] = step
            else:
                out.append({"from": step, "to": step, "blocks": sorted(active)})
        return out


def _int(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LayerwiseError(f"--schedule {spec!r}: {what} {text!r} is not a whole number") from None
    if value < 1:
        raise LayerwiseError(f"--schedule {spec!r}: {what} must be >= 1 (got {value})")
    return value


def _g_and_k(parts: list[str], pool: tuple[int, ...], spec: str) -> tuple[int, int]:
    if len(parts) < 2:
        raise LayerwiseError(f"--schedule {spec!r}: expected G@K (G blocks every K steps)")
    g, k = _int(parts[0], "G", spec), _int(parts[1], "K", spec)
    if g > len(pool):
        raise LayerwiseError(f"--schedule {spec!r}: G={g} is more than the {len(pool)} blocks of "
                             f"--layers ({', '.join(map(str, pool))})")
    return g, k


def _weighted_sample(rng: random.Random, items: list[int], weights: list[float], g: int) -> set[int]:
    """g distinct items, each draw proportional to the remaining weights."""
    items, weights, chosen = list(items), list(weights), set()
    for _ in range(g):
        i = rng.choices(range(len(items)), weights=weights)[0]
        chosen.add(items.pop(i))
        weights.pop(i)
    return chosen


def sample_weights(scores: dict[int, float], pool: tuple[int, ...], temperature: float,
                   spec: str) -> list[float]:
    """exp(z / T) over the pool, z the importance standardised over the pool."""
    missing = [b for b in pool if b not in scores]
    if missing:
        raise LayerwiseError(f"--schedule {spec!r}: the file has no finite score for block"
                             f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                             "(a file from another model, or a partial sweep?)")
    values = [scores[b] for b in pool]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) or 1.0
    z = [(v - mean) / sd / temperature for v in values]
    top = max(z)
    return [math.exp(x - top) for x in z]


def make_plan(spec: str, pool: tuple[int, ...], steps: int, seed: int, resolve=None,
              num_blocks: int | None = None, structure: str | None = None) -> Plan:
    """The plan of `spec` over the blocks `pool` of --layers; `resolve(text)` -> blocks (phases);
    `num_blocks`, the model's block count, refuses a scores file made for another model."""
    if spec.startswith("growth@"):
        name, body = "growth", spec[len("growth@"):]
    else:
        name, _, body = spec.partition(":")
    if name not in POLICIES:
        raise LayerwiseError(f"unknown --schedule {spec!r}; valid: fixed, lisa:G@K, "
                             "sample:G@K@FILE[:FIELD][@T], phases:SPEC@N;SPEC@N..., "
                             "growth@FILE[:FIELD][@P][@skip|@last]")
    if not pool:
        raise LayerwiseError(f"--schedule {spec!r}: --layers selects no block to schedule")
    rng = random.Random(seed)
    per_step: list[frozenset[int]] = []
    if name == "fixed":
        per_step = [frozenset(pool)] * steps
    elif name in ("lisa", "sample"):
        parts = body.split("@")
        g, k = _g_and_k(parts, pool, spec)
        weights = [1.0] * len(pool)
        if name == "sample":
            from layerwise.selection.scores import read_block_scores

            if len(parts) < 3:
                raise LayerwiseError(f"--schedule {spec!r}: expected sample:G@K@FILE[:FIELD][@T]")
            path, _, field = parts[2].partition(":")
            temperature = float(parts[3]) if len(parts) > 3 else 1.0
            if not temperature > 0:
                raise LayerwiseError(f"--schedule {spec!r}: temperature must be > 0")
            _metric, scores = read_block_scores(path, field or None, num_blocks, structure)
            weights = sample_weights(scores, pool, temperature, spec)
        while len(per_step) < steps:
            active = frozenset(_weighted_sample(rng, list(pool), weights, g))
            per_step += [active] * k
        per_step = per_step[:steps]
    elif name == "growth":
        per_step = growth_plan(body, pool, steps, spec, num_blocks, structure)
    else:  # phases
        for item in (i.strip() for i in body.split(";") if i.strip()):
            text, sep, n = item.rpartition("@")
            if not sep:
                raise LayerwiseError(f"--schedule {spec!r}: phase {item!r} is not SPEC@STEPS")
            blocks = frozenset(resolve(text) if resolve else map(int, text.split(",")))
            if not blocks:
                raise LayerwiseError(f"--schedule {spec!r}: phase {item!r} selects no block")
            outside = sorted(blocks - set(pool))
            if outside:
                raise LayerwiseError(f"--schedule {spec!r}: phase {item!r} names block"
                                     f"{'s' if len(outside) > 1 else ''} "
                                     f"{', '.join(map(str, outside))} outside --layers")
            per_step += [blocks] * _int(n, "steps", spec)
        if len(per_step) != steps:
            raise LayerwiseError(f"--schedule {spec!r}: the phases cover {len(per_step)} steps, "
                                 f"--steps is {steps}")
    return Plan(spec=spec, per_step=tuple(per_step))


ANTI = ("skip", "last")


def growth_phases(scores: dict[int, float], pool: tuple[int, ...], n_phases: int,
                  anti_layers: str = "skip") -> list[list[int]]:
    """The active blocks of each growth phase (see the module docstring), from importance scores;
    `anti_layers`: "skip" (never train) or "last" (train in the last phase only)."""
    anti = [b for b in pool if scores[b] < 0]
    ranked = sorted((b for b in pool if b not in anti), key=lambda b: (-scores[b], b))
    if not ranked:
        return [[] for _ in range(n_phases - 1)] + [sorted(anti) if anti_layers == "last" else []]
    core_size = max(1, math.ceil(len(ranked) / 3))
    core, rest = ranked[:core_size], ranked[core_size:]
    phases = []
    for j in range(n_phases):
        # phase j adds the next share of the rest, most important first; the last phase has all
        joined = math.ceil(len(rest) * j / max(1, n_phases - 1)) if n_phases > 1 else len(rest)
        phases.append(sorted(core + rest[:joined]))
    if anti_layers == "last":
        phases[-1] = sorted(phases[-1] + anti)
    return phases


def growth_plan(body: str, pool: tuple[int, ...], steps: int, spec: str,
                num_blocks: int | None = None, structure: str | None = None) -> list[frozenset[int]]:
    from layerwise.selection.scores import read_block_scores

    file_field, *options = body.split("@")
    p_text, anti_layers = "4", "skip"
    for option in options:
        if option in ANTI:
            anti_layers = option
        elif option.isdigit():
            p_text = option
        else:
            raise LayerwiseError(f"--schedule {spec!r}: {option!r} is neither P (a number of "
                                 "phases) nor skip/last (what anti-layers do); expected "
                                 "growth@FILE[:FIELD][@P][@skip|@last]")
    n_phases = _int(p_text, "P (phases)", spec)
    if n_phases > steps:
        raise LayerwiseError(f"--schedule {spec!r}: {n_phases} phases need at least as many steps "
                             f"(--steps {steps})")
    path, _, field = file_field.partition(":")
    _metric, scores = read_block_scores(path, field or None, num_blocks, structure)
    missing = [b for b in pool if b not in scores]
    if missing:
        raise LayerwiseError(f"--schedule {spec!r}: the file has no finite score for block"
                             f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                             "(a file from another model, or a partial sweep?)")
    phases = growth_phases(scores, pool, n_phases, anti_layers)
    if not phases[0]:
        raise LayerwiseError(f"--schedule {spec!r}: every block of --layers has importance < 0 "
                             "(all anti-layers): nothing would train")
    length = steps // n_phases
    per_step: list[frozenset[int]] = []
    for j, blocks in enumerate(phases):
        n = length if j < n_phases - 1 else steps - length * (n_phases - 1)
        per_step += [frozenset(blocks)] * n
    return per_step


class BlockSchedule(TrainerCallback):
    """Switches `requires_grad` block by block as the plan says, and parks optimizer state."""

    def __init__(self, plan: Plan, block_params: dict[int, list[torch.nn.Parameter]],
                 optimizer: torch.optim.Optimizer, park: str = "keep"):
        if park not in PARKS:
            raise LayerwiseError(f"--park {park!r}; valid: {', '.join(PARKS)}")
        self.plan, self.blocks, self.optimizer, self.park = plan, block_params, optimizer, park
        self.active: frozenset[int] = frozenset(block_params)
        self.history: list[list[int]] = []  # the active blocks of every step taken

    def _set(self, active: frozenset[int]) -> None:
        for block, params in self.blocks.items():
            on = block in active
            was = block in self.active
            for p in params:
                p.requires_grad_(on)
                if on != was:
                    self._move_state(p, on)
        self.active = active

    def _move_state(self, p: torch.nn.Parameter, returning: bool) -> None:
        state = self.optimizer.state
        if p not in state:
            return
        if self.park == "drop" and not returning:
            del state[p]
        elif self.park == "cpu":
            device = p.device if returning else torch.device("cpu")
            for key, value in state[p].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    state[p][key] = value.to(device)

    def on_train_begin(self, args, state, control, **kw):
        self._set(self.plan.per_step[min(state.global_step, len(self.plan.per_step) - 1)])

    def on_step_begin(self, args, state, control, **kw):
        step = min(state.global_step, len(self.plan.per_step) - 1)  # global_step: steps done so far
        active = self.plan.per_step[step]
        if active != self.active:
            self._set(active)
        self.history.append(sorted(active))

    def on_train_end(self, args, state, control, **kw):
        for params in self.blocks.values():  # the model leaves as it came: the selection trainable
            for p in params:
                p.requires_grad_(True)
        if self.park == "cpu":
            for params in self.blocks.values():
                for p in params:
                    self._move_state(p, True)
