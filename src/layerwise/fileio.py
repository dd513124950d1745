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


def read_text_file(path: str | Path, kind: str) -> str:
    """A UTF-8 text file's content; unreadable or binary files are one-line LayerwiseErrors.

    `kind` names the file in the message ("data file", "result file", ...).
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LayerwiseError(f"{kind} {path} is not UTF-8 text (a binary file?): byte "
                             f"0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    except IsADirectoryError:
        raise LayerwiseError(f"{kind} {path} is a directory; expected a file") from None
    except FileNotFoundError:
        raise LayerwiseError(f"{kind} {path} does not exist") from None
    except OSError as exc:
        raise LayerwiseError(f"cannot read {kind} {path}: {exc.strerror or exc}") from exc


def read_json(path: str | Path):
    """A JSON file's content; a missing, binary or malformed file is a one-line LayerwiseError."""
    path = Path(path)
    text = read_text_file(path, "JSON file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayerwiseError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc


def _probe_write(directory: Path, flag: str, target: Path) -> None:
    """Create and remove a file in `directory`: the only test that also catches read-only mounts
    and root-squashed shares (permission bits say nothing to root)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".layerwise-probe-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise LayerwiseError(f"{flag} {target}: cannot write into {directory}: "
                             f"{exc.strerror or exc}") from None


def check_output_dir(path: str | Path, flag: str = "--out", target: Path | None = None) -> Path:
    """Refuse, in one line and before any work, an output directory that cannot be written:
    an existing file, a file on the way, an unwritable or read-only place."""
    path = Path(path).expanduser()
    target = target or path
    if path.exists() and not path.is_dir():
        if target == path:
            raise LayerwiseError(f"{flag} {path} is a file; expected a directory (new or existing)")
        raise LayerwiseError(f"{flag} {target}: {path} is a file, not a directory")
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise LayerwiseError(f"{flag} {target}: {probe} is a file, so the directory cannot be created")
    _probe_write(probe, flag, target)
    return path


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """The same for an output file: not a directory, and its directory can be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise LayerwiseError(f"{flag} {path} is a directory; expected a file name")
    check_output_dir(path.parent, flag, target=path)
    return path


def jsonl_error(path, lineno: int, line: str, exc: json.JSONDecodeError) -> LayerwiseError:
    """A malformed JSONL line, in one complete sentence: where, what, and the text around it."""
    col = exc.colno
    start = max(0, col - 31)
    snippet = line[start:col + 30].replace("\t", " ")
    return LayerwiseError(f"{path} line {lineno} is not valid JSON ({exc.msg.lower()} at column "
                          f"{col}, near {'...' if start else ''}{snippet!r}); each line must be "
                          "one complete JSON object")
