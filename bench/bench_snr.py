"""Spectrum's SNR scan: Spectrum's formula (one float32 SVD per matrix) vs layerwise's `snr`.

    .venv/bin/python bench/bench_snr.py [--model M] [--repeats 5]

Both run in this process on the same weights (the embedded SmolLM2-135M by default: 30 blocks x
7 matrices = 210). Spectrum's way: `torch.linalg.svdvals` of each matrix in float32, then the
SNR formula. layerwise's: the singular values from a float64 eigensolve of the smaller Gram
matrix (numpy/OpenBLAS), one single-threaded solve per matrix, as many at once as torch has
threads. The two run in turn, --repeats times. Prints both times (best of the repeats), their
ratio (and each repeat's), and the largest relative difference of the 210 SNRs. Time it with
nothing else running.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.weights import has_spectrum, snr_metric, spectrum_reference_snrs
from layerwise.models import discover_layers, load_model


def interleaved(repeats: int, first, second):
    """Run `first` and `second` in turn `repeats` times (a slow spell of the machine hits both);
    returns each one's times and last result."""
    times: tuple[list[float], list[float]] = ([], [])
    results = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
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

    (ref_times, new_times), (ref, new) = interleaved(args.repeats, spectrum_way, layerwise_way)
    t_ref, t_new = min(ref_times), min(new_times)
    ratios = sorted(r / n for r, n in zip(ref_times, new_times))
    worst = max(abs(new[k] - ref[k]) / abs(ref[k]) for k in ref if math.isfinite(ref[k]))
    print(f"{loaded.source}: {len(matrices)} matrices in {layers.num_blocks} blocks, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"Spectrum's formula (float32 svdvals per matrix): {t_ref:7.2f} s")
    print(f"layerwise snr (float64 Gram eigvalsh, parallel): {t_new:7.2f} s")
    print(f"speed-up: {t_ref / t_new:.2f}x (best against best; per repeat "
          f"{ratios[0]:.2f}-{ratios[-1]:.2f}x, median {ratios[len(ratios) // 2]:.2f}x); "
          f"largest relative SNR difference: {worst:.2e}")


if __name__ == "__main__":
    main()
