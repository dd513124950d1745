"""Resolve a selection spec against a model into an explicit set of parameter names.

A `Selection` is the single currency of every command: the names it holds are exactly the
parameters that train (`apply_selection` sets `requires_grad` from them, nothing else does), and
`summarize` accounts for every parameter of the model as trainable or frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap, discover_layers, is_norm
from layerwise.selection.grammar import (
    AllBlocks, DepthRange, Group, IndexRange, Item, Mid, Part, Ranked, parse_selection,
)
from layerwise.selection.scores import read_block_scores

GROUP_FILTERS = ("attn", "mlp", "norms")


@dataclass(frozen=True)
class Selection:
    """What a spec resolved to on one model."""

    spec: str
    names: frozenset[str]  # the selected (trainable) parameter names
    blocks: tuple[int, ...]  # blocks with at least one selected parameter
    parts: tuple[str, ...]  # non-block parts with at least one selected parameter

    def __contains__(self, name: str) -> bool:
        return name in self.names


def _block_range(item: Item, n: int, spec: str) -> list[int]:
    def index(i: int) -> int:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise LayerwiseError(
                f"block {i} in selection '{spec}' is out of range: the model has {n} blocks "
                f"(valid 0..{n - 1}, or -{n}..-1 from the end)"
            )
        return j

    if isinstance(item, AllBlocks):
        return list(range(n))
    if isinstance(item, IndexRange):
        start = index(item.start)
        end = n - 1 if item.end is None else index(item.end)
        if end < start:
            raise LayerwiseError(
                f"empty range {item.start}-{item.end} in selection '{spec}': the start block "
                f"({start}) comes after the end block ({end})"
            )
        return list(range(start, end + 1))
    if isinstance(item, DepthRange):
        start = math.floor(item.start * n)
        if item.end is None:
            return [min(start, n - 1)]
        return list(range(start, min(math.ceil(item.end * n), n)))
    if isinstance(item, Mid):
        if item.k > n:
            raise LayerwiseError(f"mid:{item.k} in selection '{spec}' asks for more than the {n} blocks")
        first = (n - item.k) // 2
        return list(range(first, first + item.k))
    raise AssertionError(item)


def _ranked(item: Ranked, metric: str | None, layers: LayerMap, spec: str) -> list[int]:
    from layerwise.models.identity import structure_fingerprint

    used, scores = read_block_scores(item.path, metric or item.metric, num_blocks=layers.num_blocks,
                                     structure=structure_fingerprint(layers))
    if item.k > len(scores):
        raise LayerwiseError(
            f"{'top' if item.best else 'bottom'}:{item.k} asks for {item.k} blocks but "
            f"{item.path} has finite '{used}' scores for only {len(scores)}"
        )
    order = sorted(scores, key=lambda i: (-scores[i] if item.best else scores[i], i))
    return sorted(order[: item.k])


def filter_vocabulary(layers: LayerMap, blocks: list[int]) -> set[str]:
    """Names a ':filter' may use on these blocks: group names, submodule and parameter names."""
    vocab = set(GROUP_FILTERS)
    for i in blocks:
        for _, local in layers.block_params(i):
            vocab.update(part for part in local.split(".") if not part.isdigit())
    return vocab


def _norm_params(block: nn.Module) -> set[str]:
    return {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, module in block.named_modules() if is_norm(module)
        for p_name, _ in module.named_parameters(recurse=False)
    }


def _filtered(layers: LayerMap, block: int, filters: tuple[str, ...] | None) -> set[str]:
    params = layers.block_params(block)
    if filters is None:
        return {name for name, _ in params}
    norms = _norm_params(layers.blocks[block])
    chosen = set()
    for name, local in params:
        parts = local.split(".")
        for f in filters:
            if (
                (f == "attn" and parts[0] in layers.attn_names)
                or (f == "mlp" and parts[0] in layers.mlp_names)
                or (f == "norms" and local in norms)
                or f in parts
            ):
                chosen.add(name)
    return chosen


def _resolve_group(group: Group, layers: LayerMap, spec: str) -> set[str]:
    n = layers.num_blocks
    trailing = group.trailing
    # A trailing ':name' on a lone top/bottom item without its own metric is the metric, unless
    # every name is a filter this model knows.
    ranked = [it for it in group.items if isinstance(it, Ranked)]
    metric = None
    if trailing and len(ranked) == 1 and ranked[0].metric is None and len(trailing) == 1:
        if trailing[0] not in filter_vocabulary(layers, list(range(n))):
            metric, trailing = trailing[0], None

    blocks: list[int] = []
    names: set[str] = set()
    for item in group.items:
        if isinstance(item, Part):
            if trailing:
                raise LayerwiseError(
                    f"filter ':{','.join(trailing)}' in selection '{spec}' applies to blocks, "
                    f"not to '{item.name}'"
                )
            part_names = layers.part_names(item.name)
            if not part_names:
                raise LayerwiseError(
                    f"selection '{spec}' names '{item.name}' but this {layers.model_type} model "
                    f"has no {item.name} parameters"
                )
            names.update(part_names)
        elif isinstance(item, Ranked):
            blocks += _ranked(item, metric, layers, spec)
        else:
            blocks += _block_range(item, n, spec)

    if trailing:
        vocab = filter_vocabulary(layers, blocks)
        unknown = [f for f in trailing if f not in vocab]
        if unknown:
            raise LayerwiseError(
                f"unknown submodule filter '{unknown[0]}' in selection '{spec}'; valid: "
                f"{', '.join(GROUP_FILTERS)}, {', '.join(sorted(vocab - set(GROUP_FILTERS)))}"
            )
    for i in dict.fromkeys(blocks):
        names |= _filtered(layers, i, trailing)
    return names


def resolve_selection(model_or_layers: nn.Module | LayerMap, spec: str) -> Selection:
    """Resolve `spec` (see grammar.py) on a model into the explicit set of parameter names."""
    layers = model_or_layers if isinstance(model_or_layers, LayerMap) else discover_layers(model_or_layers)
    names: set[str] = set()
    for group in parse_selection(spec):
        names |= _resolve_group(group, layers, spec)
    if not names:
        raise LayerwiseError(f"selection '{spec}' selects no parameters on this model")
    blocks = tuple(
        i for i in range(layers.num_blocks) if any(n in names for n, _ in layers.block_params(i))
    )
    parts = tuple(p for p in ("embed", "norm", "head") if set(layers.part_names(p)) & names)
    return Selection(spec=spec, names=frozenset(names), blocks=blocks, parts=parts)
