"""Spectrum's SNR scan: Spectrum's formula (one float32 SVD per matrix) vs layerwise's `snr`.

    .venv/bin/python bench/bench_snr.py [--model M] [--repeats 5] [--json FILE]

Both run in this process on the same weights (the embedded SmolLM2-135M by default: 30 blocks x
7 matrices = 210). Spectrum's way: `torch.linalg.svdvals` of each matrix in float32, then the
SNR formula. layerwise's: the singular values from a float64 eigensolve of the smaller Gram
matrix (numpy/OpenBLAS), one single-threaded solve per matrix, as many at once as torch has
threads. A third way is Spectrum's SVDs run as layerwise runs its solves: one single-threaded
SVD per matrix, as many at once as torch has threads (the parallelism Spectrum could have too).
The three run in turn, --repeats times. Prints the times (best of the repeats), the ratios (and
each repeat's), and the largest relative difference of the 210 SNRs; --json keeps them all
(docs/results/bench_snr.json). Time it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.weights import has_spectrum, snr_metric, spectrum_reference_snrs
from layerwise.models import discover_layers, load_model


def interleaved(repeats: int, *fns):
    """Run the functions in turn `repeats` times (a slow spell of the machine hits all of them);
    returns each one's times and last result."""
    times: tuple[list[float], ...] = tuple([] for _ in fns)
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args()

    loaded = load_model(args.model)
    layers = discover_layers(loaded.model)
    matrices = [(layers.param_names[id(p)], p) for block in layers.blocks
                for p in block.parameters() if has_spectrum(p)]
    ctx = DiagnosticContext(loaded.model, layers, torch.zeros(1, 8, dtype=torch.long),
                            progress=False)

    def spectrum_way():
        return {name: spectrum_reference_snrs(p)[0] for name, p in matrices}

    def layerwise_way():
        return {r["param"]: r["snr"] for r in snr_metric(ctx).extra["per_matrix"]}

    threads = torch.get_num_threads()

    def spectrum_parallel():
        torch.set_num_threads(1)  # one single-threaded SVD per matrix, `threads` at once
        try:
            with ThreadPoolExecutor(threads) as pool:
                snrs = pool.map(lambda item: (item[0], spectrum_reference_snrs(item[1])[0]),
                                matrices)
                return dict(snrs)
        finally:
            torch.set_num_threads(threads)

    (ref_times, new_times, par_times), (ref, new, par) = interleaved(
        args.repeats, spectrum_way, layerwise_way, spectrum_parallel)
    t_ref, t_new, t_par = min(ref_times), min(new_times), min(par_times)
    ratios = sorted(r / n for r, n in zip(ref_times, new_times))
    par_ratios = sorted(r / n for r, n in zip(par_times, new_times))
    worst = max(abs(new[k] - ref[k]) / abs(ref[k]) for k in ref if math.isfinite(ref[k]))
    print(f"{loaded.source}: {len(matrices)} matrices in {layers.num_blocks} blocks, "
          f"torch {torch.__version__}, {threads} threads")
    print(f"Spectrum's formula (float32 svdvals per matrix): {t_ref:7.2f} s")
    print(f"the same SVDs, {threads} single-threaded at once:     {t_par:7.2f} s")
    print(f"layerwise snr (float64 Gram eigvalsh, parallel): {t_new:7.2f} s")
    print(f"speed-up: {t_ref / t_new:.2f}x (best against best; per repeat "
          f"{ratios[0]:.2f}-{ratios[-1]:.2f}x, median {ratios[len(ratios) // 2]:.2f}x); "
          f"largest relative SNR difference: {worst:.2e}")
    print(f"against the parallel SVDs: {t_par / t_new:.2f}x (per repeat {par_ratios[0]:.2f}-"
          f"{par_ratios[-1]:.2f}x, median {par_ratios[len(par_ratios) // 2]:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": loaded.source, "matrices": len(matrices), "threads": threads,
            "torch": torch.__version__, "repeats": args.repeats,
            "spectrum_seconds": ref_times, "spectrum_parallel_seconds": par_times,
            "snr_seconds": new_times, "speedup_best": t_ref / t_new,
            "speedup_per_repeat": ratios, "speedup_median": ratios[len(ratios) // 2],
            "speedup_vs_parallel_best": t_par / t_new,
            "speedup_vs_parallel_median": par_ratios[len(par_ratios) // 2],
            "largest_relative_snr_difference": worst}, indent=2) + "\n")


if __name__ == "__main__":
    main()
