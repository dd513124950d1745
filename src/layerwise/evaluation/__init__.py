"""Scoring a model: perplexity on token windows (task accuracy comes with the task registry)."""

from layerwise.evaluation.perplexity import perplexity

__all__ = ["perplexity"]
