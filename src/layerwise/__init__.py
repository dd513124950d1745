"""layerwise: find which transformer layers matter for a model and a task, and train only those.

The public API re-exports the pieces every later feature builds on: loading a model
(`load_model`), finding its blocks (`discover_layers`), turning a selection spec into an explicit
set of parameter names (`resolve_selection`) and applying it (`apply_selection`).
"""

__version__ = "0.1.0"
