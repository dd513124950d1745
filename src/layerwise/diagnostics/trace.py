"""Record the intact model's forward pass at every block boundary, and replay it from any block.

Blocks before block i are untouched when block i is removed or manipulated, so their output (the
input of block i) can be computed once and reused: a removal scan then runs, for each i, only the
blocks after i plus the head, about half of L+1 full forward passes in block compute.

Recording uses hooks on the model exactly as loaded (nothing is rewritten): a forward pre-hook on
every block stores the hidden states it receives and the other arguments the model passes it
(attention mask, rotary position embeddings...), which do not depend on the hidden states, so a
replay can call block j again with new hidden states and the same arguments. Hooks are removed in
`finally`. The replayed tail (final norm, head) is checked against the model's own loss on the
intact pass; a model whose tail is something else is reported as not replayable, and callers fall
back to full forward passes with a block-skipping hook.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerwise.models.arch import LayerMap

_HEAD_CHUNK = 256  # tokens per head call, for heads that are not a plain Linear
_VOCAB_CHUNK = 2048  # vocabulary rows per matmul of a Linear head: the weight slice stays in cache


def _capped(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    return torch.tanh(logits / cap) * cap if cap else logits


def _linear_head_nll(h: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None, cap: float | None) -> torch.Tensor:
    """sum_t logsumexp(z_t) - z_t[target_t] with z = h W^T + b, never holding all of z.

    The vocabulary is walked in slices: each slice's log-sum-exp is kept (tokens x slices), then
    combined. Reading each weight slice once for all tokens is ~20% faster on CPU than walking the
    tokens against the whole (vocab x width) weight, and gives the same value to float rounding.
    """
    parts = []
    for s in range(0, weight.shape[0], _VOCAB_CHUNK):
        b = None if bias is None else bias[s:s + _VOCAB_CHUNK]
        z = F.linear(h, weight[s:s + _VOCAB_CHUNK], b).float()  # (tokens, slice)
        parts.append(torch.logsumexp(_capped(z, cap), dim=-1))
    lse = torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)  # (tokens,)
    picked = (h.float() * weight[target].float()).sum(-1)  # z at the target, no (tokens x vocab) matrix
    if bias is not None:
        picked = picked + bias[target].float()
    return (lse - _capped(picked, cap)).sum()


def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _block_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@dataclass
class BatchTrace:
    ids: torch.Tensor  # (B, T) token ids
    hidden: list[torch.Tensor]  # L+1 boundaries: hidden[i] = input of block i, hidden[L] = last output
    calls: list[tuple[tuple, dict]]  # per block: the (args, kwargs) the model called it with


class BlockTrace:
    """The intact forward pass of a model over token windows, recorded at block boundaries."""

    def __init__(self, model: nn.Module, layers: LayerMap, batches: list[BatchTrace],
                 model_nll_sum: float, tokens: int):
        self.model, self.layers, self.batches = model, layers, batches
        self.tokens = tokens  # predicted tokens over all windows
        self.model_nll_sum = model_nll_sum  # from the model's own logits
        self.nll_sum = sum(self.tail_nll(b, b.hidden[-1]) for b in batches)
        # The replayed tail must reproduce the model's own loss, else replays would be wrong.
        self.replayable = math.isclose(self.nll_sum, model_nll_sum, rel_tol=1e-5)

    # -- recording ------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def record(cls, model: nn.Module, layers: LayerMap, windows: torch.Tensor, batch_size: int = 4):
        device = next(model.parameters()).device
        batches, model_nll, tokens = [], 0.0, 0
        for start in range(0, windows.shape[0], batch_size):
            ids = windows[start:start + batch_size].to(device)
            hidden: list[torch.Tensor | None] = [None] * (layers.num_blocks + 1)
            calls: list[tuple[tuple, dict] | None] = [None] * layers.num_blocks
            with _recording_hooks(layers, hidden, calls):
                logits = model(input_ids=ids, use_cache=False).logits
            model_nll += token_nll_sum(logits, ids)
            tokens += ids[:, 1:].numel()
            batches.append(BatchTrace(ids=ids, hidden=hidden, calls=calls))
        return cls(model, layers, batches, model_nll, tokens)

    # -- replay ---------------------------------------------------------------------------
    def run_blocks(self, batch: BatchTrace, start: int, hidden: torch.Tensor,
                   skip: frozenset[int] = frozenset(), stop: int | None = None) -> torch.Tensor:
        """Run blocks start..stop-1 (default: to the last), leaving out `skip`, from `hidden`."""
        for j in range(start, self.layers.num_blocks if stop is None else stop):
            if j in skip:
                continue
            args, kwargs = _with_hidden(*batch.calls[j], hidden)
            hidden = _block_output(self.layers.blocks[j](*args, **kwargs))
        return hidden

    def tail_loss(self, batch: BatchTrace, hidden: torch.Tensor) -> torch.Tensor:
        """Summed next-token NLL of the batch (a differentiable scalar), from the hidden state
        after the last block: final norm, head, log-sum-exp over the vocabulary."""
        (norm,) = self.layers.norm.values() if self.layers.norm else (nn.Identity(),)
        (head,) = self.layers.head.values()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        h = norm(hidden)[:, :-1].reshape(-1, hidden.shape[-1])  # (B*(T-1), D)
        target = batch.ids[:, 1:].reshape(-1)
        if isinstance(head, nn.Linear):
            return _linear_head_nll(h, target, head.weight, head.bias, cap)
        total = h.new_zeros((), dtype=torch.float32)
        for s in range(0, h.shape[0], _HEAD_CHUNK):  # any other head: chunks of tokens
            logits = _capped(head(h[s:s + _HEAD_CHUNK]).float(), cap)  # (chunk, V)
            picked = logits.gather(1, target[s:s + _HEAD_CHUNK, None])[:, 0]
            total = total + (torch.logsumexp(logits, dim=-1) - picked).sum()
        return total

    @torch.no_grad()
    def tail_nll(self, batch: BatchTrace, hidden: torch.Tensor) -> float:
        return self.tail_loss(batch, hidden).item()

    @torch.no_grad()
    def nll_from(self, start: int, skip: frozenset[int] = frozenset(), inputs: list | None = None,
                 batches: list[int] | None = None) -> float:
        """Mean NLL when the blocks from `start` on are re-run (minus `skip`) from the recorded
        input of block `start` (or from `inputs[b]` per batch), over all batches or `batches`."""
        total, tokens = 0.0, 0
        for b in range(len(self.batches)) if batches is None else batches:
            batch = self.batches[b]
            hidden = batch.hidden[min(start, self.layers.num_blocks)] if inputs is None else inputs[b]
            total += self.tail_nll(batch, self.run_blocks(batch, start, hidden, skip))
            tokens += batch.ids[:, 1:].numel()
        return total / tokens

    @property
    def nll(self) -> float:
        return self.nll_sum / self.tokens

    def boundary(self, i: int) -> torch.Tensor:
        """Hidden states entering block i (i = L: leaving the last block), all windows: (N, T, D)."""
        return torch.cat([b.hidden[i] for b in self.batches])


@contextmanager
def _recording_hooks(layers: LayerMap, hidden: list, calls: list):
    handles = []

    def pre_hook(index):
        def hook(module, args, kwargs):
            h = _hidden_of(args, kwargs)
            hidden[index] = h.detach()
            rest_args, rest_kwargs = (args[1:], kwargs) if args else ((), {
                k: v for k, v in kwargs.items() if k != "hidden_states"})
            calls[index] = ((None, *rest_args) if args else (), dict(rest_kwargs))
        return hook

    def last_hook(module, args, kwargs, output):
        hidden[-1] = _block_output(output).detach()

    try:
        for i, block in enumerate(layers.blocks):
            handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(layers.blocks[-1].register_forward_hook(last_hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def token_nll_sum(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Summed next-token NLL from full logits (B, T, V), as a plain HF loss computes it."""
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
    ).item()


@contextmanager
def skipping_block(layers: LayerMap, index: int):
    """Make block `index` an identity inside the real model's forward (the naive removal)."""

    def hook(module, args, kwargs, output):
        h = _hidden_of(args, kwargs)
        return (h, *output[1:]) if isinstance(output, (tuple, list)) else h

    handle = layers.blocks[index].register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def naive_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> float:
    """Mean NLL from full forward passes of the model as it is (hooks included)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start:start + batch_size].to(device)
        total += token_nll_sum(model(input_ids=ids, use_cache=False).logits, ids)
        count += ids[:, 1:].numel()
    return total / count
