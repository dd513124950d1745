"""Run a set of metrics on one model and one set of windows, and write the result table.

The runner shares work: the intact pass is traced once (`DiagnosticContext.trace`) and every
metric that needs hidden states or a baseline reuses it. It returns one JSON-safe dict (schema in
docs/diagnostics.md) and, given an output directory, writes `diagnostics.json`, `diagnostics.csv`
and the plots and `report.html` (reporting/diagnostics_report.py), each file atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from pathlib import Path

from layerwise import __version__
from layerwise.diagnostics.ablation import baseline_ppl
from layerwise.models.identity import model_identity
from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricSpec
from layerwise.fileio import atomic_write_text, json_safe

log = logging.getLogger(__name__)


def run_diagnostics(ctx: DiagnosticContext, metrics: list[MetricSpec], model_name: str,
                    data_name: str) -> dict:
    """Run `metrics` in order; returns the diagnostics dict (JSON-safe)."""
    start = time.perf_counter()
    L = ctx.num_blocks
    baseline = baseline_ppl(ctx)
    log.info("baseline perplexity %.4f on %d windows x %d tokens", baseline, *ctx.windows.shape)
    layers = [{"index": i} for i in range(L)]
    results = {}
    for spec in metrics:
        t0 = time.perf_counter()
        log.info("metric %s ...", spec.name)
        result = spec.fn(ctx)
        seconds = time.perf_counter() - t0
        fields = result.fields or spec.fields
        for name, values in result.per_block.items():
            if len(values) != L:
                raise AssertionError(f"{spec.name}.{name}: {len(values)} values for {L} blocks")
            bad = [i for i, v in enumerate(values) if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                log.warning("%s: non-finite value on blocks %s (reported as such)", name, bad)
            for i, value in enumerate(values):
                layers[i][name] = value
        results[spec.name] = {
            "help": spec.help, "seconds": round(seconds, 3), "fields": fields,
            "summary": result.summary, "extra": result.extra,
        }
        log.info("metric %s done in %.1f s", spec.name, seconds)
    return json_safe({
        "layerwise_version": __version__,
        "model": model_name,
        "model_type": ctx.layers.model_type,
        "num_blocks": L,
        "identity": model_identity(ctx.layers, model_name),
        "data": data_name,
        "windows": {"num_seqs": int(ctx.windows.shape[0]), "seq_len": int(ctx.windows.shape[1]),
                    "tokens": int(ctx.windows.numel())},
        "baseline_perplexity": baseline,
        "replayed": ctx.trace.replayable,
        "metrics": results,
        "layers": layers,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(ctx.options).items()},
        "seconds": round(time.perf_counter() - start, 3),
    })


def diagnostics_csv(diag: dict) -> str:
    fields = ["index"] + sorted({k for row in diag["layers"] for k in row if k != "index"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in diag["layers"]:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buf.getvalue()


def write_outputs(diag: dict, out_dir: Path) -> list[Path]:
    """diagnostics.json, diagnostics.csv, plots and report.html in `out_dir`."""
    from layerwise.reporting.diagnostics_report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "diagnostics.json", out_dir / "diagnostics.csv"
    atomic_write_text(json_path, json.dumps(diag, indent=2, allow_nan=False) + "\n")
    atomic_write_text(csv_path, diagnostics_csv(diag))
    return [json_path, csv_path, *render_report(diag, out_dir)]
