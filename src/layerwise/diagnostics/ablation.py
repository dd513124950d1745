"""Removal and manipulation of one block at a time, scored by perplexity on the windows.

- `removal`: skip block i (its output is its input).
- `scale`: multiply block i's weight matrices (every 2-D tensor) by alpha (default 0.9; several
  alphas allowed).
- `noise`: add Gaussian noise with std = fraction x that matrix's std to each weight matrix.
- `reset`: re-initialise block i with the model's own `_init_weights` (the init it was built with).
- `neighbour-mean`: replace every tensor of block i with the mean of blocks i-1 and i+1 (the edge
  blocks, which have one neighbour, take that neighbour's tensors).

Each writes `<name>_perplexity` and `<name>_delta_pct` = 100 x (ppl / baseline - 1). The delta
carries the importance orientation (higher = more important); the perplexity is the same ranking,
so it is marked descriptive to keep it out of the agreement table twice. Blocks before i
are untouched, so every scan starts from the recorded input of block i (see trace.py) and runs
only blocks i.. (removal: i+1..) and the head. Weights are restored bit for bit in `finally`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric
from layerwise.diagnostics.trace import naive_nll, skipping_block


def perplexity_of(nll: float) -> float:
    return math.exp(nll) if nll < 700 else math.inf


def delta_pct(ppl: float, baseline: float) -> float:
    return 100.0 * (ppl / baseline - 1.0)


@contextmanager
def restored(block: nn.Module) -> Iterator[None]:
    """Whatever happens to `block`'s tensors inside, they are bit-identical afterwards."""
    saved = {name: t.detach().clone() for name, t in block.state_dict().items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in block.state_dict().items():
                tensor.copy_(saved[name])


def _matrices(block: nn.Module) -> list[torch.Tensor]:
    return [p for p in block.parameters() if p.dim() >= 2]


def block_seed(ctx: DiagnosticContext, i: int) -> int:
    """A seed per (run seed, block), so each block's random manipulation is reproducible; offset so
    that it never equals the seed a model was built with (a reset would then rebuild the block)."""
    return 1_000_003 * (ctx.options.seed + 1) + i


@torch.no_grad()
def add_noise(block: nn.Module, fraction: float, seed: int) -> None:
    """Add N(0, (fraction * std(W))^2) to every weight matrix W of `block`, in place."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for w in _matrices(block):
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float32)
        w.add_(noise.to(w.device, w.dtype) * (fraction * w.float().std()).to(w.dtype))


def _scan(ctx: DiagnosticContext, label: str, nll_for_block: Callable[[int], float]) -> list[float]:
    # Trace the intact model *before* any block is touched: the trace is the baseline.
    ctx.trace  # noqa: B018
    bar = tqdm(range(ctx.num_blocks), desc=label, unit="block", disable=not ctx.progress, leave=False)
    return [perplexity_of(nll_for_block(i)) for i in bar]


def _result(name: str, ppls: list[float], baseline: float, summary: dict | None = None) -> MetricResult:
    return MetricResult(
        per_block={
            f"{name}_perplexity": ppls,
            f"{name}_delta_pct": [delta_pct(p, baseline) for p in ppls],
        },
        summary=summary or {},
    )


def removal_nll(ctx: DiagnosticContext, i: int) -> float:
    """NLL with block i skipped: replay blocks i+1.. from block i's recorded input."""
    trace = ctx.trace
    if trace.replayable:
        return trace.nll_from(i + 1, inputs=[b.hidden[i] for b in trace.batches])
    with skipping_block(ctx.layers, i):
        return naive_nll(ctx.model, ctx.windows, ctx.options.batch_size)


def manipulated_nll(ctx: DiagnosticContext, i: int) -> float:
    """NLL with block i's weights as they are now (inside a manipulation): replay from block i."""
    trace = ctx.trace
    if trace.replayable:
        return trace.nll_from(i)
    return naive_nll(ctx.model, ctx.windows, ctx.options.batch_size)


def manipulation_scan(ctx: DiagnosticContext, label: str, manipulate: Callable[[int, nn.Module], None]) -> list[float]:
    def score(i: int) -> float:
        block = ctx.layers.blocks[i]
        with restored(block), torch.no_grad():
            manipulate(i, block)
            return manipulated_nll(ctx, i)

    return _scan(ctx, label, score)


def baseline_ppl(ctx: DiagnosticContext) -> float:
    return perplexity_of(ctx.trace.nll)


@register_metric(
    "removal", {"removal_perplexity": None, "removal_delta_pct": True},
    "perplexity when block i is skipped (its output is its input), and % change",
)
def removal_metric(ctx: DiagnosticContext) -> MetricResult:
    ppls = _scan(ctx, "removal", lambda i: removal_nll(ctx, i))
    return _result("removal", ppls, baseline_ppl(ctx))


def _alpha_label(alpha: float) -> str:
    return f"{alpha:g}"


@register_metric(
    "scale", {"scale_perplexity": None, "scale_delta_pct": True},
    "perplexity when block i's weight matrices are multiplied by alpha (--alpha, default 0.9)",
)
def scale_metric(ctx: DiagnosticContext) -> MetricResult:
    alphas = ctx.options.alphas
    baseline = baseline_ppl(ctx)
    per_block, orientation = {}, {}
    for alpha in alphas:
        name = "scale" if len(alphas) == 1 else f"scale_{_alpha_label(alpha)}"

        def scale(i, block, alpha=alpha):
            for w in _matrices(block):
                w.mul_(alpha)

        result = _result(name, manipulation_scan(ctx, f"scale x{alpha:g}", scale), baseline)
        per_block.update(result.per_block)
        orientation.update({f: f.endswith("_delta_pct") or None for f in result.per_block})
    return MetricResult(per_block=per_block, summary={"alphas": list(alphas)}, fields=orientation)


@register_metric(
    "noise", {"noise_perplexity": None, "noise_delta_pct": True},
    "perplexity after adding Gaussian noise (std = --noise-fraction x each matrix's std) to block i",
)
def noise_metric(ctx: DiagnosticContext) -> MetricResult:
    fraction = ctx.options.noise_fraction
    ppls = manipulation_scan(
        ctx, "noise", lambda i, block: add_noise(block, fraction, block_seed(ctx, i))
    )
    return _result("noise", ppls, baseline_ppl(ctx), {"noise_fraction": fraction})


def reinitialise(model: nn.Module, block: nn.Module, seed: int) -> None:
    """Re-run the model's own weight init on every submodule of `block`.

    transformers marks loaded tensors `_is_hf_initialized` and its init functions then skip them
    (so that loading never re-initialises weights); the marks are lifted for the call and put back.
    """
    init = getattr(model, "_init_weights", None)
    if init is None:
        raise TypeError(f"{type(model).__name__} has no _init_weights; 'reset' needs an HF model")
    tensors = list(block.parameters()) + list(block.buffers())
    marks = [t.__dict__.pop("_is_hf_initialized", None) for t in tensors]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in block.modules():
                init(module)
    finally:
        for tensor, mark in zip(tensors, marks):
            if mark is not None:
                tensor._is_hf_initialized = mark


@register_metric(
    "reset", {"reset_perplexity": None, "reset_delta_pct": True},
    "perplexity when block i is re-initialised with the model's own init",
)
def reset_metric(ctx: DiagnosticContext) -> MetricResult:
    ppls = manipulation_scan(
        ctx, "reset", lambda i, block: reinitialise(ctx.model, block, block_seed(ctx, i))
    )
    return _result("reset", ppls, baseline_ppl(ctx))


@register_metric(
    "neighbour-mean", {"neighbour_mean_perplexity": None, "neighbour_mean_delta_pct": True},
    "perplexity when block i's tensors are replaced by the mean of blocks i-1 and i+1",
)
def neighbour_mean_metric(ctx: DiagnosticContext) -> MetricResult:
    blocks = ctx.layers.blocks

    def replace(i, block):
        neighbours = [blocks[j].state_dict() for j in (i - 1, i + 1) if 0 <= j < len(blocks)]
        for name, tensor in block.state_dict().items():
            tensor.copy_(sum(n[name].float() for n in neighbours) / len(neighbours))

    if len(blocks) < 2:
        ppls = [math.nan] * len(blocks)
    else:
        ppls = manipulation_scan(ctx, "neighbour-mean", replace)
    return _result("neighbour_mean", ppls, baseline_ppl(ctx))
