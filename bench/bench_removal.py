"""Removal scan: naive (L+1 full forward passes) vs shared (replay from each block's recorded input).

    .venv/bin/python bench/bench_removal.py [--model M] [--num-seqs 8] [--seq-len 512]

Both scans run on the same windows of WikiText-2 test (../shared/data). Prints both times, their
ratio, and the largest relative difference between the two scans' perplexities.

- naive: for each block, a full forward pass of the model with that block made an identity by a
  hook, the loss computed from the model's logits as an HF loss does (what ShortGPT/PruneMe-style
  scripts do), plus the intact pass: L+1 passes.
- shared: one traced intact pass, then for each block only the blocks after it and the head
  (chunked log-sum-exp), from the recorded input of the removed block.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from layerwise.data import load_corpus, token_windows
from layerwise.diagnostics.context import DiagnosticContext, DiagnosticOptions
from layerwise.diagnostics.ablation import removal_metric
from layerwise.diagnostics.trace import naive_nll, skipping_block
from layerwise.models import discover_layers, load_model

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2_test.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--num-seqs", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    loaded = load_model(args.model)
    layers = discover_layers(loaded.model)
    windows = token_windows(loaded.tokenizer, load_corpus(str(WIKITEXT)), args.seq_len,
                            args.num_seqs, loaded.context_length)
    L = layers.num_blocks
    print(f"{loaded.source}: {L} blocks, {args.num_seqs} x {args.seq_len} tokens, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    naive = [math.exp(naive_nll(loaded.model, windows, args.batch_size))]
    for i in range(L):
        with skipping_block(layers, i):
            naive.append(math.exp(naive_nll(loaded.model, windows, args.batch_size)))
    t_naive = time.perf_counter() - start

    start = time.perf_counter()
    ctx = DiagnosticContext(loaded.model, layers, windows,
                            DiagnosticOptions(batch_size=args.batch_size), progress=False)
    shared = [math.exp(ctx.trace.nll)] + removal_metric(ctx).per_block["removal_perplexity"]
    t_shared = time.perf_counter() - start

    # Where the time goes in one pass: the blocks, and the tail (final norm, head, log-sum-exp).
    trace = ctx.trace
    with torch.no_grad():
        t0 = time.perf_counter()
        finals = [trace.run_blocks(b, 0, b.hidden[0]) for b in trace.batches]
        t_blocks = time.perf_counter() - t0
        t0 = time.perf_counter()
        for b, h in zip(trace.batches, finals):
            trace.tail_nll(b, h)
        t_tail = time.perf_counter() - t0
    worst = max(abs(a - b) / a for a, b in zip(naive, shared))
    print(f"naive scan : {t_naive:8.1f} s  ({L + 1} full forward passes)")
    print(f"shared scan: {t_shared:8.1f} s  (1 traced pass + replays from each block)")
    print(f"ratio shared/naive: {t_shared / t_naive:.3f}")
    print(f"one replayed pass: blocks {t_blocks:.2f} s, tail (norm + head + log-sum-exp) "
          f"{t_tail:.2f} s ({t_tail / (t_blocks + t_tail):.0%} of it); a full naive pass: "
          f"{t_naive / (L + 1):.2f} s. With a free tail the ratio could reach "
          f"0.5 + 0.5/(L+1) = {0.5 + 0.5 / (L + 1):.3f}")
    print(f"baseline perplexity {naive[0]:.4f}; largest relative difference naive vs shared: {worst:.2e}")


if __name__ == "__main__":
    main()
