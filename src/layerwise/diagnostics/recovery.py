"""`recovery` (opt-in, costly): how fast a block re-learns its job after it is damaged.

For block i: add Gaussian noise (std = --noise-fraction x each matrix's std, the anatomy paper
uses 50%) to its weight matrices, then fine-tune *that block only* (AdamW, --recovery-lr) with the
language-modelling loss, and count the optimizer steps until perplexity is back within
--recovery-tolerance % of the intact model (checked every --recovery-eval-every steps, so counts
are multiples of it). With two or more batches of windows, the first half of the batches trains
and the rest is held out for the perplexity check, so that fitting the evaluation text itself
cannot pass for recovery; with a single batch both are the same windows (noted in the summary). Training only the damaged block keeps
the cost at a backward pass through the blocks after it (they and the head are frozen); the paper
does not say what it trained. A block that does not recover within --recovery-max-steps is
reported as inf. The block's weights and every requires_grad flag are restored afterwards.
"""

from __future__ import annotations

import itertools
import math

import torch
from tqdm.auto import tqdm

from layerwise.diagnostics.ablation import add_noise, block_seed, perplexity_of, restored
from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric


def split_batches(n: int) -> tuple[list[int], list[int]]:
    """(training batches, held-out batches): halves, or the one batch for both."""
    if n < 2:
        return [0], [0]
    return list(range(n // 2)), list(range(n // 2, n))


def steps_to_recover(ctx: DiagnosticContext, i: int, target_ppl: float) -> tuple[float, list]:
    """(steps until held-out perplexity <= target, or inf; the (step, perplexity) curve)."""
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
            train, held_out = split_batches(len(trace.batches))
            batches = itertools.cycle([trace.batches[b] for b in train])
            for step in range(0, opts.recovery_max_steps + 1):
                if step % opts.recovery_eval_every == 0:
                    ppl = perplexity_of(trace.nll_from(i, batches=held_out))
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
    train, held_out = split_batches(len(ctx.trace.batches))
    intact = perplexity_of(ctx.trace.nll_from(ctx.num_blocks, batches=held_out))
    target = intact * (1 + opts.recovery_tolerance_pct / 100)
    wanted = range(ctx.num_blocks) if opts.recovery_blocks is None else opts.recovery_blocks
    steps: list[float | None] = [None] * ctx.num_blocks
    curves = {}
    for i in tqdm(list(wanted), desc="recovery", unit="block", disable=not ctx.progress, leave=False):
        steps[i], curves[str(i)] = steps_to_recover(ctx, i, target)
    return MetricResult(
        per_block={"recovery_steps": steps},
        extra={"curves": curves},
        summary={"held_out_windows": held_out != train,
                 "intact_perplexity": intact, "target_perplexity": target,
                 "tolerance_pct": opts.recovery_tolerance_pct,
                 "max_steps": opts.recovery_max_steps, "lr": opts.recovery_lr,
                 "noise_fraction": opts.noise_fraction},
    )
