"""Perplexity of a causal LM on fixed token windows: exp(mean next-token cross-entropy).

Every window is scored on its own (no state carried between windows), with the KV cache off:
a model whose block list was edited keeps attention `layer_idx` values the cache would trip on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def mean_nll(model, windows: torch.Tensor, batch_size: int = 4) -> float:
    """Mean negative log-likelihood per predicted token over `windows` (N, T)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)  # (B, T)
        logits = model(input_ids=batch, use_cache=False).logits.float()  # (B, T, V)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += batch[:, 1:].numel()
    return total / count


def perplexity_from_nll(nll: float) -> float:
    """exp(nll), infinite rather than an OverflowError for a diverged model."""
    return math.exp(nll) if nll < 700 else math.inf


def perplexity(model, windows: torch.Tensor, batch_size: int = 4) -> float:
    return perplexity_from_nll(mean_nll(model, windows, batch_size))
