"""The traced pass and its replays reproduce the model's own loss, whatever the head looks like."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from layerwise.diagnostics.trace import BlockTrace, naive_nll
from layerwise.models import discover_layers
from tests.diagnostics.conftest import make_ctx


def test_replay_from_every_block_equals_the_intact_pass(ctx):
    trace = ctx.trace
    assert trace.replayable
    for start in range(ctx.num_blocks + 1):
        assert trace.nll_from(start) == pytest.approx(trace.nll, rel=1e-6)
    assert trace.nll == pytest.approx(naive_nll(ctx.model, ctx.windows), rel=1e-6)


def test_a_head_that_is_not_a_plain_linear_goes_through_the_model_module():
    ctx = make_ctx()
    ctx.model.lm_head = nn.Sequential(ctx.model.lm_head)  # still the model's own head, wrapped
    ctx.layers = discover_layers(ctx.model)
    assert ctx.trace.replayable
    assert ctx.trace.nll == pytest.approx(naive_nll(ctx.model, ctx.windows), rel=1e-6)


def test_logit_softcapping_is_replayed():
    config = transformers.Gemma2Config(
        vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    windows = torch.randint(0, 260, (2, 16))
    trace = BlockTrace.record(model, discover_layers(model), windows, batch_size=1)
    assert trace.replayable
    assert trace.nll == pytest.approx(naive_nll(model, windows), rel=1e-6)
