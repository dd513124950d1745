"""Do the importance metrics agree? Rank correlations between them, read from `diagnostics.json`.

Each metric declares, per field, whether a higher value means a more important block (see
`registry.py`). Orienting every field that way makes them comparable: after orientation a high
score always means "this block matters", so a Spearman rho near +1 means two metrics rank the
blocks alike and a rho near -1 means they disagree outright. Descriptive fields (orientation
null) say nothing about importance and are left out.

Everything here is a pure function of the dict `layerwise diagnose` writes: no model, no torch.
Values in that dict are JSON-safe, so non-finite floats arrive as the strings "nan", "inf" and
"-inf"; a block whose value is not finite (or null) takes no part in a ranking, and is reported
as missing rather than ranked.
"""

from __future__ import annotations

import math

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "+inf": math.inf}


def parse_value(value) -> float | None:
    """A stored per-block value as a float: "nan"/"inf"/"-inf" become floats, null stays None.

    Anything else that is not a number (a stray string, a list) is None: it cannot be ranked.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _NON_FINITE.get(value.strip().lower())
    return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def field_orientations(diag: dict) -> dict[str, bool | None]:
    """Every per-block field a metric declared -> higher is more important? (in run order)."""
    return {
        name: orientation
        for metric in diag.get("metrics", {}).values()
        for name, orientation in metric.get("fields", {}).items()
    }


def oriented_fields(diag: dict) -> list[str]:
    """The fields that say something about importance (orientation true or false), in run order."""
    return [name for name, oriented in field_orientations(diag).items() if oriented is not None]


def field_values(diag: dict, name: str) -> list[float | None]:
    """One parsed value per block for field `name` (None where the block has no value)."""
    return [parse_value(layer.get(name)) for layer in diag.get("layers", [])]


def importance_scores(diag: dict) -> dict[str, list[float | None]]:
    """field -> one score per block, oriented so that higher always means more important.

    Fields whose orientation is false are negated; descriptive (null) fields are skipped.
    Non-finite values become None, so a caller can never rank an inf by accident.
    """
    orientation = field_orientations(diag)
    scores = {}
    for name in oriented_fields(diag):
        sign = 1.0 if orientation[name] else -1.0
        scores[name] = [sign * v if _finite(v) else None for v in field_values(diag, name)]
    return scores


def average_ranks(values: list[float]) -> list[float]:
    """1-based ranks in ascending order; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1  # mean of the 1-based positions start..end
        for position in range(start, end + 1):
            ranks[order[position]] = shared
        start = end + 1
    return ranks


def normalise_ranks(scores: list[float | None]) -> list[float | None]:
    """Rank of each finite score among the finite ones, scaled to [0, 1] (1 = highest score).

    Ties share their average rank. Non-finite or None scores stay None. A lone finite score gets
    0.5: it is both the highest and the lowest, as when every block ties.
    """
    kept = [i for i, s in enumerate(scores) if _finite(s)]
    out: list[float | None] = [None] * len(scores)
    if not kept:
        return out
    ranks = average_ranks([scores[i] for i in kept])
    span = len(kept) - 1
    for i, rank in zip(kept, ranks):
        out[i] = (rank - 1) / span if span else 0.5
    return out


def normalised_ranks(diag: dict) -> dict[str, list[float | None]]:
    """field -> per-block importance rank in [0, 1], 1 = most important (oriented fields only)."""
    return {name: normalise_ranks(scores) for name, scores in importance_scores(diag).items()}


def _pearson(x: list[float], y: list[float]) -> float:
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    dx = [v - mean_x for v in x]
    dy = [v - mean_y for v in y]
    var_x, var_y = sum(d * d for d in dx), sum(d * d for d in dy)
    if var_x == 0 or var_y == 0:
        return math.nan
    return sum(a * b for a, b in zip(dx, dy)) / math.sqrt(var_x * var_y)


def spearman(a: list[float | None], b: list[float | None]) -> tuple[float, int]:
    """(Spearman rho, n) over the blocks where both `a` and `b` are finite.

    rho is the Pearson correlation of average ranks, so ties are handled exactly. It is NaN when
    fewer than 3 blocks are shared or either side is constant: no ordering to compare.
    """
    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if _finite(x) and _finite(y)]
    n = len(pairs)
    if n < 3:
        return math.nan, n
    rho = _pearson(average_ranks([x for x, _ in pairs]), average_ranks([y for _, y in pairs]))
    return (min(1.0, max(-1.0, rho)) if math.isfinite(rho) else rho), n


def agreement_table(diag: dict) -> dict:
    """Spearman rho and shared-block count n for every pair of oriented fields.

    Returns {"fields": [f1, ...], "rho": [[...]], "n": [[...]]}, square and symmetric, rows and
    columns in run order. rho is computed on oriented scores, so +1 means "same blocks matter".
    NaN rho (too few shared blocks, or a constant field) is a float NaN, not a string.
    """
    scores = importance_scores(diag)
    fields = list(scores)
    rho = [[math.nan] * len(fields) for _ in fields]
    n = [[0] * len(fields) for _ in fields]
    for i, first in enumerate(fields):
        for j in range(i, len(fields)):
            value, count = spearman(scores[first], scores[fields[j]])
            rho[i][j] = rho[j][i] = value
            n[i][j] = n[j][i] = count
    return {"fields": fields, "rho": rho, "n": n}
