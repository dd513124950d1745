"""Exports of a selection to the tools users already run: Axolotl/Spectrum YAML and PEFT LoRA.

Both exports are checked before they are returned, by the matching rule of the tool that will read
them, against the model's own names: a pattern that would not unfreeze exactly the selected
parameters (Spectrum's output often does not) is a bug here, never a silent surprise there.

Axolotl reads `unfrozen_parameters` with `re.match` after turning every '.' that is not followed
by '+' into a literal dot, so patterns use plain '.' for the name separators and '.+' as the only
wildcard, and are anchored with '^' and '$'.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict

import yaml
from torch import nn
from transformers.pytorch_utils import Conv1D

from layerwise.models.arch import LayerMap
from layerwise.selection.resolve import Selection


def axolotl_pattern_matches(pattern: str, name: str) -> bool:
    """Axolotl's rule for one `unfrozen_parameters` entry (literal dots, re.match)."""
    return re.match(re.sub(r"\.(?!\+)", r"\\.", pattern), name) is not None


def _alt(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else "(" + "|".join(items) + ")"


def _block_groups(selection: Selection, layers: LayerMap) -> dict[tuple, list[int]]:
    """Blocks grouped by which of their local parameter names are selected (same set, one line)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in selection.blocks:
        params = layers.block_params(i)
        chosen = tuple(sorted(local for name, local in params if name in selection.names))
        whole = len(chosen) == len(params)
        groups[(whole, chosen)].append(i)
    return groups


def axolotl_patterns(selection: Selection, layers: LayerMap) -> list[str]:
    patterns = []
    for (whole, chosen), blocks in _block_groups(selection, layers).items():
        prefix = f"^{layers.blocks_path}.{_alt(map(str, blocks))}."
        patterns.append(prefix + (".+$" if whole else _alt(chosen) + "$"))
    block_names = {n for i in selection.blocks for n, _ in layers.block_params(i)}
    patterns += [f"^{name}$" for name in sorted(selection.names - block_names)]
    return patterns


def to_axolotl_yaml(selection: Selection, model: nn.Module, layers: LayerMap) -> str:
    """An Axolotl `unfrozen_parameters` YAML that unfreezes exactly the selection."""
    patterns = axolotl_patterns(selection, layers)
    names = [n for n, _ in model.named_parameters()]
    matched = {n for n in names if any(axolotl_pattern_matches(p, n) for p in patterns)}
    if matched != selection.names:
        raise AssertionError(
            f"axolotl export mismatch: extra {sorted(matched - selection.names)[:3]}, "
            f"missing {sorted(selection.names - matched)[:3]}"
        )
    header = (
        f"# layerwise selection '{selection.spec}': {len(selection.names)} tensors in "
        f"{len(selection.blocks)} blocks{' + ' + ', '.join(selection.parts) if selection.parts else ''}\n"
        "# Axolotl: every other parameter is frozen.\n"
    )
    return header + yaml.safe_dump({"unfrozen_parameters": patterns}, sort_keys=False, width=1000)


# --- PEFT ----------------------------------------------------------------------------------

def _lora_modules(model: nn.Module, selection: Selection) -> tuple[dict[str, nn.Module], set[str]]:
    """Modules LoRA can adapt whose weight is selected, and the selected names LoRA cannot cover."""
    adaptable = (nn.Linear, nn.Embedding, Conv1D)
    modules, covered = {}, set()
    names = {id(p): n for n, p in model.named_parameters()}
    for mod_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, adaptable) or weight is None:
            continue
        name = names.get(id(weight))
        # A tied head shares the embedding's weight: adapt that tensor once, where it first appears.
        if name in selection.names and name not in covered:
            modules[mod_name] = module
            covered.add(name)
    return modules, set(selection.names) - covered


def _peft_targets(kwargs: dict, model: nn.Module) -> set[str]:
    """The module names PEFT itself adapts under these LoraConfig kwargs.

    For a transformers model this is PEFT's own injection into a meta-device skeleton of the same
    config (no weights are allocated), so every rewrite PEFT applies on the way is included: PEFT
    >= 0.22 turns a regex `target_modules` on v4-to-v5 converted MoE families (qwen2_moe, mixtral)
    into bare leaf names, which adapts those modules in every block, plus the fused experts. Other
    modules are matched with PEFT's matcher directly.
    """
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(r=1, **kwargs)
    hf_config = getattr(model, "config", None)
    if getattr(hf_config, "model_type", None):
        with torch.device("meta"):
            skeleton = type(model)(copy.deepcopy(hf_config))
        inject_adapter_in_model(config, skeleton, low_cpu_mem_usage=True)
        return {
            name for name, m in skeleton.named_modules()
            if len(getattr(m, "lora_A", ())) or len(getattr(m, "lora_embedding_A", ()))
        }
    return {name for name, _ in model.named_modules() if name and check_target_module_exists(config, name)}


def to_peft_kwargs(selection: Selection, model: nn.Module, layers: LayerMap) -> tuple[dict, list[str]]:
    """LoraConfig keyword arguments adapting exactly the selected modules.

    Returns (kwargs, uncovered): `uncovered` lists selected parameters LoRA cannot adapt
    (norms, biases, fused expert tensors); train those with `modules_to_save` or a full selection.
    The list form (`target_modules` names + `layers_to_transform` + `layers_pattern`) is used
    when PEFT's own injection confirms it hits exactly the intended modules; otherwise a single
    full-match regex in `target_modules`, which PEFT applies with `re.fullmatch`; and where PEFT
    rewrites that regex (MoE families it converts from transformers v4 names), the full module
    names as a list. Whatever form is returned was checked by injecting it with PEFT itself.
    """
    wanted, uncovered = _lora_modules(model, selection)
    # GPT-2 style Conv1D stores weights transposed; PEFT needs to be told (it warns otherwise).
    extra = {"fan_in_fan_out": True} if wanted and all(isinstance(m, Conv1D) for m in wanted.values()) else {}
    if not wanted:
        raise ValueError(
            f"selection '{selection.spec}' contains no module LoRA can adapt "
            "(Linear, Embedding or Conv1D weights)"
        )
    prefix = layers.blocks_path + "."
    in_blocks = {m for m in wanted if m.startswith(prefix) and m[len(prefix):].split(".")[0].isdigit()}
    local = sorted({m[len(prefix):].split(".", 1)[1] for m in in_blocks})
    if in_blocks == set(wanted):
        kwargs = {
            "target_modules": local,
            "layers_to_transform": sorted({int(m[len(prefix):].split(".")[0]) for m in in_blocks}),
            "layers_pattern": layers.blocks_path.rsplit(".", 1)[-1],
            **extra,
        }
        if _peft_targets(kwargs, model) == set(wanted):
            return kwargs, sorted(uncovered)
    # Regex form: one alternative per group of blocks that share the same modules.
    by_modules: dict[int, list[str]] = defaultdict(list)
    for m in sorted(in_blocks):
        index, rest = m[len(prefix):].split(".", 1)
        by_modules[int(index)].append(rest)
    grouped: dict[tuple, list[int]] = defaultdict(list)
    for index, rests in by_modules.items():
        grouped[tuple(sorted(rests))].append(index)
    alternatives = [
        re.escape(prefix) + "(" + "|".join(map(str, idx)) + ")\\.(" + "|".join(map(re.escape, rests)) + ")"
        for rests, idx in grouped.items()
    ] + [re.escape(m) for m in sorted(set(wanted) - in_blocks)]
    kwargs = {"target_modules": "^(" + "|".join(alternatives) + ")$", **extra}
    if _peft_targets(kwargs, model) == set(wanted):
        return kwargs, sorted(uncovered)
    # PEFT rewrote the regex (see _peft_targets): name every module in full instead.
    kwargs = {"target_modules": sorted(wanted), **extra}
    got = _peft_targets(kwargs, model)
    if got != set(wanted):
        raise AssertionError(f"peft export mismatch: {sorted(got ^ set(wanted))[:3]}")
    return kwargs, sorted(uncovered)
