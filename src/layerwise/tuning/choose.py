"""Which K blocks to train, from per-block estimates: top-K, the best contiguous window, or mid-K.

The policy, and why:
- **mid-K** when the estimates carry no ranking to trust: a flat or non-finite estimate, or two
  estimators that disagree (Spearman below `AGREE`; not for a primary that measures training
  itself, the profile, where the second estimator is only shown). The middle of depth is the
  published default (SFT works best on the middle 20-80%; one middle block matched full RL), so
  it is the safe pick.
- **window** when a contiguous window keeps at least `WINDOW_SHARE` of the top-K's estimated gain:
  a backward pass stops at the lowest trained block, so contiguous blocks high in the stack cost
  less compute and activation memory than the same number scattered down to block 0.
- **top-K** otherwise: the K blocks the estimate ranks first.

Every candidate is drawn from the blocks whose step cost (`step_cost`: backward depth, 1 = every
block) is at most `max_step_cost` (default `MAX_STEP_COST`, 0.8: blocks from about 30% of depth
up). Measured against the three ground-truth sweeps of SmolLM2 (docs/results/groundtruth/policy.md,
adam-gain with 4 batches, K = 3, the mean single-block C of the chosen blocks as the measure):
the bound chose blocks 9-11 or 10-12 instead of 0-2 on every sweep and gradient seed; arithmetic
SFT stayed as good (C 1.023 against 1.032) at a cheaper step (1.32 s against 1.37 s), arithmetic
GRPO lost 0.04-0.05 of C (about 1.5 problems of 60), and steps=2 SFT rose from C 0.543 to 0.782
(the best three blocks: 0.795) at a 28% cheaper step (1.45 s against 2.02 s): the gradient
estimate ranks by depth, and the bound is what keeps it off the first blocks, whose backward pass
runs through the whole stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from layerwise.diagnostics.agreement import spearman
from layerwise.errors import LayerwiseError

AGREE = 0.5  # Spearman between the two estimators below which their ranking is not trusted
WINDOW_SHARE = 0.9  # a window this close to the top-K's estimated gain is preferred
MAX_STEP_COST = 0.8  # blocks whose backward pass is at most this share of a full one's


def step_cost(blocks: list[int], num_blocks: int) -> float:
    """A selection's step time relative to training every block, from backward depth alone: the
    forward pass runs through every block, the backward pass (about twice a forward) from the
    top down to the shallowest trained block."""
    if not blocks or num_blocks <= 0:
        return math.nan
    return (num_blocks + 2 * (num_blocks - min(blocks))) / (3 * num_blocks)


def first_eligible(num_blocks: int, k: int, max_step_cost: float) -> int:
    """The shallowest block a selection may reach under `max_step_cost` (never leaving fewer
    than k blocks to choose from)."""
    start = next((b for b in range(num_blocks) if step_cost([b], num_blocks) <= max_step_cost
                  + 1e-12), num_blocks)
    return min(start, num_blocks - k)


def parse_budget(text: str, num_blocks: int) -> int:
    """`--budget K` (blocks) or `P%` (of the model's blocks, rounded, at least 1) -> K."""
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", raw)
    if match:
        share = float(match.group(1))
        if not 0 < share <= 100:
            raise LayerwiseError(f"--budget {raw}: a percentage must be in (0, 100]")
        return max(1, round(num_blocks * share / 100))
    if not raw.isdigit():
        raise LayerwiseError(f"--budget {raw!r}: expected a block count K or a percentage P% "
                             "(e.g. 2 or 10%)")
    k = int(raw)
    if k < 1:
        raise LayerwiseError(f"--budget {k}: train at least one block")
    if k > num_blocks:
        raise LayerwiseError(f"--budget {k}: the model has {num_blocks} blocks")
    return k


@dataclass
class Choice:
    """The blocks to train, the policy that picked them and why, and the alternatives weighed."""

    policy: str  # "top-K" | "window" | "mid-K"
    blocks: list[int]
    reason: str
    primary: str  # the estimator the ranking comes from
    agreement: float | None = None  # Spearman between the two estimators, when there are two
    candidates: dict[str, dict] = field(default_factory=dict)  # policy -> blocks and share
    # Spearman of the primary estimate with depth (the first block first): near 1, the estimate
    # ranks by depth alone, and depth alone is a free prior (`prior:shallow` in `estimate`)
    depth_spearman: float | None = None


def mid_window(num_blocks: int, k: int) -> list[int]:
    start = (num_blocks - k) // 2
    return list(range(start, start + k))


def best_window(scores: list[float], k: int) -> list[int]:
    """The contiguous window of k blocks with the largest total score (the higher one on ties)."""
    best, best_start = -math.inf, 0
    for start in range(len(scores) - k + 1):
        total = sum(scores[start:start + k])
        if total >= best:
            best, best_start = total, start
    return list(range(best_start, best_start + k))


def choose(estimates: dict[str, list[float]], k: int, primary: str, veto: bool = True,
           max_step_cost: float = MAX_STEP_COST) -> Choice:
    """Pick k blocks from `estimates` (estimator -> per-block score, higher = more important),
    among the blocks a step cost of at most `max_step_cost` allows (1: any block).
    With `veto` off, a second estimator that disagrees is recorded (`agreement`) but does not send
    the choice to mid-K: for a primary that measures training itself (the profile)."""
    scores = estimates[primary]
    n = len(scores)
    mid = mid_window(n, k)
    finite = [s for s in scores if s is not None and math.isfinite(s)]
    if len(finite) < n or not finite or max(finite) - min(finite) <= 1e-12 * max(1.0, abs(max(finite))):
        return Choice("mid-K", mid, f"the {primary} estimate is flat or not finite: no ranking to "
                      "follow, so the middle of depth", primary,
                      candidates={"mid-K": {"blocks": mid}})
    depth, _ = spearman(scores, [-float(b) for b in range(n)])
    depth = depth if math.isfinite(depth) else None
    total = sum(max(s, 0.0) for s in scores) or 1.0
    share = lambda blocks: sum(max(scores[b], 0.0) for b in blocks) / total  # noqa: E731
    start = first_eligible(n, k, max_step_cost)
    top = sorted(sorted(range(start, n), key=lambda b: -scores[b])[:k])
    window = [start + b for b in best_window(scores[start:], k)]
    candidates = {"top-K": {"blocks": top, "share": share(top)},
                  "window": {"blocks": window, "share": share(window)},
                  "mid-K": {"blocks": mid, "share": share(mid)}}
    anywhere = sorted(sorted(range(n), key=lambda b: -scores[b])[:k])
    if anywhere != top:  # what the bound excluded, shown beside the choice
        candidates["top-K, any depth"] = {"blocks": anywhere, "share": share(anywhere),
                                          "excluded_by": f"--max-step-cost {max_step_cost:g}"}
    others = [name for name in estimates if name != primary]
    rho = None
    if others:
        rho, _ = spearman(scores, estimates[others[0]])
        if veto and (not math.isfinite(rho) or rho < AGREE):
            return Choice("mid-K", mid, f"{primary} and {others[0]} disagree on the ranking "
                          f"(Spearman {rho:.2f} < {AGREE}): the middle of depth", primary, rho,
                          candidates, depth)
    if top == window:
        return Choice("top-K", top, f"the {k} blocks {primary} ranks first are contiguous "
                      f"({100 * share(top):.0f}% of its total)", primary, rho, candidates, depth)
    if share(window) >= WINDOW_SHARE * share(top):
        return Choice("window", window, f"the best contiguous window keeps "
                      f"{100 * share(window):.0f}% of the estimated gain against top-K's "
                      f"{100 * share(top):.0f}% and backpropagates only down to block {window[0]} "
                      f"(top-K: block {top[0]})", primary, rho, candidates, depth)
    return Choice("top-K", top, f"top-K holds {100 * share(top):.0f}% of the estimated gain, the "
                  f"best window only {100 * share(window):.0f}%", primary, rho, candidates, depth)
