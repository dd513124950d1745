"""Per-block diagnostics: one module per group of metrics, a registry, a runner sharing work."""

from layerwise.diagnostics.context import DiagnosticContext, DiagnosticOptions
from layerwise.diagnostics.registry import METRICS, MetricResult, register_metric, resolve_metrics
from layerwise.diagnostics.runner import run_diagnostics, write_outputs

__all__ = [
    "METRICS", "DiagnosticContext", "DiagnosticOptions", "MetricResult", "register_metric",
    "resolve_metrics", "run_diagnostics", "write_outputs",
]
