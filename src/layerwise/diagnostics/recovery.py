"""`recovery` (opt-in, costly): how fast a block re-learns its job after it is damaged.

For block i: add Gaussian noise (std = --noise-fraction x each matrix's std, the anatomy paper
uses 50%) to its weight matrices, then fine-tune *that block only* (AdamW, --recovery-lr) with the
language-modelling loss on the windows, and count the optimizer steps until perplexity on the same
windows is back within --recovery-tolerance % of the intact model (checked every
--recovery-eval-every steps, so counts are multiples of it). Training only the damaged block keeps
the cost at a backward pass through the blocks after it (they and the head are frozen); the paper
does not say what it trained. A block that does not recover within --recovery-max-steps is
reported as inf. The block's weights and every requires_grad flag are restored afterwards.
"""

from __future__ import annotations

import itertools
import math

import torch
from tqdm.auto import tqdm

from layerwise.diagnostics.ablation import add_noise, baseline_ppl, block_seed, perplexity_of, restored
from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric


def steps_to_recover(ctx: DiagnosticContext, i: int, target_ppl: float) -> tuple[float, list]:
    """(steps until perplexity <= target, or inf; the (step, perplexity) curve)."""
    opts, trace = ctx.options, ctx.trace
    block = ctx.layers.blocks[i]
    params = list(ctx.model.parameters())
    flags = [p.requires_grad for p in params]
    curve = []
    with restored(block):
        add_noise(block, opts.noise_fraction, block_seed(ctx, i))
        try:
            for p in params:
                p.requires_grad_(False)
            for p in block.parameters():
                p.requires_grad_(True)
            optimizer = torch.optim.AdamW(block.parameters(), lr=opts.recovery_lr, weight_decay=0.0)
            batches = itertools.cycle(trace.batches)
            for step in range(0, opts.recovery_max_steps + 1):
                if step % opts.recovery_eval_every == 0:
                    ppl = perplexity_of(trace.nll_from(i))
                    curve.append((step, ppl))
                    if ppl <= target_ppl:
                        return float(step), curve
                if step == opts.recovery_max_steps:
                    break
                batch = next(batches)
                hidden = trace.run_blocks(batch, i, batch.hidden[i])
                loss = trace.tail_loss(batch, hidden) / batch.ids[:, 1:].numel()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
                p.grad = None
    return math.inf, curve


@register_metric(
    "recovery", {"recovery_steps": True},
    "opt-in: fine-tuning steps for a noised block to get back within a tolerance of the intact "
    "perplexity (inf: not within --recovery-max-steps)",
    default=False,
)
def recovery_metric(ctx: DiagnosticContext) -> MetricResult:
    if not ctx.trace.replayable:
        raise NotImplementedError("recovery needs a replayable model tail (norm -> head)")
    opts = ctx.options
    target = baseline_ppl(ctx) * (1 + opts.recovery_tolerance_pct / 100)
    wanted = range(ctx.num_blocks) if opts.recovery_blocks is None else opts.recovery_blocks
    steps: list[float | None] = [None] * ctx.num_blocks
    curves = {}
    for i in tqdm(list(wanted), desc="recovery", unit="block", disable=not ctx.progress, leave=False):
        steps[i], curves[str(i)] = steps_to_recover(ctx, i, target)
    return MetricResult(
        per_block={"recovery_steps": steps},
        extra={"curves": curves},
        summary={"target_perplexity": target, "tolerance_pct": opts.recovery_tolerance_pct,
                 "max_steps": opts.recovery_max_steps, "lr": opts.recovery_lr,
                 "noise_fraction": opts.noise_fraction},
    )
