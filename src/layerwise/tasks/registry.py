"""Finding a task by name, or loading a user's own task from a Python file.

Built-in tasks are named here and imported only when asked for (the `code` task's sandbox or the
`decision` environment cost nothing until used). A user task is `path/to/file.py:factory`, where
`factory(**options)` returns an object with the `Task` methods (see `layerwise.tasks.base`).
Task options (`--task-option digits=3`) are passed to the factory as keyword arguments; an
unknown option is an error that lists the valid ones.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import Task

BUILTIN_TASKS: dict[str, str] = {
    "arithmetic": "layerwise.tasks.arithmetic:make_task",
    "gsm8k": "layerwise.tasks.gsm8k:make_task",
    "code": "layerwise.tasks.code:make_task",
    "decision": "layerwise.tasks.decision:make_task",
    "lm": "layerwise.tasks.lm:make_task",
    "dataset": "layerwise.tasks.dataset:make_task",  # --dataset SPEC: the user's own data
}
DEFAULT_TASK = "arithmetic"
REQUIRED_METHODS = ("items", "score", "extract")


def task_names() -> list[str]:
    return list(BUILTIN_TASKS)


def _import_factory(target: str) -> Callable[..., Task]:
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _load_file_factory(spec: str) -> Callable[..., Task]:
    from layerwise.userfile import load_callable

    return load_callable(spec, "task", "factory")


_KINDS = {bool: "true or false", int: "a whole number", float: "a number"}


def _check_option_type(spec: str, key: str, value: Any, param) -> None:
    """An option whose default is a bool/int/float must be one (so `digits=abc` is one line)."""
    if param is None or param.default is inspect.Parameter.empty or param.default is None:
        return
    want = type(param.default)
    if want not in _KINDS:
        return
    ok = (isinstance(value, bool) if want is bool else
          isinstance(value, int) and not isinstance(value, bool) if want is int else
          isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise LayerwiseError(f"task {spec!r}: option {key}={value!r} must be {_KINDS[want]} "
                             f"(default {param.default!r})")


def absolute_file(value: Any) -> Any:
    """A string naming an existing file, as an absolute path; anything else unchanged."""
    from pathlib import Path

    if isinstance(value, str) and value and not value.startswith("hf:"):
        path = Path(value).expanduser()
        if path.is_file():
            return str(path.resolve())
    return value


def absolute_paths(task: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A task file (FILE.py:FACTORY) and option values that name existing files, made absolute:
    what a sweep's store or a run's config.yaml keeps must work from any directory."""
    from pathlib import Path

    if ":" in task and task.rpartition(":")[0].endswith(".py"):
        file, _, attr = task.rpartition(":")
        if Path(file).is_file():
            task = f"{Path(file).resolve()}:{attr}"
    out = {}
    for key, value in options.items():
        out[key] = absolute_file(value)
    return task, out


def parse_task_options(pairs: list[str] | None) -> dict[str, Any]:
    """`["digits=3", "ops=+-"]` -> {"digits": 3, "ops": "+-"} (ints, floats and booleans typed)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LayerwiseError(f"task option {pair!r} is not KEY=VALUE")
        options[key.strip().replace("-", "_")] = _typed(value.strip())
    return options


def _typed(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def get_task(spec: str | None = None, **options: Any) -> Task:
    """The task named `spec` (a built-in name or FILE.py:FACTORY), built with `options`."""
    spec = spec or DEFAULT_TASK
    if spec in BUILTIN_TASKS:
        factory = _import_factory(BUILTIN_TASKS[spec])
    elif ":" in spec and spec.rpartition(":")[0].endswith(".py"):
        factory = _load_file_factory(spec)
    else:
        raise LayerwiseError(f"unknown task {spec!r}; valid: {', '.join(BUILTIN_TASKS)}, "
                             "or FILE.py:FACTORY for your own")
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        raise LayerwiseError(f"task {spec!r} has no option {', '.join(unknown)}; "
                             f"valid: {', '.join(valid) or 'none'}")
    for key, value in options.items():
        _check_option_type(spec, key, value, params.get(key))
    try:
        task = factory(**options)
    except LayerwiseError:
        raise
    except Exception as exc:  # noqa: BLE001 - a task factory (maybe the user's): one line
        raise LayerwiseError(f"task {spec!r}: building it with {options or 'no options'} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing or not getattr(task, "name", None):
        raise LayerwiseError(f"task {spec!r} is not a task: missing {', '.join(missing or ['name'])} "
                             "(see layerwise.tasks.base.Task)")
    if not hasattr(task, "max_new_tokens"):
        task.max_new_tokens = 64
    if not hasattr(task, "description"):
        task.description = task.name
    return task


def prepare_task(task, tokenizer):
    """Hand a task the tokenizer it renders with (a conversational --dataset: the chat
    template); a task without `bind` needs nothing. Returns the task."""
    bind = getattr(task, "bind", None)
    if callable(bind):
        bind(tokenizer)
    return task
