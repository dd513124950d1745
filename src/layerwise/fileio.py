"""Writing and reading result files; a killed run never leaves a half-written file that looks complete."""

from __future__ import annotations

import json
import math
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


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, written under a temporary name and renamed; the figure is closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def json_safe(value, nonfinite: str = "string"):
    """Standard JSON has no NaN or inf: they become 'nan' / 'inf' / '-inf' (nonfinite="string")
    or null (nonfinite="null"), in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        if nonfinite == "null":
            return None
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, nonfinite) for v in value]
    return value


def read_json(path: str | Path):
    """A JSON file's content; a malformed file is a one-line LayerwiseError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LayerwiseError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    except UnicodeDecodeError:
        raise LayerwiseError(f"{path} is not a text (JSON) file: it holds bytes that are not "
                             "UTF-8") from None
    except IsADirectoryError:
        raise LayerwiseError(f"{path} is a directory; expected a JSON file") from None
    except FileNotFoundError:
        raise LayerwiseError(f"{path} does not exist") from None
    except OSError as exc:
        raise LayerwiseError(f"cannot read {path}: {exc.strerror or exc}") from exc
