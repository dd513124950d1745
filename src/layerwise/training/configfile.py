"""A config document (config.yaml: long flag names -> values) back into the two config dataclasses.

The CLI reads `--config` through argparse (cli/args.py), so that flags override the file; this
is the same mapping for library callers (`resume`, the Python facade), with the same one-line
errors for unknown keys.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.training.config import ModelConfig, TrainConfig


def _keys(cls) -> dict[str, str]:
    out = {}
    for f in fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        flag = f.metadata.get("flag") or f.name.replace("_", "-")
        for key in (flag, flag.replace("-", "_"), f.name):
            out[key] = f.name
    return out


def configs_from_document(doc: dict[str, Any], source: str = "config") -> tuple[ModelConfig, TrainConfig]:
    from layerwise.tasks.registry import parse_task_options

    model_keys, train_keys = _keys(ModelConfig), _keys(TrainConfig)
    unknown = [k for k in doc if k not in model_keys and k not in train_keys]
    if unknown:
        raise LayerwiseError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(str, unknown))}")
    model_kw = {model_keys[k]: v for k, v in doc.items() if k in model_keys}
    train_kw = {train_keys[k]: v for k, v in doc.items() if k in train_keys}
    options = train_kw.get("task_options")
    if isinstance(options, list):
        train_kw["task_options"] = parse_task_options([str(o) for o in options])
    elif options is not None and not isinstance(options, dict):
        raise LayerwiseError(f"{source}: task-option must be a mapping or a list of KEY=VALUE")
    try:
        return ModelConfig(**model_kw), TrainConfig(**train_kw)
    except TypeError as exc:
        raise LayerwiseError(f"{source}: {exc}") from None
