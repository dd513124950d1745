"""Exports, checked the way the consuming tool reads them, for every tiny family."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from layerwise.models import discover_layers
from layerwise.selection import resolve_selection, to_axolotl_yaml, to_peft_kwargs

SPECS = ["1", "1-2", "0,3:mlp", "mid:2:attn", "1:mlp+2:attn", "embed,norm", "-1:norms+0", "all"]


def axolotl_unfrozen(patterns: list[str], model: nn.Module) -> set[str]:
    """Axolotl's freeze_layers_except rule: '.' not followed by '+' is literal; re.match."""
    compiled = [re.compile(re.sub(r"\.(?!\+)", r"\\.", p)) for p in patterns]
    return {n for n, _ in model.named_parameters() if any(c.match(n) for c in compiled)}


@pytest.mark.parametrize("spec", SPECS)
def test_axolotl_yaml_unfreezes_exactly_the_selection(tiny, spec):
    layers = discover_layers(tiny.model)
    selection = resolve_selection(layers, spec)
    document = yaml.safe_load(to_axolotl_yaml(selection, tiny.model, layers))
    patterns = document["unfrozen_parameters"]
    assert all(p.startswith("^") and p.endswith("$") for p in patterns)
    assert axolotl_unfrozen(patterns, tiny.model) == selection.names


def lora_capable(model: nn.Module, names: frozenset[str]) -> set[str]:
    ids = {id(p): n for n, p in model.named_parameters()}
    chosen: dict[str, str] = {}  # weight name -> first module holding it (a tied head is skipped)
    for m, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Embedding, Conv1D)) and ids.get(id(mod.weight)) in names:
            chosen.setdefault(ids[id(mod.weight)], m)
    return set(chosen.values())


PROJECTIONS = {"gpt2": "c_attn", "gpt_neox": "query_key_value"}  # the others: q_proj,v_proj


@pytest.mark.parametrize("spec", SPECS + ["2:PROJ", "head"])
def test_peft_kwargs_adapt_exactly_the_selected_modules(tiny, spec):
    layers = discover_layers(tiny.model)
    spec = spec.replace("PROJ", PROJECTIONS.get(layers.model_type, "q_proj,v_proj"))
    selection = resolve_selection(layers, spec)
    kwargs, uncovered = to_peft_kwargs(selection, tiny.model, layers)
    peft_model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=2, **kwargs))
    adapted = {
        n.removeprefix("base_model.model.") for n, m in peft_model.named_modules()
        if len(getattr(m, "lora_A", ())) or len(getattr(m, "lora_embedding_A", ()))
    }
    expected = lora_capable(tiny.model, selection.names)
    ids = {id(p): n for n, p in tiny.model.named_parameters()}
    assert adapted == expected
    # Whatever LoRA cannot adapt (norms, biases, fused experts) is reported, not dropped.
    covered = {ids[id(tiny.model.get_submodule(m).weight)] for m in expected}
    assert set(uncovered) == set(selection.names) - covered
    if "layers_to_transform" in kwargs:
        prefix = layers.blocks_path + "."
        with_lora = sorted({int(m[len(prefix):].split(".")[0]) for m in expected})
        assert kwargs["layers_to_transform"] == with_lora
        assert kwargs["layers_pattern"] == layers.blocks_path.rsplit(".", 1)[-1]
    elif isinstance(kwargs["target_modules"], list):
        assert set(kwargs["target_modules"]) == expected  # full names, nothing to widen


def test_list_form_is_used_for_plain_block_ranges(tiny):
    layers = discover_layers(tiny.model)
    kwargs, _ = to_peft_kwargs(resolve_selection(layers, "1-2"), tiny.model, layers)
    assert isinstance(kwargs["target_modules"], list)
    assert kwargs["layers_to_transform"] == [1, 2]


def test_moe_selection_peft_would_widen_falls_back_to_full_names():
    """PEFT >= 0.22 rewrites a regex target on qwen2_moe into leaf names (every block, plus the
    fused experts). The export must notice by injecting with PEFT and name the modules in full."""
    from layerwise.models import load_model

    tiny = load_model("tiny:qwen2_moe", seed=0)
    layers = discover_layers(tiny.model)
    selection = resolve_selection(layers, "1:mlp+2:attn")
    kwargs, _ = to_peft_kwargs(selection, tiny.model, layers)
    regex = {"target_modules": "^(model\\.layers\\.1\\.mlp\\.shared_expert\\.down_proj)$"}
    widened = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=2, **regex))
    adapted = {n for n, m in widened.named_modules() if len(getattr(m, "lora_A", ()))}
    if len(adapted) == 1:
        pytest.skip("this PEFT applies a qwen2_moe regex as written")
    assert kwargs["target_modules"] == sorted(lora_capable(tiny.model, selection.names))
