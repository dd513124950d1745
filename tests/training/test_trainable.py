"""What trains: every parameter is expected trainable or expected frozen; LoRA budgets; lr-scale."""

from __future__ import annotations

import pytest
import torch

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.models.arch import discover_layers
from layerwise.training.config import TrainConfig
from layerwise.training.trainable import block_of, build_optimizer, prepare_trainable
from tests.conftest import FAMILIES, fresh_tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_mode_freezes_everything_else(family):
    model = load_model(f"tiny:{family}").model
    layers = discover_layers(model)
    t = prepare_trainable(model, TrainConfig(layers="2"))
    expected = {n for n, _ in layers.block_params(2)}
    for name, p in model.named_parameters():
        assert p.requires_grad == (name in expected), name
    assert t.blocks == (2,) and t.lowest_block == 2
    assert t.trainable_params == sum(p.numel() for n, p in model.named_parameters() if n in expected)


def test_full_and_parts():
    model = load_model("tiny:llama").model
    t = prepare_trainable(model, TrainConfig(full=True))
    assert all(p.requires_grad for p in model.parameters()) and t.share == 1.0
    assert t.lowest_block is None  # the embedding trains: gradients reach the bottom
    t = prepare_trainable(model, TrainConfig(layers="1:mlp"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".1.mlp." in n for n in trainable)


def test_a_selection_with_nothing_to_train_is_refused():
    model = load_model("tiny:llama").model
    with pytest.raises(LayerwiseError, match="unknown submodule filter 'nonexistent_part'.*valid: attn"):
        prepare_trainable(model, TrainConfig(layers="1:nonexistent_part"))
    with pytest.raises(LayerwiseError):
        prepare_trainable(model, TrainConfig(layers="7"))  # 4 blocks only


@pytest.mark.parametrize("kwargs, pattern", [
    ({}, "exactly one of --layers SPEC, --full, --lora"),
    ({"full": True, "lora": True}, r"got --full and --lora"),
    ({"full": True, "method": "ppo"}, "valid: sft, grpo, dr_grpo, dapo, rloo, dpo"),
    ({"full": True, "method": "grpo", "batch_size": 6, "num_generations": 4}, "multiple of"),
    ({"full": True, "steps": 0}, "--steps 0"),
    ({"layers": "1", "merge": True}, "--merge applies to --lora"),
])
def test_config_validation(kwargs, pattern):
    with pytest.raises(LayerwiseError, match=pattern):
        TrainConfig(**kwargs)


def _lora_blocks(model):
    layers = discover_layers(model.get_base_model())
    return sorted({block_of(n, layers) for n, p in model.named_parameters() if p.requires_grad})


def test_lora_everywhere_and_mid_block_budget():
    base = fresh_tiny("llama", num_hidden_layers=30, hidden_size=32, intermediate_size=64)
    t = prepare_trainable(base, TrainConfig(lora=True, rank=4))
    assert _lora_blocks(t.model) == list(range(30)) and t.lora["rank_per_module"] == 4
    assert all("lora_" in n for n, p in t.model.named_parameters() if p.requires_grad)
    attn_only = {n.split(".")[-4] for n, p in t.model.named_parameters() if p.requires_grad}
    assert attn_only == {"q_proj", "k_proj", "v_proj", "o_proj"}
    full_budget = t.trainable_params

    # Mid-block LoRA: the same total rank (4 x 30 blocks) placed in the middle fifth (blocks 12-17).
    base = fresh_tiny("llama", num_hidden_layers=30, hidden_size=32, intermediate_size=64)
    t = prepare_trainable(base, TrainConfig(lora=True, rank=4, lora_layers="40%-60%"))
    assert _lora_blocks(t.model) == list(range(12, 18))
    assert t.lora["rank_per_module"] == 20 and t.lora["total_rank_per_module_type"] == 120
    assert t.trainable_params == full_budget  # same parameter budget, placed mid-depth
    assert t.lowest_block == 12

    base = fresh_tiny("llama", num_hidden_layers=30, hidden_size=32, intermediate_size=64)
    t = prepare_trainable(base, TrainConfig(lora=True, rank=4, lora_layers="40%-60%",
                                            lora_budget="per-layer", lora_targets="all"))
    assert t.lora["rank_per_module"] == 4
    names = {n.split(".")[-4] for n, p in t.model.named_parameters() if p.requires_grad}
    assert {"gate_proj", "up_proj", "down_proj", "q_proj"} <= names


def test_lr_scale_groups():
    model = load_model("tiny:llama").model
    config = TrainConfig(layers="1-3", lr=1e-3, lr_scale=["2=3", "3=0.5"])
    prepare_trainable(model, config)
    opt = build_optimizer(model, config)
    layers = discover_layers(model)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in lr_of
            continue
        expected = {1: 1e-3, 2: 3e-3, 3: 5e-4}[block_of(name, layers)]
        assert lr_of[id(p)] == pytest.approx(expected), name
    in_groups = sum(len(g["params"]) for g in opt.param_groups)
    assert in_groups == sum(1 for p in model.parameters() if p.requires_grad)


def test_lr_scale_errors():
    model = load_model("tiny:llama").model
    for item, pattern in (("2", "not SPEC=FACTOR"), ("2=x", "not a number"), ("2=-1", "must be > 0"),
                          ("0=2", "names no block that trains")):
        config = TrainConfig(layers="1-3", lr_scale=[item])
        prepare_trainable(model, config)
        with pytest.raises(LayerwiseError, match=pattern):
            build_optimizer(model, config)


def test_no_gradient_below_the_lowest_trainable_block():
    """Frozen blocks below the lowest trainable one never run backward (hooks never fire)."""
    model = load_model("tiny:llama").model
    prepare_trainable(model, TrainConfig(layers="2"))
    layers = discover_layers(model)
    fired = []
    handles = [block.register_full_backward_hook(lambda m, gi, go, i=i: fired.append(i))
               for i, block in enumerate(layers.blocks)]
    model.train()
    ids = torch.randint(0, 200, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    for h in handles:
        h.remove()
    assert sorted(set(fired)) == [2, 3]
    assert all(p.grad is None for n, p in model.named_parameters() if block_of(n, layers) != 2)
