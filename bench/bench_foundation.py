"""Foundation figures on the embedded SmolLM2-135M-Instruct: load times and reference perplexity.

    .venv/bin/python bench/bench_foundation.py [--skip-cold]

Prints: the one-off GGUF -> safetensors conversion time (in a fresh temporary cache), the cached
load time, resolve+apply time of a selection, and perplexity on the first 8 windows of 512 tokens
of WikiText-2 test (../shared/data), which ../shared/data/README.md gives as 27.6.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from layerwise.data import load_corpus, token_windows
from layerwise.evaluation import perplexity
from layerwise.models import discover_layers, load_model
from layerwise.selection import apply_selection, resolve_selection, summarize

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext2_test.txt"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold conversion")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cache:
            old = os.environ.get("LAYERWISE_CACHE")
            os.environ["LAYERWISE_CACHE"] = cache
            _, cold = timed(lambda: load_model())
            os.environ.pop("LAYERWISE_CACHE") if old is None else os.environ.update(LAYERWISE_CACHE=old)
        print(f"cold load (GGUF dequantize + convert + load): {cold:.1f} s")
    loaded, warm = timed(lambda: load_model())
    print(f"cached load: {warm:.1f} s, {loaded.num_parameters:,} parameters")

    layers = discover_layers(loaded.model)
    (selection, _), t_sel = timed(
        lambda: (sel := resolve_selection(layers, "20%-80%"), apply_selection(loaded.model, sel))
    )
    share = summarize(loaded.model, layers, selection).share
    print(f"resolve + apply '20%-80%': {t_sel * 1000:.1f} ms, blocks "
          f"{selection.blocks[0]}-{selection.blocks[-1]}, {share:.2%} trainable")

    windows = token_windows(loaded.tokenizer, load_corpus(str(WIKITEXT)), 512, 8,
                            loaded.context_length)
    ppl, t_ppl = timed(lambda: perplexity(loaded.model, windows, batch_size=4))
    print(f"perplexity, WikiText-2 test, 8 x 512 tokens: {ppl:.4f} (reference 27.6), {t_ppl:.1f} s")


if __name__ == "__main__":
    main()
