"""The layer-selection grammar, its resolution to parameter names, freezing and exports."""

from layerwise.selection.export import to_axolotl_yaml, to_peft_kwargs
from layerwise.selection.freeze import Summary, apply_selection, summarize
from layerwise.selection.grammar import parse_selection
from layerwise.selection.resolve import Selection, resolve_selection

__all__ = [
    "Selection", "Summary", "apply_selection", "parse_selection", "resolve_selection",
    "summarize", "to_axolotl_yaml", "to_peft_kwargs",
]
