"""Text corpora (files, HF datasets, the embedded default) and deterministic token windows."""

from layerwise.data.corpus import Corpus, load_corpus, token_windows

__all__ = ["Corpus", "load_corpus", "token_windows"]
