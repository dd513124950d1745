"""Peak memory and time of `layerwise compare` on the embedded model, against loading both models.

    .venv/bin/python bench/bench_compare.py [--base embedded] [--tuned DIR ...] [--json FILE]

Without --tuned, a "tuned" checkpoint is made once from the base (every entry of every block moved
by N(0, 1e-4), the way a full fine-tuning run moves them), so the bench needs no training run.
Each measurement runs in its own fresh process and reports that process's peak resident memory
(VmHWM), so nothing one step allocated is counted in another:
- `import`: the fixed cost, python + torch + layerwise imported and the meta-device model built;
- `compare_many()`: the streaming comparison alone (library call, no ranks, no outputs);
- `compare --no-rank` and `compare` (with the SVD ranks): the CLI, with CSVs, plots and report;
- `load both`: what a non-streaming tool does, both state dicts fully in memory, then diffed.
Target: compare's peak minus the import cost stays near the largest tensor pair, not the model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
start = time.perf_counter()
what, args = sys.argv[1], json.loads(sys.argv[2])
from layerwise.analysis.summary import meta_layers
from layerwise.analysis.checkpoints import resolve_checkpoint
meta_layers(args["base"])
if what == "compare":
    from layerwise.cli.main import main
    code = main(["compare", args["base"], *args["tuned"], "--out", args["out"], *args["extra"]])
    assert code == 0
elif what == "library":
    from layerwise.analysis.diff import compare_many
    compare_many(args["base"], args["tuned"], ranks=False)
elif what == "load":
    from safetensors.torch import load_file
    import glob, torch
    def load(d):
        out = {}
        for f in sorted(glob.glob(str(resolve_checkpoint(d)) + "/*.safetensors")):
            out.update({k: v.float() for k, v in load_file(f).items()})
        return out
    base = load(args["base"])
    changed = 0
    for t in args["tuned"]:
        tuned = load(t)
        changed += sum(int(((tuned[k] - base[k]).abs() > 1e-5).sum()) for k in base if k in tuned)
        del tuned
# VmHWM, not ru_maxrss: Linux carries the parent's resident size into ru_maxrss across fork+exec
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
"""


def measure(what: str, **args) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, json.dumps(args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_tuned(base: Path, out: Path) -> Path:
    """Every block tensor moved by N(0, 1e-4); embeddings and norms left as they are."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            shutil.copy(f, out / f.name)
    g = torch.Generator().manual_seed(0)
    for f in base.glob("*.safetensors"):
        tensors = load_file(f)
        for name, t in tensors.items():
            if ".layers." in name:
                tensors[name] = t + 1e-4 * torch.randn(t.shape, generator=g, dtype=t.dtype)
        save_file(tensors, out / f.name, metadata={"format": "pt"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="embedded")
    parser.add_argument("--tuned", nargs="*", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from layerwise.analysis.checkpoints import Checkpoint, resolve_checkpoint

    base_dir = resolve_checkpoint(args.base)
    tmp = Path(tempfile.mkdtemp(prefix="layerwise-bench-compare-"))
    tuned = args.tuned or [str(make_tuned(base_dir, tmp / "tuned"))]
    ck = Checkpoint(base_dir)
    sizes = {n: 4 * max(1, _numel(ck.shape(n))) for n in ck.names}
    largest = max(sizes, key=sizes.get)
    common = {"base": str(base_dir), "tuned": tuned}
    rows = {
        "import": measure("none", **common),
        "compare_many()": measure("library", **common),
        "compare --no-rank": measure("compare", out=str(tmp / "a"), extra=["--no-rank"], **common),
        "compare": measure("compare", out=str(tmp / "b"), extra=[], **common),
        "load both": measure("load", **common),
    }
    fixed = rows["import"]["peak_rss_mib"]
    result = {
        "base": str(base_dir), "tuned": tuned,
        "model_fp32_mib": sum(sizes.values()) / 2**20,
        "largest_tensor": largest, "largest_tensor_fp32_mib": sizes[largest] / 2**20,
        "rows": {k: {**v, "above_import_mib": v["peak_rss_mib"] - fixed} for k, v in rows.items()},
    }
    print(f"base {base_dir}: {len(ck.names)} tensors, {result['model_fp32_mib']:.0f} MiB in fp32; "
          f"largest {largest} {result['largest_tensor_fp32_mib']:.0f} MiB; {len(tuned)} tuned")
    print(f"{'step':<20}{'seconds':>10}{'peak RSS MiB':>15}{'above import':>15}")
    for k, v in result["rows"].items():
        print(f"{k:<20}{v['seconds']:>10.1f}{v['peak_rss_mib']:>15.0f}{v['above_import_mib']:>15.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


if __name__ == "__main__":
    main()
