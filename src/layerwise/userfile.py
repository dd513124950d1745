"""Loading a callable from a user's Python file, `FILE.py:NAME`: a task factory or a reward.

One place for what both need: the file must exist and import (its failure is one line naming
the exception), and NAME must be a callable it defines (else the callables it does define are
listed). `what` names the kind of file in the messages ("task", "reward").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from layerwise.errors import LayerwiseError


def load_callable(spec: str, what: str, noun: str) -> Callable[..., Any]:
    """The callable NAME of `spec` = FILE.py:NAME (`noun`: what NAME is, e.g. "factory")."""
    path_text, _, attr = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise LayerwiseError(f"{what} file {path} does not exist (expected FILE.py:{noun.upper()})")
    module_name = f"layerwise_user_{what}_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise LayerwiseError(f"{what} file {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: its failure as one line
        sys.modules.pop(module_name, None)
        raise LayerwiseError(f"{what} file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise LayerwiseError(f"{what} file {path} does not define a {noun} {attr!r}; "
                             f"callables defined there: {', '.join(defined) or 'none'}")
    return found
