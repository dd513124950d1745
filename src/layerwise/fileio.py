"""Writing result files so that a killed run never leaves a half-written file that looks complete."""

from __future__ import annotations

import os
from pathlib import Path

from layerwise.errors import LayerwiseError


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LayerwiseError(f"cannot write {path}: {exc}") from exc
    return path
