"""Flags generated from the config dataclasses, and `--config FILE.yaml` for any such command.

Like transformers' `HfArgumentParser` / TRL's `TrlParser`: every field of `ModelConfig` and
`TrainConfig` declares its help text and CLI group once (training/config.py), and this module
turns the fields into argparse flags with their defaults shown in `--help`. A YAML file given
with `--config` supplies defaults under the same names (the long flag names without the leading
dashes; `batch-size` and `batch_size` both work), and flags typed on the command line override it.
Unknown keys and values of the wrong type are one-line errors that name the key.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, fields
from typing import Any, Iterable

from layerwise.errors import LayerwiseError


class ReplaceAppend(argparse.Action):
    """`append`, except that the first use on the command line replaces a default (from a
    config file) instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = getattr(namespace, "_replaced", set())
        current = [] if self.dest not in seen else list(getattr(namespace, self.dest) or [])
        seen.add(self.dest)
        namespace._replaced = seen
        setattr(namespace, self.dest, current + [values])


def _field_type(f: Field) -> tuple[str, bool]:
    """('int'|'float'|'str'|'bool'|'list'|'dict', optional) from the field's annotation."""
    text = str(f.type).replace(" ", "")
    optional = "|None" in text or "Optional[" in text
    base = text.replace("|None", "").replace("Optional[", "").rstrip("]") if optional else text
    for kind in ("list", "dict"):
        if base.startswith(kind):
            return kind, optional
    return base, optional


_CASTS = {"int": int, "float": float, "str": str}


def flag_of(f: Field) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def cli_fields(classes: Iterable[type], sweep: bool = False) -> list[Field]:
    out = []
    for cls in classes:
        for f in fields(cls):
            if f.metadata.get("cli", True) is False:
                continue
            if sweep and not f.metadata.get("sweep", True):
                continue
            out.append(f)
    return out


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]


def add_config_arguments(parser: argparse.ArgumentParser, classes: Iterable[type], *,
                         sweep: bool = False, skip: Iterable[str] = (),
                         overrides: dict[str, dict] | None = None) -> None:
    """One flag per config field, grouped as the metadata says, help showing the default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    overrides = overrides or {}
    for f in cli_fields(classes, sweep):
        if f.name in skip:
            continue
        meta = {**f.metadata, **overrides.get(f.name, {})}
        group_name = meta.get("group") or "options"
        group = groups.get(group_name) or groups.setdefault(group_name, parser.add_argument_group(group_name))
        kind, _optional = _field_type(f)
        default = meta.get("default", _default(f))
        help_text = meta.get("help") or ""
        kw: dict[str, Any] = {"dest": f.name, "default": default}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if kind == "bool":
            if default:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["action"] = "store_true"
            kw.pop("metavar", None)
            shown = "on" if default else "off"
        elif kind in ("list", "dict"):
            kw["action"] = ReplaceAppend
            kw["default"] = [] if kind == "dict" else list(default or [])
            shown = "none"
        else:
            kw["type"] = _CASTS.get(kind, str)
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
            shown = "%(default)s" if default is not None else meta.get("none_means", "none")
        kw["help"] = f"{help_text} (default: {shown})" if help_text else f"(default: {shown})"
        group.add_argument(f"--{flag_of(f)}", **kw)


def config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values of `cls`'s flags, typed for the dataclass (task options as a dict)."""
    from layerwise.tasks.registry import parse_task_options

    out = {}
    for f in fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        kind, _ = _field_type(f)
        if kind == "dict":
            value = parse_task_options(value) if isinstance(value, list) else dict(value or {})
        out[f.name] = value
    return out


# ---- --config FILE.yaml ------------------------------------------------------------------

def _actions_by_key(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    keys = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                keys[opt[2:]] = action
                keys[opt[2:].replace("-", "_")] = action
    return keys


def _coerce(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    where = f"{source}: {key}"
    if isinstance(action, ReplaceAppend):
        if isinstance(value, dict):  # task-option as a mapping
            return [f"{k}={v}" for k, v in value.items()]
        if isinstance(value, (str, int, float)):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) for v in value]
        raise LayerwiseError(f"{where} must be a list")
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise LayerwiseError(f"{where} must be true or false, not {value!r}")
        return value
    if value is None:
        return None
    cast = action.type or str
    if cast is int and isinstance(value, bool) or cast in (int, float) and isinstance(value, str):
        raise LayerwiseError(f"{where} must be a number, not {value!r}")
    try:
        typed = cast(value)
    except (TypeError, ValueError):
        raise LayerwiseError(f"{where}: {value!r} is not a valid {cast.__name__}") from None
    if cast is int and isinstance(value, float) and value != typed:
        raise LayerwiseError(f"{where} must be a whole number, not {value!r}")
    if action.choices and typed not in action.choices:
        raise LayerwiseError(f"{where} {typed!r}; valid: {', '.join(map(str, action.choices))}")
    return typed


def defaults_from_document(parser: argparse.ArgumentParser, doc: dict[str, Any], source: str,
                           ignore: Iterable[str] = ()) -> dict[str, Any]:
    """{dest: value} for `parser.set_defaults`, from a config document of flag names."""
    actions = _actions_by_key(parser)
    ignore = set(ignore)
    unknown = [k for k in doc if str(k) not in actions and str(k) not in ignore]
    if unknown:
        valid = sorted({a.option_strings[-1][2:] for a in actions.values()} - {"config", "help"})
        raise LayerwiseError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(str, unknown))}; valid: {', '.join(valid)}")
    out = {}
    for key, value in doc.items():
        if str(key) in ignore:
            continue
        action = actions[str(key)]
        out[action.dest] = _coerce(action, str(key), value, source)
    return out


def add_task_args(p: argparse.ArgumentParser) -> None:
    """--task, --task-option and --dataset with its flags, for commands that score a task
    without training (eval); `training.config.fold_dataset` turns them into a task."""
    from dataclasses import fields as dc_fields

    from layerwise.training.config import DATASET_FLAGS, TrainConfig

    add_config_arguments(p, (TrainConfig,), skip=[f.name for f in dc_fields(TrainConfig)
                                                  if f.name not in DATASET_FLAGS])
    wanted = {"task", "task_options"}
    for f in dc_fields(TrainConfig):
        if f.name in wanted:
            kind, _ = _field_type(f)
            # `task_option` (the flag's own name) as before, for the commands that read it directly.
            kw: dict[str, Any] = {"dest": "task_option" if kind == "dict" else f.name, "help": f"{f.metadata['help']} (default: "
                                  + ("%(default)s" if kind != "dict" else "none") + ")"}
            if kind == "dict":
                kw.update(action=ReplaceAppend, default=[], metavar=f.metadata["metavar"])
            else:
                kw["default"] = f.default
            p.add_argument(f"--{flag_of(f)}", **kw)
