"""Text tables for the terminal: the block table and the selection summary."""

from __future__ import annotations

from torch import nn

from layerwise.models.arch import LayerMap
from layerwise.selection.freeze import Summary
from layerwise.selection.resolve import Selection


def compact_ranges(indices) -> str:
    """[0, 3, 5, 6, 7] -> '0,3,5-7'."""
    out, run = [], []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "none"


def block_structure(block: nn.Module) -> str:
    """'self_attn(q_proj,k_proj) mlp(gate_proj,up_proj) input_layernorm': a block's submodules."""
    pieces = []
    for name, child in block.named_children():
        if not any(True for _ in child.parameters()):
            continue  # activation functions, rotary tables: nothing to select
        inner = [n for n, c in child.named_children() if any(True for _ in c.parameters())]
        pieces.append(f"{name}({','.join(inner)})" if inner else name)
    return " ".join(pieces)


def layer_table(
    title: str, layers: LayerMap, summary: Summary, selection: Selection | None = None
) -> str:
    """The block table (index, parameters, share, submodules) with an optional trainable column."""
    structures = [block_structure(b) for b in layers.blocks]
    uniform = len(set(structures)) == 1
    found = "architecture map" if layers.source == "map" else "generic search for repeated blocks"
    lines = [
        f"model   {title}",
        f"type    {layers.model_type}, {layers.num_blocks} blocks at {layers.blocks_path} "
        f"(found by {found}), {summary.total:,} parameters",
        "parts   embed: " + (", ".join(layers.embed) or "none")
        + " | final norm: " + (", ".join(layers.norm) or "none")
        + " | head: " + (", ".join(layers.head) or "none")
        + (" (tied to embed)" if layers.head_tied else ""),
    ]
    if uniform and structures:
        lines.append(f"blocks  each: {structures[0]}")
    lines.append("")
    header = f"{'part':<10} {'parameters':>12} {'share':>7}"
    if selection is not None:
        header += f" {'trainable':>12}  "
    lines.append(header + ("" if uniform else "  submodules"))
    for row in summary.rows:
        if row.total == 0 and row.block is None and not row.note:
            continue
        line = f"{row.label:<10} {row.total:>12,} {row.total / summary.total:>7.2%}"
        if selection is not None:
            mark = "*" if row.trainable and row.trainable == row.total else ("~" if row.trainable else " ")
            line += f" {row.trainable:>12,} {mark}"
        if row.note:
            line += f"  ({row.note})"
        if not uniform and row.block is not None:
            line += f"  {structures[row.block]}"
        lines.append(line)
    if selection is not None:
        lines += ["", selection_line(selection, layers, summary),
                  "(* whole part trainable, ~ part of it trainable)"]
    return "\n".join(lines)


def selection_line(selection: Selection, layers: LayerMap, summary: Summary) -> str:
    parts = f" + {', '.join(selection.parts)}" if selection.parts else ""
    return (
        f"selection '{selection.spec}': blocks {compact_ranges(selection.blocks)} "
        f"({len(selection.blocks)} of {layers.num_blocks}){parts}; trainable "
        f"{summary.trainable:,} of {summary.total:,} parameters ({summary.share:.2%}) in "
        f"{len(selection.names)} tensors; frozen {summary.frozen:,}"
    )
