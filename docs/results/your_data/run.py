"""The runs behind docs/results/your-data.md: the embedded SmolLM2-135M-Instruct on GSM8K in
conversational form, through `--dataset` (resumable: a run whose metrics.json is complete is kept).

    .venv/bin/python docs/results/your_data/make_gsm8k_chat.py out/your-data/data
    .venv/bin/python docs/results/your_data/run.py all out/your-data
        # per seed (0, then 1): SFT mid / full / lora, tune --budget 3, GRPO on the middle 20-80%
    .venv/bin/python docs/results/your_data/keep.py out/your-data docs/results/your_data/runs

SFT arms share one base scoring (the library's `score_base`, as a sweep does); tune is the CLI.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1)
ARMS = {"mid": {"layers": "20%-80%"}, "full": {"full": True}, "lora": {"lora": True}}


def common(out: Path) -> dict:
    data = out / "data"
    return {"dataset": str(data / "gsm8k_chat_train.jsonl"),
            "eval_dataset": str(data / "gsm8k_chat_test.jsonl"), "reward": ["math"],
            "task_options": {"max_new_tokens": 128}, "steps": 12, "batch_size": 8,
            "n_train": 96, "max_length": 320, "eval_n": 24, "eval_batch_size": 12,
            "forgetting": "lm-eval:layerwise_wikitext_local", "lm_eval_limit": 2,
            "lm_eval_include": str(out / "lm_eval"), "report_to": "none"}


def done(run: Path) -> bool:
    path = run / "metrics.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "completed"


def include_dir(out: Path) -> None:
    from layerwise.evaluation.harness import wikitext_task

    wikitext_task(HERE.parents[3] / "shared" / "data" / "wikitext2_test.txt", out / "lm_eval")


def sft(out: Path, seeds=SEEDS) -> None:
    from layerwise.models.loading import load_model
    from layerwise.training.config import TrainConfig
    from layerwise.training.recipe import score_base
    from layerwise.training.runner import train

    todo = [(arm, s) for s in seeds for arm in ARMS if not done(out / f"sft-{arm}-seed{s}")]
    if not todo:
        return
    loaded = load_model(None)
    base_file = out / "sft-base.json"
    probe = TrainConfig(**common(out), layers="15")
    if base_file.is_file():
        from layerwise.training.result import Scores

        base = Scores.from_dict(json.loads(base_file.read_text()))
    else:
        base = score_base(probe, loaded).scores
        base_file.write_text(json.dumps(dataclasses.asdict(base), indent=2) + "\n")
    for arm, seed in todo:
        cfg = TrainConfig(**common(out), **ARMS[arm], seed=seed, out=str(out / f"sft-{arm}-seed{seed}"),
                          overwrite=True)
        own = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
        result = train(cfg, None, loaded=own, base=base)
        print(f"sft {arm} seed {seed}: {result.status} S {result.base.score} -> {result.final.score}",
              flush=True)
        if result.status == "interrupted":  # Ctrl-C / SIGTERM: stop here, rerun resumes
            raise SystemExit(130)


def _flags(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key == "task_options":
            args += [a for k, v in value.items() for a in ("--task-option", f"{k}={v}")]
        elif isinstance(value, list):
            args += [a for v in value for a in (flag, v)]
        elif value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args


def tune(out: Path, seeds=SEEDS) -> None:
    for seed in seeds:
        run = out / f"tune-seed{seed}"
        if (run / "tune.json").is_file() and json.loads((run / "tune.json").read_text()).get("status") == "completed":
            continue
        cmd = [sys.executable, "-m", "layerwise", "tune", "--budget", "3", "--seed", str(seed),
               "--out", str(run), *_flags(common(out))]
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode == 130:
            raise SystemExit(130)


def grpo(out: Path, seeds=SEEDS) -> None:
    options = {**common(out), "reward": ["math", f"{HERE / 'closeness.py'}:closeness=0.5"],
               "method": "grpo", "layers": "20%-80%", "steps": 10, "batch_size": 8,
               "num_generations": 8, "max_completion_length": 128, "lr": 1e-5}
    for seed in seeds:
        run = out / f"grpo-mid-seed{seed}"
        if done(run):
            continue
        cmd = [sys.executable, "-m", "layerwise", "train", "--seed", str(seed), "--out", str(run),
               "--overwrite", *_flags(options)]
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd, check=False).returncode == 130:
            raise SystemExit(130)


if __name__ == "__main__":
    stage, out = sys.argv[1], Path(sys.argv[2])
    include_dir(out)
    if stage == "all":
        for seed in SEEDS:
            for step in (sft, tune, grpo):
                step(out, (seed,))
    else:
        {"sft": sft, "tune": tune, "grpo": grpo}[stage](out)
