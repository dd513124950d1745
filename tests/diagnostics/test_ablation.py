"""Removal and manipulations: shared replays equal full forward passes, weights come back intact."""

from __future__ import annotations

import math

import pytest
import torch

from layerwise.diagnostics.ablation import (
    neighbour_mean_metric, noise_metric, removal_metric, reset_metric, scale_metric,
)
from layerwise.diagnostics.trace import naive_nll, skipping_block
from layerwise.models import TINY_FAMILIES
from tests.diagnostics.conftest import make_ctx


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_shared_removal_scan_equals_naive_scan(family):
    ctx = make_ctx(f"tiny:{family}")
    assert ctx.trace.replayable
    result = removal_metric(ctx).per_block
    baseline = math.exp(naive_nll(ctx.model, ctx.windows))
    for i, ppl in enumerate(result["removal_perplexity"]):
        with skipping_block(ctx.layers, i):
            naive = math.exp(naive_nll(ctx.model, ctx.windows))
        assert ppl == pytest.approx(naive, rel=1e-5)
        assert result["removal_delta_pct"][i] == pytest.approx(100 * (naive / baseline - 1), abs=1e-3)


def test_manipulations_match_full_passes_and_restore_weights(ctx):
    before = snapshot(ctx.model)
    scale = scale_metric(ctx).per_block["scale_perplexity"]
    noise = noise_metric(ctx).per_block["noise_perplexity"]
    reset = reset_metric(ctx).per_block["reset_perplexity"]
    mean = neighbour_mean_metric(ctx).per_block["neighbour_mean_perplexity"]
    assert_unchanged(ctx.model, before)
    # Redo block 2's scale by hand, with a full forward pass, and compare.
    block = ctx.layers.blocks[2]
    with torch.no_grad():
        for p in block.parameters():
            if p.dim() == 2:
                p.mul_(0.9)
    assert scale[2] == pytest.approx(math.exp(naive_nll(ctx.model, ctx.windows)), rel=1e-5)
    ctx.model.load_state_dict(before)
    assert len(set(noise)) == len(noise) and len(set(reset)) == len(reset)
    assert all(math.isfinite(v) for v in noise + reset + mean)


def test_identity_manipulations_give_the_baseline():
    ctx = make_ctx(alphas=(1.0,), noise_fraction=0.0)
    baseline = math.exp(ctx.trace.nll)
    for value in scale_metric(ctx).per_block["scale_perplexity"] + noise_metric(ctx).per_block["noise_perplexity"]:
        assert value == pytest.approx(baseline, rel=1e-6)


def test_neighbour_mean_of_identical_blocks_is_a_no_op():
    ctx = make_ctx()
    state = ctx.layers.blocks[0].state_dict()
    for block in ctx.layers.blocks[1:]:
        block.load_state_dict(state)  # every block the same: any mean of neighbours is itself
    ctx.__dict__.pop("trace", None)
    baseline = math.exp(ctx.trace.nll)
    values = neighbour_mean_metric(ctx).per_block["neighbour_mean_perplexity"]
    assert values == pytest.approx([baseline] * len(values), rel=1e-6)


def test_several_alphas_get_their_own_fields():
    ctx = make_ctx(alphas=(0.5, 0.9))
    result = scale_metric(ctx)
    assert set(result.per_block) == {"scale_0.5_perplexity", "scale_0.5_delta_pct",
                                     "scale_0.9_perplexity", "scale_0.9_delta_pct"}
    assert result.fields["scale_0.5_delta_pct"] is True and result.fields["scale_0.5_perplexity"] is None


def test_a_nan_producing_manipulation_is_reported_not_dropped():
    ctx = make_ctx(alphas=(1e30,))
    values = scale_metric(ctx).per_block["scale_perplexity"]
    assert len(values) == ctx.num_blocks and any(not math.isfinite(v) for v in values)
