"""gradient, recovery and prune: real backward passes, real optimizer steps, real checkpoints."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import transformers

from layerwise.diagnostics.gradient import gradient_metric
from layerwise.diagnostics.prune import greedy_prune, prune_metric, save_pruned
from layerwise.diagnostics.recovery import recovery_metric
from layerwise.diagnostics.trace import naive_nll, skipping_block
from layerwise.errors import LayerwiseError
from layerwise.evaluation import perplexity
from tests.diagnostics.conftest import make_ctx


def test_gradient_matches_autograd_and_restores_state(ctx):
    flags = {n: p.requires_grad for n, p in ctx.model.named_parameters()}
    ctx.model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    result = gradient_metric(ctx).per_block
    assert not ctx.model.model.layers[0].mlp.up_proj.weight.requires_grad  # restored
    assert all(p.grad is None for p in ctx.model.parameters())
    ctx.model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    assert {n: p.requires_grad for n, p in ctx.model.named_parameters()} == flags
    # the same gradient by hand: mean NLL over all windows at once
    ids = ctx.windows
    logits = ctx.model(input_ids=ids, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    block = ctx.layers.blocks[2]
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in block.parameters())).item()
    taylor = sum((p * p.grad).abs().sum() for p in block.parameters()).item()
    ctx.model.zero_grad(set_to_none=True)
    assert result["gradient_norm"][2] == pytest.approx(norm, rel=1e-4)
    assert result["taylor_score"][2] == pytest.approx(taylor, rel=1e-4)


def trained(ctx, steps: int = 60):
    """Fit the tiny model to its windows first, so that damaging a block visibly hurts."""
    optimizer = torch.optim.AdamW(ctx.model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = ctx.model(input_ids=ctx.windows, labels=ctx.windows, use_cache=False).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ctx.model.zero_grad(set_to_none=True)
    ctx.model.eval()
    return ctx


def test_recovery_counts_steps_and_restores_the_block():
    # The tiny model's draw changes with library versions (a fixed sizing failed twice on fresh
    # venvs: the held-out perplexity never got within the tolerance), so the target is set from
    # the block's own recovery curve: one pass that never recovers (tolerance 1e-6 %: the whole curve),
    # then a tolerance halfway between the damage and the curve's best, which must then be
    # reached at exactly the first checked step at or below it.
    opts = dict(noise_fraction=4.0, recovery_blocks=(1,), recovery_max_steps=30,
                recovery_eval_every=2, recovery_lr=1e-3)
    ctx = trained(make_ctx(recovery_tolerance_pct=1e-6, **opts))
    before = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    first = recovery_metric(ctx)
    intact = first.summary["intact_perplexity"]
    curve = first.extra["curves"]["1"]
    assert [s for s, _ in curve] == list(range(0, 31, 2))
    damaged, best = curve[0][1], min(p for _, p in curve)
    assert damaged > 1.05 * intact  # the noise did damage
    assert best < damaged - 0.05 * (damaged - intact)  # training the block undoes some of it
    reached = [s for s, p in curve if p <= first.summary["target_perplexity"]]
    assert first.per_block["recovery_steps"][1] == (reached[0] if reached else math.inf)
    target = (damaged + max(best, intact)) / 2
    ctx.options = dataclasses.replace(ctx.options, recovery_tolerance_pct=100 * (target / intact - 1))
    result = recovery_metric(ctx)
    steps = result.per_block["recovery_steps"]
    assert result.summary["held_out_windows"] is True  # 2 batches: trains on one, checks the other
    assert steps[0] is None and steps[2] is None  # not asked for
    assert steps[1] == next(s for s, p in curve if p <= result.summary["target_perplexity"])
    assert steps[1] > 0 and steps[1] % 2 == 0
    again = result.extra["curves"]["1"]  # the same noise, the same steps: the same curve
    assert [s for s, _ in again] == [s for s, _ in curve[:len(again)]]
    assert [p for _, p in again] == pytest.approx([p for _, p in curve[:len(again)]], rel=1e-5)
    assert all(torch.equal(before[n], p) for n, p in ctx.model.named_parameters())
    assert all(p.requires_grad for p in ctx.model.parameters())


def test_recovery_that_never_happens_is_inf():
    ctx = trained(make_ctx(noise_fraction=3.0, recovery_blocks=(1,), recovery_max_steps=2,
                           recovery_eval_every=1, recovery_lr=1e-9, recovery_tolerance_pct=0.01))
    assert recovery_metric(ctx).per_block["recovery_steps"][1] == math.inf


def naive_greedy(ctx, steps):
    """The same greedy removal, with full forward passes and block-skipping hooks."""
    removed, order = [], []
    for _ in range(steps):
        scores = {}
        for i in range(ctx.num_blocks):
            if i in removed:
                continue
            hooks = [skipping_block(ctx.layers, j) for j in removed + [i]]
            for h in hooks:
                h.__enter__()
            try:
                scores[i] = naive_nll(ctx.model, ctx.windows)
            finally:
                for h in reversed(hooks):
                    h.__exit__(None, None, None)
        best = min(scores, key=lambda i: (scores[i], i))
        removed.append(best)
        order.append(best)
    return order, math.exp(scores[best])


def test_greedy_prune_matches_full_passes_and_saves_a_loadable_checkpoint(tmp_path):
    ctx = make_ctx("tiny:qwen2", num_seqs=2, prune_blocks=2)
    result = prune_metric(ctx)
    order, curve = result.extra["order"], result.extra["perplexity_curve"]
    expected_order, expected_ppl = naive_greedy(ctx, 2)
    assert order == expected_order
    assert curve[-1] == pytest.approx(expected_ppl, rel=1e-5)
    assert sorted(result.per_block["prune_order"]) == [1.0, 2.0, 3.0, 3.0]

    out = save_pruned(ctx.model, None, ctx.layers, order, tmp_path / "pruned")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 2 and len(reloaded.model.layers) == 2
    assert [b.self_attn.layer_idx for b in reloaded.model.layers] == [0, 1]
    assert perplexity(reloaded, ctx.windows) == pytest.approx(curve[-1], rel=1e-4)
    # the KV cache lines up again: cached generation equals uncached
    prompt = ctx.windows[:1, :8]
    with_cache = reloaded.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
    without = reloaded.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)
    with pytest.raises(LayerwiseError, match="already exists and is not an empty directory"):
        save_pruned(ctx.model, None, ctx.layers, order, out)


def test_prune_that_would_leave_no_block_is_refused():
    ctx = make_ctx(prune_blocks=4)
    with pytest.raises(LayerwiseError, match="--prune-blocks 4 would leave no block"):
        prune_metric(ctx)
