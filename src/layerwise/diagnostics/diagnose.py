"""One diagnostics run, end to end: load the model, cut the text into windows, run the metrics,
write the files and the pruned model.

`layerwise diagnose` and `layerwise.diagnose()` both call `diagnose_model`, so they refuse the
same models and write the same diagnostics.json. The checks that name the caller's own arguments
(`--save` / `save=`) stay with the caller; the knobs are checked by `DiagnosticOptions`, which the
caller builds before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from layerwise.diagnostics.context import DiagnosticOptions
from layerwise.diagnostics.registry import MetricSpec
from layerwise.errors import LayerwiseError


@dataclass
class Diagnosis:
    """diagnostics.json as a dict (`document`), the files written to `out`, the pruned model."""

    document: dict
    paths: list[Path] = field(default_factory=list)
    pruned: Path | None = None


def diagnose_model(model: str | None, metrics: list[MetricSpec], options: DiagnosticOptions, *,
                   data: str | None = None, text_field: str = "text", seq_len: int = 256,
                   num_seqs: int = 4, dtype: str = "auto", device: str = "auto",
                   trust_remote_code: bool = False, recovery_blocks: str | None = None,
                   out: str | Path | None = None, save: str | Path | None = None,
                   progress: bool = True) -> Diagnosis:
    """Profile every block of `model` on `data` by each of `metrics` (registry.resolve_metrics).

    The model is loaded with `options.seed`. `recovery_blocks` is a selection spec for the
    blocks 'recovery' tries (default: all). With `out`, diagnostics.json/.csv, plots and
    report.html are written there; with `save`, the model without the blocks 'prune' removed is
    written there as an HF checkpoint ('prune' must be among `metrics`).
    """
    from layerwise.data import load_corpus, token_windows
    from layerwise.diagnostics.context import DiagnosticContext
    from layerwise.diagnostics.runner import run_diagnostics, write_outputs
    from layerwise.models import discover_layers, load_model
    from layerwise.selection import resolve_selection

    loaded = load_model(model, dtype=dtype, device=device, seed=options.seed,
                        trust_remote_code=trust_remote_code)
    layers = discover_layers(loaded.model)
    if layers.num_blocks < 2 and any(m.name in ("removal", "prune") for m in metrics):
        raise LayerwiseError(f"the model has {layers.num_blocks} block: removing it would leave no block")
    if recovery_blocks is not None:
        options = replace(options, recovery_blocks=resolve_selection(layers, recovery_blocks).blocks)
    corpus = load_corpus(data, text_field)
    windows = token_windows(loaded.tokenizer, corpus, seq_len, num_seqs, loaded.context_length)
    ctx = DiagnosticContext(model=loaded.model, layers=layers, windows=windows, options=options,
                            progress=progress)
    doc = run_diagnostics(ctx, metrics, loaded.source, corpus.source)
    paths = write_outputs(doc, Path(out)) if out is not None else []
    pruned = None
    if save:
        from layerwise.diagnostics.prune import save_pruned

        order = doc["metrics"]["prune"]["extra"]["order"]
        pruned = save_pruned(loaded.model, loaded.tokenizer, layers, order, Path(save))
    return Diagnosis(document=doc, paths=list(paths), pruned=pruned)
