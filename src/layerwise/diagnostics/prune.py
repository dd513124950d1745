"""`prune` (opt-in): greedy multi-block removal, SLEB style, and the pruned checkpoint.

Repeat --prune-blocks times: among the blocks still present, remove the one whose removal raises
the perplexity on the windows least. Each step records the removed block and the perplexity after
it. Per block, `prune_order` is the step at which it was removed (1 = first; blocks never removed
get steps + 1), so a larger value means a block the model could spare less.

Each step runs the current pruned model once to get every remaining block's input, then scores
every candidate from its own input (blocks before it are unaffected by its removal).

`save_pruned` writes the pruned model as an ordinary HF checkpoint: the block list shrinks,
`num_hidden_layers` (and `layer_types`, where the config has it) follow, and every attention
module's `layer_idx` is re-indexed so the KV cache of the saved model lines up again.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from layerwise.diagnostics.ablation import baseline_ppl, perplexity_of
from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric
from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap, discover_layers


def default_prune_blocks(num_blocks: int) -> int:
    return max(1, num_blocks // 4)


@torch.no_grad()
def _inputs_of_pruned(trace, removed: frozenset[int]) -> list[list[torch.Tensor | None]]:
    """Per batch, the hidden state entering each block of the pruned model (None if removed)."""
    per_batch = []
    for batch in trace.batches:
        hidden, inputs = batch.hidden[0], []
        for j in range(trace.layers.num_blocks):
            inputs.append(None if j in removed else hidden)
            if j not in removed:
                hidden = trace.run_blocks(batch, j, hidden, stop=j + 1)
        per_batch.append(inputs)
    return per_batch


def greedy_prune(ctx: DiagnosticContext, steps: int) -> tuple[list[int], list[float]]:
    """(removal order, perplexity after each removal, starting with the intact model)."""
    trace = ctx.trace
    if not trace.replayable:
        raise NotImplementedError("prune needs a replayable model tail (norm -> head)")
    removed: frozenset[int] = frozenset()
    order, curve = [], [baseline_ppl(ctx)]
    for _ in tqdm(range(steps), desc="prune", unit="step", disable=not ctx.progress, leave=False):
        inputs = _inputs_of_pruned(trace, removed)
        best, best_nll = None, math.inf
        for i in range(ctx.num_blocks):
            if i in removed:
                continue
            nll = trace.nll_from(i + 1, skip=removed, inputs=[b[i] for b in inputs])
            if best is None or nll < best_nll:
                best, best_nll = i, nll
        removed = removed | {best}
        order.append(best)
        curve.append(perplexity_of(best_nll))
    return order, curve


@register_metric(
    "prune", {"prune_order": True},
    "opt-in: greedy SLEB-style removal of --prune-blocks blocks; removal order and perplexity curve",
    default=False,
)
def prune_metric(ctx: DiagnosticContext) -> MetricResult:
    steps = ctx.options.prune_blocks or default_prune_blocks(ctx.num_blocks)
    if steps >= ctx.num_blocks:
        raise LayerwiseError(
            f"--prune-blocks {steps} would leave no block: the model has {ctx.num_blocks}; "
            f"use at most {ctx.num_blocks - 1}"
        )
    order, curve = greedy_prune(ctx, steps)
    position = {block: step + 1 for step, block in enumerate(order)}
    return MetricResult(
        per_block={"prune_order": [float(position.get(i, steps + 1)) for i in range(ctx.num_blocks)]},
        extra={"order": order, "perplexity_curve": curve},
        summary={"steps": steps, "final_perplexity": curve[-1]},
    )


def pruned_copy(model: nn.Module, layers: LayerMap, remove: list[int]) -> nn.Module:
    """A deep copy of `model` without the blocks in `remove`, with its config and layer indices
    made consistent."""
    if len(set(remove)) >= layers.num_blocks:
        raise LayerwiseError("pruning would leave no block")
    pruned = copy.deepcopy(model)
    keep = [i for i in range(layers.num_blocks) if i not in set(remove)]
    new_layers = discover_layers(pruned)
    blocks = new_layers.blocks
    kept = nn.ModuleList(blocks[i] for i in keep)
    parent_path, _, attr = new_layers.blocks_path.rpartition(".")
    parent = pruned.get_submodule(parent_path) if parent_path else pruned
    setattr(parent, attr, kept)
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = pruned.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, key) and isinstance(getattr(config, key), int):
            setattr(config, key, len(keep))
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    return pruned


def save_pruned(model: nn.Module, tokenizer, layers: LayerMap, remove: list[int], out: Path) -> Path:
    """Write the pruned model (safetensors) and tokenizer to `out`, atomically."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LayerwiseError(f"--save {out} already exists and is not an empty directory; choose a new one")
    pruned = pruned_copy(model, layers, remove)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        pruned.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
