"""What the inputs record (src/layerwise/inputs.py) costs, so it can run on every start and resume.

Prints, and writes to --json:
- the embedded SmolLM2-135M (538 MB of fp32 safetensors): the whole record of a run (model,
  tokenizer, data, code), its model section alone, and the check on resume (`like=`);
- one 2 GB safetensors file (written here, real random tensors): a content hash, and the sampled
  fingerprint a file gets when the model's files pass the 2 GiB limit;
- a 70B-sized checkpoint (30 shards of 4.7 GB, 141 GB in all, sparse files: no disk is used):
  the sampled fingerprint of all shards. Sparse files read as zeros from the page cache, so this
  measures the hashing and the calls, not a disk's seeks (64 reads of 64 KiB per shard: 1,920 in
  all, about 0.2 s on an NVMe disk, tens of seconds on a spinning one).

Each figure is the median of --repeat runs with the files in the page cache (warm), and the first
run, which for the SmolLM2 files may be cold (this machine cannot drop its page cache).

    .venv/bin/python bench/bench_fingerprint.py --json docs/results/bench_fingerprint.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from layerwise.fingerprint import SAMPLE_BYTES, SAMPLES, file_fingerprint, full_limit
from layerwise.inputs import model_dir, model_sections, record
from layerwise.training.config import ModelConfig, TrainConfig
from layerwise.training.run_dir import run_settings


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"first_s": round(times[0], 4), "median_s": round(statistics.median(times), 4),
            "repeat": repeat}


def write_big(path: Path, gib: float) -> int:
    """A safetensors file of `gib` GiB of random bf16 tensors (4096 x 4096 each)."""
    n = int(gib * (1 << 30) / (4096 * 4096 * 2))
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.weight": torch.randn(4096, 4096, generator=g).to(torch.bfloat16)
               for i in range(n)}
    save_file(tensors, path)
    return path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big-gib", type=float, default=2.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out: dict = {"cpu_threads": torch.get_num_threads(), "full_limit_bytes": full_limit(),
                 "samples_per_file": SAMPLES, "sample_bytes": SAMPLE_BYTES}

    # SmolLM2, as a run records it (the embedded model, its converted safetensors directory)
    directory = model_dir(None)
    size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    cfg = TrainConfig(task="arithmetic", layers="14")
    settings = run_settings(ModelConfig(), cfg)
    rec = record(model=None, settings=settings, seed=0)
    out["smollm2"] = {
        "bytes": size,
        "model_section": timed(lambda: model_sections(None, seed=0), args.repeat),
        "whole_record": timed(lambda: record(model=None, settings=settings, seed=0), args.repeat),
        "resume_check_record": timed(lambda: record(model=None, settings=settings, seed=0,
                                                    like=rec), args.repeat),
        "methods": sorted({f["method"] for f in rec["model"]["files"].values()}),
    }

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        big = Path(tmp) / "model.safetensors"
        nbytes = write_big(big, args.big_gib)
        out["big_file"] = {
            "bytes": nbytes,
            "content": timed(lambda: file_fingerprint(big, sample=False), args.repeat),
            "sampled": timed(lambda: file_fingerprint(big, sample=True), args.repeat),
        }
        big.unlink()
        shards = []
        for i in range(30):  # a 70B bf16 checkpoint's shape: 30 files of 4.7 GB (sparse)
            shard = Path(tmp) / f"model-{i + 1:05d}-of-00030.safetensors"
            with shard.open("wb") as fh:
                fh.truncate(4_700_000_000)
            shards.append(shard)
        out["70b_sparse"] = {
            "files": len(shards), "bytes": sum(s.stat().st_size for s in shards),
            "sampled_all": timed(lambda: [file_fingerprint(s, sample=True) for s in shards],
                                 args.repeat),
        }

    s = out["smollm2"]
    lines = [
        f"SmolLM2-135M ({s['bytes'] / 1e6:.0f} MB, {', '.join(s['methods'])} hash): model section "
        f"{s['model_section']['median_s']:.3f} s (first {s['model_section']['first_s']:.3f} s), "
        f"whole record {s['whole_record']['median_s']:.3f} s, resume check "
        f"{s['resume_check_record']['median_s']:.3f} s",
        f"{out['big_file']['bytes'] / 1e9:.2f} GB safetensors: content hash "
        f"{out['big_file']['content']['median_s']:.3f} s (first "
        f"{out['big_file']['content']['first_s']:.3f} s), sampled "
        f"{out['big_file']['sampled']['median_s'] * 1000:.1f} ms",
        f"70B-sized, {out['70b_sparse']['files']} shards, {out['70b_sparse']['bytes'] / 1e9:.0f} "
        f"GB (sparse): sampled {out['70b_sparse']['sampled_all']['median_s']:.3f} s",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
