"""Per-block scores from a result file, for `top:K@FILE[:METRIC]` and `bottom:K@FILE[:METRIC]`.

Accepted files (written by `layerwise diagnose` and `layerwise sweep`, or by hand):
- JSON: ``{"layers": [{"index": 0, "metric": 1.2, ...}, ...]}``, or that list alone;
- CSV with a header that has an ``index`` column.
Records may name the block ``index``, ``block`` or ``layer``. Higher means more important for every
layerwise metric, so `top:K` takes the K largest values and `bottom:K` the K smallest. A record whose
value is missing, NaN or infinite is left out of the ranking (and logged), never ranked silently.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from layerwise.errors import LayerwiseError

log = logging.getLogger(__name__)
_INDEX_KEYS = ("index", "block", "layer")
_DEFAULT_METRICS = ("score", "contribution", "contribution_mean")


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        raise LayerwiseError(f"result file {path} does not exist (used by top:K@FILE)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayerwiseError(f"cannot read result file {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayerwiseError(f"result file {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("layers", data.get("blocks"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise LayerwiseError(
            f"result file {path} has no per-block records: expected {{'layers': [{{'index': ..., "
            "METRIC: ...}}]}} or a CSV with an 'index' column"
        )
    return data


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_block_scores(path: str | Path, metric: str | None) -> tuple[str, dict[int, float]]:
    """(metric used, {block index: finite score}) from a result file."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise LayerwiseError(f"result file {path} has no records")
    index_key = next((k for k in _INDEX_KEYS if k in records[0]), None)
    if index_key is None:
        raise LayerwiseError(f"result file {path} records have no 'index' field")
    numeric = [k for k in records[0] if k != index_key and _number(records[0][k]) is not None]
    if metric is None:
        defaults = [k for k in _DEFAULT_METRICS if k in numeric]
        if defaults or len(numeric) == 1:
            metric = (defaults or numeric)[0]
        else:
            raise LayerwiseError(
                f"result file {path} has several metrics; name one as top:K@{path}:METRIC, "
                f"valid: {', '.join(numeric)}"
            )
    if not any(metric in r for r in records):
        raise LayerwiseError(
            f"result file {path} has no metric '{metric}'; valid: {', '.join(numeric)}"
        )
    scores: dict[int, float] = {}
    for record in records:
        index = _number(record.get(index_key))
        value = _number(record.get(metric))
        if index is None:
            raise LayerwiseError(f"result file {path} has a record with a non-numeric index")
        if value is None or not math.isfinite(value):
            log.warning("block %d has no finite %s in %s; left out of the ranking", index, metric, path)
            continue
        scores[int(index)] = value
    return metric, scores
