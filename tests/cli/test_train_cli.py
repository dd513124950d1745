"""`layerwise train` and `layerwise eval` through main(argv), and a run killed mid-training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerwise.cli.main import main
from tests.cli.test_cli import _one_line_error, run

FAST = ["--model", "tiny:llama", "--steps", "2", "--batch-size", "4", "--n-train", "8",
        "--eval-n", "4", "-q"]


def test_train_then_eval_the_checkpoint(capsys, tmp_path, toy_task):
    code, out, err = run(capsys, "train", *FAST, "--task", toy_task, "--layers", "-1",
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert re.search(r"trains\s+layers -1 \(blocks 3\)", out) and "status        completed" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trainable"]["blocks"] == [3]
    code, out, err = run(capsys, "eval", "--model", str(tmp_path / "run" / "model"), "--task",
                         toy_task, "--n", "5", "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert out.startswith("letters: accuracy ")
    records = (tmp_path / "ev" / "records.jsonl").read_text().splitlines()
    assert len(records) == 5
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["accuracy"] == sum(json.loads(r)["correct"] for r in records) / 5


def test_eval_arithmetic_records(capsys, tmp_path):
    code, out, err = run(capsys, "eval", "--model", "tiny:llama", "--task", "arithmetic",
                         "--task-option", "digits=2", "--n", "3", "--out", str(tmp_path))
    assert code == 0, err
    rec = json.loads((tmp_path / "records.jsonl").read_text().splitlines()[0])
    assert set(rec) >= {"id", "prompt", "completion", "extracted", "answer", "score", "correct"}


@pytest.mark.parametrize("argv, pattern", [
    (["train", *FAST, "--layers", "1", "--task", "chess"],
     r"unknown task 'chess'; valid: arithmetic, gsm8k, code, decision"),
    (["train", *FAST, "--layers", "1", "--method", "ppo"], r"invalid choice: 'ppo' \(choose from 'sft'"),
    (["train", *FAST], r"exactly one of --layers SPEC, --full, --lora"),
    (["train", *FAST, "--layers", "9"], r"block 9 .*out of range"),
    (["train", *FAST, "--layers", "1:nothing"], r"unknown submodule filter 'nothing'"),
    (["train", *FAST, "--layers", "1", "--task-option", "digits=0"], r"digits=0: must be 1..9"),
    (["train", *FAST, "--layers", "1", "--lr-scale", "2=x"], r"factor 'x' is not a number"),
    (["train", *FAST, "--layers", "1", "--task", "gsm8k", "--task-option", "test=/nope.jsonl"],
     r"data file /nope.jsonl does not exist"),
    (["train", *FAST, "--layers", "1", "--task", "/nope/task.py:make_task"], r"task file .* does not exist"),
    (["eval", "--model", "tiny:llama", "--n", "0"], r"--n 0: evaluate at least one item"),
    (["train", *FAST, "--full", "--method", "grpo", "--num-generations", "3"], r"multiple of"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, pattern):
    code, out, err = run(capsys, *argv)
    _one_line_error(code, out, err, pattern)


def test_nan_loss_fails_the_run_with_exit_2(capsys, tmp_path):
    """A learning rate that blows the weights up: the run stops, is marked failed, exit 2."""
    code, out, err = run(capsys, "train", *FAST, "--layers", "1-3", "--lr", "1e30",
                         "--steps", "8", "--max-grad-norm", "0", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert code == 2, err
    assert metrics["status"] == "failed" and "non-finite loss" in metrics["failure"]
    assert re.search(r"training failed: non-finite loss .*last good weights are in", err.strip())
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_a_killed_run_never_looks_complete(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerwise.cli.main", "train", "--model", "tiny:llama", "--layers",
         "1", "--steps", "100000", "--batch-size", "4", "--eval-n", "2", "--out", str(out), "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "tensorboard").glob("events.*")):
            time.sleep(0.2)
        time.sleep(1.0)  # inside the training loop now
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "running"  # not "completed": a reader knows it never finished
    assert not (out / "model").exists()
