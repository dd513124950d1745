"""layerwise: find which transformer layers matter for a model and a task, and train only those.

The public API, one function per `layerwise` command, each returning a typed result
(examples: docs/python.md):

- `train(model, **options)` -> `RunResult`: fine-tune the selected blocks (or all, or LoRA);
  `resume(out)` continues an interrupted run; `read_run(dir)` reads a run's metrics.json back.
- `diagnose(model, ...)` -> `DiagnoseResult`: a per-block importance profile by every metric.
- `sweep(model, task=..., out=...)` -> `SweepResult`: layer contribution C(k) of each selection.
- `compare(base, *tuned)` -> `CompareResult`: what fine-tuning changed (sparsity, rank, overlap).
- `TrainConfig`, `ModelConfig`: the typed configuration of a run (fields = the train flags).

and the pieces every feature builds on: loading a model (`load_model`), finding its blocks
(`discover_layers`), turning a selection spec into an explicit set of parameter names
(`resolve_selection`) and applying it (`apply_selection`).

Every name is imported on first use (module `__getattr__`), so `import layerwise` does not
import torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "train": "layerwise.api",
    "resume": "layerwise.api",
    "diagnose": "layerwise.api",
    "sweep": "layerwise.api",
    "compare": "layerwise.api",
    "DiagnoseResult": "layerwise.api",
    "SweepResult": "layerwise.api",
    "CompareResult": "layerwise.api",
    "TrainConfig": "layerwise.training.config",
    "ModelConfig": "layerwise.training.config",
    "RunResult": "layerwise.training.result",
    "read_run": "layerwise.training.result",
    "load_model": "layerwise.models.loading",
    "discover_layers": "layerwise.models.arch",
    "resolve_selection": "layerwise.selection.resolve",
    "apply_selection": "layerwise.selection.freeze",
    "LayerwiseError": "layerwise.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layerwise' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
