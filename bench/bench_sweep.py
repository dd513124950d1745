"""Sweep throughput and runner overhead: runs per hour with 1 and 2 local workers.

    .venv/bin/python bench/bench_sweep.py [--model M] [--layers "10;12;14;16"] [--steps 5]

Runs the same small SFT sweep (arithmetic) into fresh directories with `--workers 1` and
`--workers 2`. Overhead = (sweep wall time - sum of the runs' own wall times) / sum of the runs'
wall times: what the runner adds (model loading, the shared base evaluation, store writes,
process start-up) over the training runs themselves. Target: under 5%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from layerwise.training.result import RunResult
from layerwise.sweeps.runner import run_sweep
from layerwise.sweeps.spec import SweepSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--layers", default="10;12;14;16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    train = {"steps": args.steps, "lr": 3e-4, "batch_size": 16, "eval_n": 60, "general_seqs": 2,
             "general_seq_len": 128}
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        out = Path(tempfile.mkdtemp(prefix="layerwise-bench-sweep-"))
        sweep = SweepSpec(model=args.model, task="arithmetic", method="sft", layers=args.layers,
                          seeds=(0,), train=train)
        start = time.perf_counter()
        rows = run_sweep(sweep, out, workers=workers, keep_full=False)
        wall = time.perf_counter() - start
        runs = [r for r in rows if r["label"] != "base"]
        inside = sum(RunResult.from_dict(r["metrics"]).wall_seconds for r in runs)
        res = {"workers": workers, "runs": len(runs), "wall_s": wall, "runs_wall_s": inside,
               "runs_per_hour": 3600 * len(runs) / wall,
               "overhead_pct": 100 * (wall * workers - inside) / inside}
        results.append(res)
        print(f"workers {workers}: {len(runs)} runs in {wall:.1f} s ({res['runs_per_hour']:.0f} runs/h); "
              f"runs' own time {inside:.1f} s; overhead {res['overhead_pct']:.1f}% "
              f"(wall x workers vs the runs' own wall time)", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
