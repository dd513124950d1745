"""Per-block scores from a result file, for `top:K@FILE[:METRIC]` and `bottom:K@FILE[:METRIC]`.

Accepted files (written by `layerwise diagnose` and `layerwise sweep`, or by hand):
- JSON: ``{"layers": [{"index": 0, "metric": 1.2, ...}, ...]}``, or that list alone;
- CSV with a header that has an ``index`` column;
- a sweep's ``contribution.json``: the single-block selections, scored by their mean C(k).
Records may name the block ``index``, ``block`` or ``layer``. `top:K` takes the K most important
blocks: the largest values, unless the file's ``metrics`` section marks the field as "higher = less
important" (``linear_r2`` in diagnostics.json), then the smallest. `bottom:K` takes the opposite. A record whose
value is missing, NaN or infinite is left out of the ranking (and logged), never ranked silently.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from layerwise.errors import LayerwiseError
from layerwise.fileio import read_text_file

log = logging.getLogger(__name__)
_INDEX_KEYS = ("index", "block", "layer")
_DEFAULT_METRICS = ("score", "contribution", "contribution_mean")


def _records(path: Path) -> tuple[list[dict], dict[str, bool | None], int | None, dict | None]:
    """(per-block records, field -> "higher is more important?" where the file declares it,
    the model's block count where the file declares it)."""
    if not path.is_file():
        raise LayerwiseError(f"result file {path} does not exist (used by top:K@FILE)")
    text = read_text_file(path, "result file")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines())), {}, None, None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayerwiseError(f"result file {path} is not valid JSON: {exc}") from exc
    orientation: dict[str, bool | None] = {}
    declared = identity = None
    if isinstance(data, dict):
        identity = data.get("identity") if isinstance(data.get("identity"), dict) else None
        declared = data.get("num_blocks") if isinstance(data.get("num_blocks"), int) else None
        if declared is None and identity and isinstance(identity.get("num_blocks"), int):
            declared = identity["num_blocks"]
        for entry in (data.get("metrics") or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("fields"), dict):
                orientation.update(entry["fields"])
        if "selections" in data and "layers" not in data:  # a sweep's contribution.json
            data = [{"index": sel["blocks"][0], "contribution_mean": sel.get("contribution_mean")}
                    for sel in data["selections"]
                    if isinstance(sel, dict) and len(sel.get("blocks") or []) == 1
                    and str(sel.get("label", "")) not in ("full",)]
        else:
            data = data.get("layers", data.get("blocks"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise LayerwiseError(
            f"result file {path} has no per-block records: expected {{'layers': [{{'index': ..., "
            "METRIC: ...}}]}} or a CSV with an 'index' column"
        )
    return data, orientation, declared, identity


def _number(value) -> float | None:
    try:
        return float(value)  # also parses the strings "nan", "inf" that diagnostics.json uses
    except (TypeError, ValueError):
        return None


def read_block_scores(path: str | Path, metric: str | None, num_blocks: int | None = None,
                      structure: str | None = None) -> tuple[str, dict[int, float]]:
    """(metric used, {block index: importance score}) from a result file: finite values only,
    negated where the file marks the metric as "higher = less important", so that larger is
    always more important. With `num_blocks` (the model's), a file that declares another block
    count (diagnostics.json's `num_blocks`) or scores a block the model does not have is refused
    as made for another model."""
    path = Path(path)
    records, orientation, declared, identity = _records(path)
    if num_blocks is not None and declared is not None and declared != num_blocks:
        raise LayerwiseError(f"result file {path} was made for a model with {declared} blocks; "
                             f"this model has {num_blocks}: a file from another model")
    if structure is not None and identity:
        from layerwise.models.identity import check_identity

        check_identity(identity, {"structure": structure, "num_blocks": num_blocks},
                       f"result file {path}")
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
    outside = sorted(i for i in scores if num_blocks is not None and not 0 <= i < num_blocks)
    if outside:
        raise LayerwiseError(f"result file {path} scores block {outside[0]} but the model has "
                             f"{num_blocks} blocks: a file from another model")
    if orientation.get(metric) is False:
        scores = {i: -v for i, v in scores.items()}
    return metric, scores
