"""Freezing by selection: exactly the selected parameters train, and every parameter is counted."""

from __future__ import annotations

import copy

import pytest
import torch

from layerwise.models import discover_layers
from layerwise.selection import apply_selection, resolve_selection, summarize

SPECS = ["1", "1-2:mlp", "mid:2:attn", "embed,norm", "head", "all", "-1:norms+0"]


@pytest.mark.parametrize("spec", SPECS)
def test_only_selected_parameters_get_gradients(tiny, spec):
    model = copy.deepcopy(tiny.model)
    layers = discover_layers(model)
    selection = resolve_selection(layers, spec)
    trainable = apply_selection(model, selection)

    named = dict(model.named_parameters())
    assert {n for n, p in named.items() if p.requires_grad} == selection.names
    assert trainable == sum(named[n].numel() for n in selection.names)

    # A real forward and backward pass: gradients land on the selection and nowhere else.
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    with_grad = {n for n, p in named.items() if p.grad is not None}
    assert with_grad == selection.names
    assert all(named[n].grad.abs().sum() > 0 for n in selection.names if "norm" not in n)


@pytest.mark.parametrize("spec", [None, *SPECS])
def test_summary_accounts_for_every_parameter(tiny, spec):
    layers = discover_layers(tiny.model)
    selection = resolve_selection(layers, spec) if spec else None
    summary = summarize(tiny.model, layers, selection)
    params = dict(tiny.model.named_parameters())
    assert summary.total == sum(p.numel() for p in params.values())
    assert sum(r.total for r in summary.rows) == summary.total
    assert sum(r.tensors for r in summary.rows) == len(params)
    expected_trainable = sum(params[n].numel() for n in selection.names) if selection else 0
    assert summary.trainable == expected_trainable
    assert summary.frozen == summary.total - expected_trainable
    blocks = [r for r in summary.rows if r.block is not None]
    assert [r.block for r in blocks] == list(range(layers.num_blocks))
    head = next(r for r in summary.rows if r.label == "head")
    assert (head.note == "tied to embed") == layers.head_tied
    if layers.head_tied:
        assert head.total == 0  # counted once, under embed


def test_share_on_whole_blocks(llama30):
    layers = discover_layers(llama30)
    selection = resolve_selection(layers, "20%-80%")
    summary = summarize(llama30, layers, selection)
    per_block = summary.rows[0].total
    assert summary.trainable == 18 * per_block
    assert summary.share == pytest.approx(18 * per_block / summary.total)
    assert [r.trainable == r.total for r in summary.rows[:30]] == [6 <= i <= 23 for i in range(30)]
