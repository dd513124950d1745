"""Layer discovery: structural, per family, with a generic fallback and clear failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.models import ARCHITECTURES, discover_layers
from tests.conftest import fresh_tiny


def test_discovers_blocks_parts_and_tying(tiny):
    model = tiny.model
    layers = discover_layers(model)
    cfg = model.config
    depth = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    assert layers.num_blocks == depth
    assert layers.source == "map" and layers.model_type in ARCHITECTURES
    assert layers.blocks is model.get_submodule(layers.blocks_path)
    assert model.get_input_embeddings() in layers.embed.values()
    assert model.get_output_embeddings() in layers.head.values()
    assert len(layers.norm) == 1
    assert layers.head_tied == bool(cfg.tie_word_embeddings)
    # Block i really is the i-th child of the block list, and its parameters carry that index.
    for i in range(depth):
        names = [name for name, _ in layers.block_params(i)]
        assert names and all(n.startswith(f"{layers.blocks_path}.{i}.") for n in names)


def test_map_miss_falls_back_to_generic_search():
    model = fresh_tiny("llama")
    model.model.blocks = model.model.layers  # the family map points at a path that is gone
    del model.model.layers
    layers = discover_layers(model)
    assert layers.source == "generic"
    assert layers.blocks_path == "model.blocks" and layers.num_blocks == 4


class RootBlock(nn.Module):
    def __init__(self, width: int, experts: int = 3):
        super().__init__()
        self.attn = nn.Linear(width, width)
        self.moe = nn.ModuleList(nn.Linear(width, width) for _ in range(experts))  # expert index!
        self.ln = nn.LayerNorm(width)

    def forward(self, x):
        return x + self.attn(self.ln(x)) + sum(e(x) for e in self.moe)


class RootListModel(nn.Module):
    """A causal-LM-shaped model whose block list sits at the root and whose MoE experts are
    numbered too: exactly the two shapes that regex-based layer indexing gets wrong."""

    def __init__(self, depth: int = 5, width: int = 8):
        super().__init__()
        self.emb = nn.Embedding(11, width)
        self.h = nn.ModuleList(RootBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, 11, bias=False)

    def get_output_embeddings(self):
        return self.out

    def forward(self, ids):
        x = self.emb(ids)
        for block in self.h:
            x = block(x)
        return self.out(self.final_norm(x))


def test_generic_fallback_on_root_level_list_with_numbered_experts():
    model = RootListModel()
    layers = discover_layers(model)
    assert layers.source == "generic"
    assert layers.blocks_path == "h" and layers.num_blocks == 5  # not the 3-expert lists
    assert list(layers.embed) == ["emb"] and list(layers.norm) == ["final_norm"]
    assert list(layers.head) == ["out"] and not layers.head_tied
    assert layers.attn_names == ("attn",) and layers.mlp_names == ("moe",)
    # Block 2's parameters include expert 0..2; none of them is mistaken for another block.
    assert {n.split(".")[1] for n, _ in layers.block_params(2)} == {"2"}
    model(torch.zeros(1, 3, dtype=torch.long)).sum().backward()


def test_no_block_list_is_a_clear_error():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5))
    with pytest.raises(LayerwiseError, match="cannot find the decoder blocks.*known architectures"):
        discover_layers(model)
