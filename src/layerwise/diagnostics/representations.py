"""Metrics of the hidden states at block boundaries, all from the one traced intact pass.

With x_l the hidden state entering block l (x_L: leaving the last block), over windows and tokens:

- `angular` (Gromov et al., PruneMe): d(l, n) = arccos(cos(x_l, x_{l+n})) / pi on the *last token*
  of each window, averaged over windows. Per block: n = 1. Runs n = 1..--max-run in `extra`, with
  the start of the run of n blocks that changes the representation least (the one to remove).
- `block-influence` (ShortGPT): BI_l = 1 - mean over all tokens of cos(x_l, x_{l+1}); runs likewise.
- `linear-r2`: how well a ridge regression (with intercept) maps x_l to x_{l+1}, fitted on the
  first half of the tokens and scored on the held-out second half: R^2 = 1 - SSE / SST (SST around
  the held-out mean, pooled over hidden dimensions). Near 1: the block acts almost linearly.
- `delta-corr`: the residual update of block l is delta_l = x_{l+1} - x_l. Per token, the Pearson
  correlation (over hidden dimensions) of delta_l and delta_{l+1}, averaged over tokens. The last
  block has no successor: null. The anatomy paper reports about -0.50 on SmolLM2-135M.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric


def _boundaries(ctx: DiagnosticContext) -> list[torch.Tensor]:
    """x_0..x_L, each (N, T, D), in float32."""
    trace = ctx.trace
    return [trace.boundary(i).float() for i in range(ctx.num_blocks + 1)]


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of arccos(cos(a, b)) / pi; a, b: (M, D)."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1.0, 1.0)
    return (torch.arccos(cos) / math.pi).mean().item()


def _runs(xs, max_run: int, score) -> dict[str, list[float]]:
    L = len(xs) - 1
    return {str(n): [score(xs[l], xs[l + n]) for l in range(L - n + 1)] for n in range(1, min(max_run, L) + 1)}


def _best_starts(runs: dict[str, list[float]], smallest: bool = True) -> dict[str, int]:
    pick = min if smallest else max
    return {n: int(pick(range(len(v)), key=lambda l: (v[l] if math.isfinite(v[l]) else math.inf)))
            for n, v in runs.items()}


@register_metric(
    "angular", {"angular_distance": True},
    "Gromov et al.: arccos(cos(x_l, x_l+n))/pi on the last token; runs of n blocks in extra",
)
def angular_metric(ctx: DiagnosticContext) -> MetricResult:
    xs = [x[:, -1, :] for x in _boundaries(ctx)]  # (N, D): last token of each window
    runs = _runs(xs, ctx.options.max_run, angular_distance)
    return MetricResult(
        per_block={"angular_distance": runs["1"]},
        extra={"runs": runs},
        summary={"least_change_run_start": _best_starts(runs)},
    )


def block_influence(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - mean over tokens of cos(a, b); a, b: (N, T, D)."""
    return 1.0 - F.cosine_similarity(a.double(), b.double(), dim=-1).mean().item()


@register_metric(
    "block-influence", {"block_influence": True},
    "ShortGPT: 1 - mean over tokens of cos(x_l, x_l+1); runs of n blocks in extra",
)
def block_influence_metric(ctx: DiagnosticContext) -> MetricResult:
    runs = _runs(_boundaries(ctx), ctx.options.max_run, block_influence)
    return MetricResult(
        per_block={"block_influence": runs["1"]},
        extra={"runs": runs},
        summary={"least_influence_run_start": _best_starts(runs)},
    )


def _split_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, D) -> fit and held-out token sets: first half of windows vs the rest, or, with one
    window, first half of its positions vs the rest."""
    N, T, D = x.shape
    if N >= 2:
        half = N // 2
        return x[:half].reshape(-1, D), x[half:].reshape(-1, D)
    return x[0, : T // 2], x[0, T // 2:]


def ridge_r2(x_in: torch.Tensor, x_out: torch.Tensor, ridge: float) -> float:
    """Held-out R^2 of a ridge regression from x_in (N, T, D) to x_out (N, T, D)."""
    fit_x, test_x = (t.double() for t in _split_tokens(x_in))
    fit_y, test_y = (t.double() for t in _split_tokens(x_out))
    mx, my = fit_x.mean(0), fit_y.mean(0)
    X, Y = fit_x - mx, fit_y - my  # (M, D)
    gram = X.T @ X  # (D, D)
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    W = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), X.T @ Y)
    pred = (test_x - mx) @ W + my
    sse = ((test_y - pred) ** 2).sum()
    sst = ((test_y - test_y.mean(0)) ** 2).sum()
    return (1.0 - sse / sst).item() if sst > 0 else math.nan


@register_metric(
    "linear-r2", {"linear_r2": False},
    "held-out R^2 of a ridge regression from block input to block output (1: the block is ~linear)",
)
def linear_r2_metric(ctx: DiagnosticContext) -> MetricResult:
    xs = _boundaries(ctx)
    values = [ridge_r2(xs[l], xs[l + 1], ctx.options.ridge) for l in range(ctx.num_blocks)]
    return MetricResult(per_block={"linear_r2": values}, summary={"ridge": ctx.options.ridge})


def delta_correlation(d1: torch.Tensor, d2: torch.Tensor) -> float:
    """Mean over tokens of the Pearson correlation (over hidden dims) of two updates (N, T, D)."""
    a = d1.double() - d1.double().mean(-1, keepdim=True)
    b = d2.double() - d2.double().mean(-1, keepdim=True)
    return F.cosine_similarity(a, b, dim=-1).mean().item()


@register_metric(
    "delta-corr", {"delta_corr": None},
    "correlation of consecutive residual updates (h_l+1 - h_l) and (h_l+2 - h_l+1), per token",
)
def delta_corr_metric(ctx: DiagnosticContext) -> MetricResult:
    xs = _boundaries(ctx)
    deltas = [xs[l + 1] - xs[l] for l in range(ctx.num_blocks)]
    values: list[float | None] = [
        delta_correlation(deltas[l], deltas[l + 1]) for l in range(ctx.num_blocks - 1)
    ] + [None]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return MetricResult(
        per_block={"delta_corr": values},
        summary={"mean_delta_corr": sum(finite) / len(finite) if finite else math.nan},
    )
