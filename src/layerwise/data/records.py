"""Structured records (one dict per example) from a .jsonl file or a Hugging Face dataset.

Tasks such as GSM8K need named fields (`question`, `answer`), not running text. A file or dataset
that lacks a needed field, holds no record, or has a malformed line is reported in one line that
names the file, the line and the fields it does have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.fileio import jsonl_error, read_text_file


def _check_fields(record: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise LayerwiseError(f"{where} is a {type(record).__name__}, not a JSON object")
    missing = [f for f in fields if f not in record]
    if missing:
        raise LayerwiseError(f"{where} has no field {', '.join(repr(m) for m in missing)} "
                             f"(fields: {', '.join(record) or 'none'}); needed: {', '.join(fields)}")
    return record


def _read_jsonl_records(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    lines = read_text_file(path, "data file").splitlines()
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise jsonl_error(path, lineno, line, exc) from None
        records.append(_check_fields(record, fields, f"{path} line {lineno}"))
    return records


def _read_hf_records(name: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    from layerwise.data.user_data import read_hub

    ds = read_hub(name if name.startswith("hf:") else f"hf:{name}", "cannot load data",
                  "an existing .jsonl file")
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise LayerwiseError(f"dataset '{name}' has no column {', '.join(missing)} "
                             f"(columns: {', '.join(ds.column_names)})")
    return [dict(r) for r in ds]


def load_records(source: str | Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every record of `source` (.jsonl path or hf:NAME[:CONFIG][@SPLIT]); each has `fields`."""
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise LayerwiseError(f"data file {path} does not exist")
        records = _read_jsonl_records(path, fields)
    else:
        records = _read_hf_records(text, fields)
    if not records:
        raise LayerwiseError(f"data '{source}' is empty: it holds no record")
    return records
