"""A run's directory: checked before anything loads, claimed by one run, described by config.yaml.

- `default_out()`: `runs/<YYYYmmdd-HHMMSS>-<method>` under the working directory, when no --out
  is given (the trained model is never silently thrown away).
- `claim(out, overwrite)`: refuses a location it cannot write (a file, a read-only directory),
  refuses to mix a new run into an earlier one (unless --overwrite, which removes the earlier
  run's files first, TensorBoard logs and checkpoints included), and explains a run that was
  killed (status "running", its process gone) with the `--resume` it can take.
- `write_config(out, model_config, train_config)`: the fully resolved `config.yaml`, whose keys
  are the long flag names: `layerwise train --config OUT/config.yaml` repeats the run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text
from layerwise.training.result import latest_checkpoint, read_run, stale_message

CONFIG_FILE = "config.yaml"
RUN_FILES = ("metrics.json", CONFIG_FILE, "inputs.json", "curves.png", "eval_base.jsonl", "eval_final.jsonl",
             "pairs.jsonl")
RUN_DIRS = ("model", "merged", "tensorboard", "checkpoints")


def default_out(method: str, root: str | Path = "runs") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(root) / f"{stamp}-{method}"
    n = 1
    while out.exists():
        n += 1
        out = Path(root) / f"{stamp}-{method}-{n}"
    return str(out)


def check_writable(out: Path) -> None:
    """A one-line error now, rather than a traceback after the training."""
    from layerwise.fileio import check_output_dir

    if out.exists() and not out.is_dir():
        raise LayerwiseError(f"--out {out} is a file; expected a directory (new or a run's)")
    check_output_dir(out)


def is_run_dir(out: Path) -> bool:
    return (out / "metrics.json").is_file() or (out / CONFIG_FILE).is_file()


def claim(out: Path, overwrite: bool) -> None:
    """Make `out` ready for a new run (see the module docstring)."""
    check_writable(out)
    if out.is_dir() and is_run_dir(out):
        if not overwrite:
            if (out / "metrics.json").is_file():
                prev = read_run(out)
                stale = stale_message(out, prev)
                if stale:
                    raise LayerwiseError(stale)
                if prev.status == "running":
                    raise LayerwiseError(f"--out {out} belongs to a run still in progress "
                                         f"(process {prev.owner.get('pid')}): choose another --out")
                hint = (f"continue it with `layerwise train --resume {out}`, or "
                        if prev.status == "interrupted" and latest_checkpoint(out) else "")
                raise LayerwiseError(f"--out {out} already holds a run (status {prev.status!r}): "
                                     f"{hint}pass --overwrite to replace it, or choose another --out")
            raise LayerwiseError(f"--out {out} already holds a run configuration: pass --overwrite "
                                 "to replace it, or choose another --out")
        clear(out)
    out.mkdir(parents=True, exist_ok=True)


def clear(out: Path) -> None:
    """Remove an earlier run's files (and only those) from `out`."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def flag_name(field_name: str) -> str:
    return field_name.replace("_", "-")


def config_document(model_config, train_config) -> dict[str, Any]:
    """Both configs as one mapping of long flag names (without dashes) to values."""
    doc: dict[str, Any] = {}
    for cfg in (model_config, train_config):
        for f in fields(cfg):
            if f.metadata.get("cli", True) is False:
                continue
            key = f.metadata.get("flag") or flag_name(f.name)
            doc[key] = getattr(cfg, f.name)
    return doc


def run_settings(model_config, train_config) -> dict[str, Any]:
    """Both configs as one mapping of field names to values: what `layerwise.inputs` records."""
    return {f.name: getattr(cfg, f.name) for cfg in (model_config, train_config)
            for f in fields(cfg)}


def write_config(out: Path, model_config, train_config) -> Path:
    text = ("# layerwise train: the fully resolved configuration of this run.\n"
            "# Repeat it with: layerwise train --config <this file> [--out DIR]\n"
            + yaml.safe_dump(config_document(model_config, train_config), sort_keys=False))
    return atomic_write_text(out / CONFIG_FILE, text)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config's mapping; a missing, empty or malformed file is one line."""
    path = Path(path)
    if not path.is_file():
        raise LayerwiseError(f"--config {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise LayerwiseError(f"--config {path} is not valid YAML{line}") from None
    except OSError as exc:
        raise LayerwiseError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    if doc is None:
        raise LayerwiseError(f"--config {path} is empty")
    if not isinstance(doc, dict):
        raise LayerwiseError(f"--config {path} must be a mapping of flag names to values, "
                             f"not a {type(doc).__name__}")
    return doc


def record_invalid(out: str | Path | None, message: str, result=None) -> None:
    """Record refused arguments in a fresh --out (never over an earlier run's results)."""
    from layerwise.training.outputs import write_metrics
    from layerwise.training.result import RunResult

    if not out:
        return
    out = Path(out)
    if out.exists() and (not out.is_dir() or is_run_dir(out)):
        return
    try:
        check_writable(out)
        out.mkdir(parents=True, exist_ok=True)
    except (LayerwiseError, OSError):
        return
    result = result or RunResult()
    result.status, result.failure = "invalid", message
    try:
        write_metrics(out, result.to_dict())
    except LayerwiseError:
        pass
