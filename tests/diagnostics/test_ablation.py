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
    # No trace is taken beforehand: the first manipulation must not become the baseline.
    before = snapshot(ctx.model)
    scale = scale_metric(ctx).per_block["scale_perplexity"]
    noise = noise_metric(ctx).per_block["noise_perplexity"]
    reset = reset_metric(ctx).per_block["reset_perplexity"]
    mean = neighbour_mean_metric(ctx).per_block["neighbour_mean_perplexity"]
    assert_unchanged(ctx.model, before)
    # Redo the scale of the first and a middle block by hand, with full forward passes.
    for i in (0, 2):
        with torch.no_grad():
            for p in ctx.layers.blocks[i].parameters():
                if p.dim() == 2:
                    p.mul_(0.9)
        assert scale[i] == pytest.approx(math.exp(naive_nll(ctx.model, ctx.windows)), rel=1e-5)
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


def test_reset_really_reinitialises_a_loaded_checkpoint(tmp_path):
    # A model loaded with from_pretrained has its tensors marked as initialised; reset must still
    # re-initialise them (and leave the marks as they were).
    make_ctx().model.save_pretrained(tmp_path)
    from tests.diagnostics.conftest import make_ctx as _  # noqa: F401
    from layerwise.data import load_corpus, token_windows
    from layerwise.diagnostics import DiagnosticContext, DiagnosticOptions
    from layerwise.models import discover_layers
    from layerwise.models.tiny import byte_tokenizer
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    weight = model.model.layers[1].mlp.up_proj.weight
    mark = getattr(weight, "_is_hf_initialized", None)
    windows = token_windows(byte_tokenizer(), load_corpus(None), 32, 4)
    ctx = DiagnosticContext(model, discover_layers(model), windows, DiagnosticOptions(batch_size=2),
                            progress=False)
    before = weight.detach().clone()
    values = reset_metric(ctx).per_block["reset_delta_pct"]
    assert all(abs(v) > 1e-6 for v in values), values  # every reset changed the perplexity
    assert torch.equal(weight, before) and getattr(weight, "_is_hf_initialized", None) == mark
