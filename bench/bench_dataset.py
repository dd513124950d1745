"""Your own dataset at scale: time to the first training step and peak memory for a 10,000-row
and a 1,000,000-row conversational JSONL, and what our tokenization costs per step against a
plain TRL SFTTrainer on the same rows.

    .venv/bin/python bench/bench_dataset.py [--rows 10000,1000000] [--parts scale,overhead] [--json FILE]

1. Scale. Each file (conversational prompt-completion rows, generated once into a temp folder)
   is trained on by `layerwise train --dataset F --layers 1 --steps 1 --n-train 64` on a tiny
   llama with a chat template, in its own fresh process with its own empty `datasets` cache
   (cold: the JSON -> Arrow conversion included), then again on the warm cache. Reported: the
   seconds from the command's start to the end of its first step (metrics.json
   `first_step_seconds`) and the process's peak resident memory (VmHWM, not ru_maxrss, which
   carries the parent's size across fork+exec). Target: the 1M-row peak at most 10% above the
   10K-row peak.
2. Overhead. The same conversational rows (steps x batch of them, so every row is trained on
   once) trained for 16 steps (batch 8, tiny llama, one block) by TRL's SFTTrainer given the raw
   rows (it tokenizes them itself) and by SFTTrainer given our pre-tokenized rows (`sft_tokens`,
   chat template included); each side's wall time from the raw rows to the end of training
   (preparation, the trainer's construction, the steps), median of 5 alternating rounds, in one
   process. Target: ours at most 3% more per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHILD = r"""
import json, sys
from layerwise.cli.main import main
code = main(json.loads(sys.argv[1]))
status = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in open("/proc/self/status")
          if l.startswith(("VmHWM", "RssAnon", "RssFile"))}
print("RESULT", json.dumps({"code": code, "peak_mib": status["VmHWM"],
                            "anon_mib_at_end": status["RssAnon"], "file_mib_at_end": status["RssFile"]}))
"""


def write_rows(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = i % 97, (i * 7) % 89
            fh.write(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} + {b}? ({i})"}],
                                 "completion": [{"role": "assistant", "content": f"{a} + {b} = {a + b}"}],
                                 "solution": str(a + b)}) + "\n")


def run_child(data: Path, template: Path, out: Path, cache: Path) -> dict:
    argv = ["train", "--model", "tiny:llama", "--dataset", str(data), "--chat-template", str(template),
            "--layers", "1", "--steps", "1", "--batch-size", "8", "--n-train", "64", "--eval-n", "8",
            "--general-seqs", "1", "--general-seq-len", "16", "--report-to", "none",
            "--out", str(out), "--overwrite", "-q"]
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True,
                          text=True, env=env, check=False)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None or json.loads(line[7:])["code"] != 0:
        raise SystemExit(f"train failed on {data}:\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {**json.loads(line[7:]), "first_step_seconds": metrics["first_step_seconds"]}


def scale(rows: list[int], tmp: Path) -> list[dict]:
    from tests.data.dataset_fixtures import CHATML

    template = tmp / "chatml.jinja"
    template.write_text(CHATML)
    out = []
    for n in rows:
        data = tmp / f"rows{n}.jsonl"
        start = time.perf_counter()
        write_rows(data, n)
        made = time.perf_counter() - start
        cache = tmp / f"cache{n}"
        for state in ("cold", "warm"):
            r = run_child(data, template, tmp / f"run{n}", cache)
            out.append({"rows": n, "file_mib": data.stat().st_size / 2**20, "cache": state,
                        "first_step_seconds": r["first_step_seconds"], "peak_mib": r["peak_mib"],
                        "anon_mib_at_end": r["anon_mib_at_end"],
                        "file_mib_at_end": r["file_mib_at_end"], "write_seconds": made})
            print(f"{n:>9,} rows ({out[-1]['file_mib']:.0f} MiB), {state} cache: first step after "
                  f"{r['first_step_seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB (at the end: "
                  f"anonymous {r['anon_mib_at_end']:.0f} MiB, file-backed "
                  f"{r['file_mib_at_end']:.0f} MiB)", flush=True)
    return out


def overhead(tmp: Path, rounds: int = 5, steps: int = 16, batch: int = 8) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from layerwise.data.chat import sft_tokens
    from layerwise.models import load_model
    from tests.data.dataset_fixtures import CHATML

    write_rows(tmp / "overhead.jsonl", steps * batch)
    raw = [json.loads(l) for l in open(tmp / "overhead.jsonl")]
    raw = [{"prompt": r["prompt"], "completion": r["completion"]} for r in raw]

    def one(ours: bool) -> tuple[float, float]:
        loaded = load_model("tiny:llama", seed=0)
        tok = loaded.tokenizer
        tok.chat_template = CHATML
        for name, p in loaded.model.named_parameters():
            p.requires_grad_(".layers.1." in name)
        args = SFTConfig(output_dir=str(tmp / "trl"), max_steps=steps, per_device_train_batch_size=batch,
                         report_to=[], use_cpu=True, max_length=256, logging_steps=steps,
                         disable_tqdm=True, save_strategy="no", seed=0, completion_only_loss=True)
        torch.manual_seed(0)
        start = time.perf_counter()
        data = (Dataset.from_list([sft_tokens(r, tok) for r in raw]) if ours
                else Dataset.from_list(raw))
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=data, processing_class=tok)
        prepared = time.perf_counter() - start
        trainer.train()
        return time.perf_counter() - start, prepared

    times = {"trl": [], "layerwise": []}
    prep = {"trl": [], "layerwise": []}
    for i in range(rounds):
        for side in (("trl", "layerwise") if i % 2 == 0 else ("layerwise", "trl")):
            total, prepared = one(side == "layerwise")
            times[side].append(total)
            prep[side].append(prepared)
    trl_s, ours_s = statistics.median(times["trl"]), statistics.median(times["layerwise"])
    result = {"rows": len(raw), "steps": steps, "batch": batch, "rounds": rounds,
              "trl_seconds": times["trl"], "layerwise_seconds": times["layerwise"],
              "trl_prepare_seconds": prep["trl"], "layerwise_prepare_seconds": prep["layerwise"],
              "trl_per_step": trl_s / steps, "layerwise_per_step": ours_s / steps,
              "overhead": ours_s / trl_s - 1}
    print(f"tokenization + template, {len(raw)} rows, {steps} steps: TRL SFTTrainer "
          f"{trl_s / steps:.3f} s/step (preparing {statistics.median(prep['trl']):.2f} s), "
          f"layerwise {ours_s / steps:.3f} s/step (preparing "
          f"{statistics.median(prep['layerwise']):.2f} s), median of {rounds}: "
          f"{100 * result['overhead']:+.1f}%", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,1000000")
    parser.add_argument("--parts", default="scale,overhead")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        results = {"scale": scale(rows, Path(tmp)) if "scale" in parts else [],
                   "overhead": overhead(Path(tmp)) if "overhead" in parts else None}
    results["peak_growth"] = {}
    for state in ("cold", "warm"):
        peaks = {r["rows"]: r["peak_mib"] for r in results["scale"] if r["cache"] == state}
        if len(peaks) >= 2:
            growth = peaks[max(peaks)] / peaks[min(peaks)] - 1
            results["peak_growth"][state] = growth
            print(f"peak memory, {max(peaks):,} rows against {min(peaks):,}, {state} cache: "
                  f"{100 * growth:+.1f}% (target: at most +10%)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
