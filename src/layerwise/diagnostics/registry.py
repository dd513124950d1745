"""The metric registry: every per-block measure `layerwise diagnose` knows, by name.

A metric is a function `fn(ctx: DiagnosticContext) -> MetricResult` registered with
`@register_metric(...)`. It declares the per-block fields it writes (e.g. `removal_perplexity`,
`removal_delta_pct`) and, per field, whether a higher value means a *more important* block (True),
a less important one (False), or neither (None: descriptive, left out of the agreement table).
`top:K@diagnostics.json:FIELD` and the agreement table both read that orientation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.diagnostics.context import DiagnosticContext


@dataclass
class MetricResult:
    """What a metric computed.

    per_block: field -> one value per block (index = block). `None` means "not defined for this
        block" (e.g. delta correlation of the last block); NaN and inf are kept as they are and
        reported, never dropped.
    extra: metric-level data that is not one value per block (runs of n blocks, a pruning curve).
    summary: metric-level scalars (e.g. a global R^2).
    fields: orientation of fields named at run time (e.g. one per --alpha), overriding the spec's.
    """

    per_block: dict[str, list[float | None]]
    extra: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    fields: dict[str, bool | None] | None = None


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[["DiagnosticContext"], MetricResult]
    fields: dict[str, bool | None]  # field -> higher is more important?
    help: str
    default: bool = True  # part of the default profile (costly ones are opt-in)


METRICS: dict[str, MetricSpec] = {}
# The order metrics run and are reported in: cheap shared-pass metrics first, costly opt-ins last.
ORDER = (
    "removal", "scale", "noise", "reset", "neighbour-mean", "angular", "block-influence",
    "linear-r2", "delta-corr", "weight-depth-r2", "snr", "gradient", "recovery", "prune",
)


def register_metric(name: str, fields: dict[str, bool | None], help: str, default: bool = True):
    """Decorator: register `fn` as metric `name` writing `fields`."""

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name} registered twice")
        METRICS[name] = MetricSpec(name=name, fn=fn, fields=dict(fields), help=help, default=default)
        return fn

    return wrap


def resolve_metrics(names: str | list[str] | None) -> list[MetricSpec]:
    """The metrics named in a comma list, in run order; 'default' (everything but the opt-in
    metrics) and 'all' may appear in the list. Unknown names list the valid ones."""
    _load_builtin_metrics()
    ordered = sorted(METRICS.values(), key=lambda m: ORDER.index(m.name) if m.name in ORDER else len(ORDER))
    groups = {"default": [m.name for m in ordered if m.default], "all": [m.name for m in ordered]}
    if names is None or names == "":
        names = "default"
    wanted: list[str] = []
    for name in (names.split(",") if isinstance(names, str) else names):
        name = name.strip()
        wanted += groups.get(name, [name] if name else [])
    valid = ", ".join(m.name for m in ordered)
    if not wanted:
        raise LayerwiseError(f"no metric named; valid: {valid}")
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        raise LayerwiseError(f"unknown metric '{unknown[0]}'; valid: {valid} (or 'default', 'all')")
    chosen = set(wanted)
    return [m for m in ordered if m.name in chosen]


def field_orientation() -> dict[str, bool | None]:
    """Every registered per-block field -> higher is more important?"""
    _load_builtin_metrics()
    return {f: o for m in METRICS.values() for f, o in m.fields.items()}


def _load_builtin_metrics() -> None:
    # Importing the metric modules registers them.
    from layerwise.diagnostics import ablation, gradient, prune, recovery, representations, weights  # noqa: F401
