"""`layerwise data`: load a corpus, cut it into token windows, and optionally score perplexity.

A dry run of what every later command (diagnose, train) will feed the model.
"""

from __future__ import annotations

import argparse
import json
import time

from layerwise.cli.main import add_data_args, add_model_args

NAME = "data"
HELP = "load a corpus and show the token windows a model would see (optionally their perplexity)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--perplexity", action="store_true", help="also score the model on the windows")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")


def run(args: argparse.Namespace) -> int:
    from layerwise.data import load_corpus, token_windows
    from layerwise.evaluation import perplexity
    from layerwise.models import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device, seed=args.seed,
                        trust_remote_code=args.trust_remote_code)
    corpus = load_corpus(args.data, args.text_field)
    windows = token_windows(loaded.tokenizer, corpus, args.seq_len, args.num_seqs,
                            loaded.context_length)
    result = {
        "model": loaded.source,
        "data": corpus.source,
        "characters": len(corpus.text),
        "windows": args.num_seqs,
        "seq_len": args.seq_len,
        "tokens": windows.numel(),
        "first_window_start": loaded.tokenizer.decode(windows[0, :24]),
    }
    if args.perplexity:
        start = time.perf_counter()
        result["perplexity"] = round(perplexity(loaded.model, windows, args.batch_size), 4)
        result["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result, indent=2))
    return 0
