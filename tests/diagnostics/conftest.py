"""Contexts over tiny models with real windows of the embedded text."""

from __future__ import annotations

import pytest

from layerwise.data import load_corpus, token_windows
from layerwise.diagnostics import DiagnosticContext, DiagnosticOptions
from layerwise.models import discover_layers, load_model


def make_ctx(spec: str = "tiny:llama", seq_len: int = 32, num_seqs: int = 4, **options) -> DiagnosticContext:
    loaded = load_model(spec, seed=0)
    windows = token_windows(loaded.tokenizer, load_corpus(None), seq_len, num_seqs)
    return DiagnosticContext(
        model=loaded.model, layers=discover_layers(loaded.model), windows=windows,
        options=DiagnosticOptions(batch_size=2, **options), progress=False,
    )


@pytest.fixture
def ctx():
    return make_ctx()
