"""Resume and interruption: real signals, real checkpoints, real resumed runs on tiny models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from layerwise.errors import LayerwiseError
from layerwise.training.config import TrainConfig
from layerwise.training.result import latest_checkpoint, read_run
from layerwise.training.runner import resume, train

SFT = dict(task="arithmetic", method="sft", full=True, steps=6, batch_size=4, n_train=64, eval_n=4,
           general_seqs=1, general_seq_len=32, progress=False, lr=1e-3)


class SignalAt(TrainerCallback):
    """Sends this process a real signal at the end of a step (as Ctrl-C or `kill` would)."""

    def __init__(self, step: int, signum=signal.SIGINT):
        self.step, self.signum = step, signum

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _weights(run_dir):
    return load_file(run_dir / "model" / "model.safetensors")


@pytest.mark.parametrize("signum, what", [(signal.SIGINT, {}),
                                          (signal.SIGTERM, {"full": False, "layers": "1-2"})])
def test_resumed_sft_is_bit_identical_to_an_uninterrupted_run(tmp_path, signum, what):
    cfg = {**SFT, **what}
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **cfg), "tiny:llama")
    assert whole.status == "completed"
    cut = train(TrainConfig(out=str(tmp_path / "cut"), save_every=2, **cfg), "tiny:llama",
                extra_callbacks=[SignalAt(3, signum)])
    # The signal lands after step 3's own stop check, so the run stops (and saves) after step 4.
    assert cut.status == "interrupted" and cut.steps_completed == 4
    assert cut.checkpoint.endswith("checkpoint-4")
    on_disk = read_run(tmp_path / "cut")
    assert on_disk.status == "interrupted" and on_disk.steps_completed == 4
    assert not (tmp_path / "cut" / "model").exists()  # no final model from an unfinished run
    saved = load_file(tmp_path / "cut" / "checkpoints" / "checkpoint-4" / "model.safetensors")
    if what:  # a block-only run's checkpoints hold the trainable tensors alone
        assert saved and all(k.startswith(("model.layers.1.", "model.layers.2.")) for k in saved)
    else:
        assert "model.embed_tokens.weight" in saved
    done = resume(str(tmp_path / "cut"), quiet=True)
    assert done.status == "completed" and done.steps_completed == 6 and done.resumed_from_step == 4
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda r: [h["loss"] for h in r.history if "loss" in h]  # noqa: E731
    assert losses(done) == losses(whole)  # the history spans both sittings
    assert done.base.accuracy == whole.base.accuracy  # base scores carried over, not redone


LOGGING_TASK = '''
from layerwise.tasks import TaskItem

class Logged:
    """Answer 7; every training item the reward scores is logged, in order."""
    name = "logged"
    description = "records the order in which training prompts are scored"
    max_new_tokens = 4

    def __init__(self, log):
        self.log = log

    def items(self, split, n, seed):
        base = 0 if split == "train" else 100_000
        return [TaskItem(id=str(base + i), prompt=f"Q{i}:", answer="7", target=" 7") for i in range(n)]

    def extract(self, completion, item):
        return completion.strip()[:1]

    def score(self, completion, item):
        if int(item.id) < 100_000:
            with open(self.log, "a") as fh:
                fh.write(item.id + "\\n")
        return float(self.extract(completion, item) == "7") or 0.1 * completion.count("7")

def make_task(log):
    return Logged(log)
'''


def test_rl_resume_keeps_step_count_config_and_data_order(tmp_path):
    task_file = tmp_path / "logged.py"
    task_file.write_text(LOGGING_TASK)
    rl = dict(task=f"{task_file}:make_task", method="grpo", layers="2", steps=4, batch_size=4,
              num_generations=2, n_train=16, eval_n=2, general_seqs=1, general_seq_len=32,
              progress=False, lr=1e-3, save_every=1)
    logs = {k: tmp_path / f"{k}.log" for k in ("whole", "cut")}
    whole = train(TrainConfig(out=str(tmp_path / "whole"), task_options={"log": str(logs["whole"])},
                              **rl), "tiny:llama")
    cut = train(TrainConfig(out=str(tmp_path / "cut"), task_options={"log": str(logs["cut"])}, **rl),
                "tiny:llama", extra_callbacks=[SignalAt(1)])
    assert cut.status == "interrupted" and cut.steps_completed == 2
    done = resume(str(tmp_path / "cut"), quiet=True)
    assert done.status == "completed" and done.steps_completed == whole.steps_completed == 4
    assert done.config == {**whole.config, "out": str(tmp_path / "cut"),
                           "task_options": {"log": str(logs["cut"])}}
    # Data order: the prompts scored in the two sittings are, in order, those of the whole run.
    order = {k: p.read_text().split() for k, p in logs.items()}
    assert len(order["whole"]) == 4 * 4 and order["cut"] == order["whole"]
    assert [h["step"] for h in done.history if "reward" in h] == [1, 2, 3, 4]


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    done = train(TrainConfig(out=str(tmp_path / "done"), **{**SFT, "steps": 2}), "tiny:llama")
    assert done.status == "completed"
    with pytest.raises(LayerwiseError, match="already completed; nothing to resume"):
        resume(str(tmp_path / "done"))
    with pytest.raises(LayerwiseError, match="does not exist \\(give the --out of the run to resume\\)"):
        resume(str(tmp_path / "nowhere"))
    cut = train(TrainConfig(out=str(tmp_path / "cut"), **SFT), "tiny:llama",
                extra_callbacks=[SignalAt(1)])
    # Without --save-every the interruption still writes one checkpoint.
    assert cut.status == "interrupted" and latest_checkpoint(tmp_path / "cut")[0] == 2


def test_an_incomplete_checkpoint_is_never_resumed_from(tmp_path):
    cut = train(TrainConfig(out=str(tmp_path / "cut"), save_every=1, **SFT), "tiny:llama",
                extra_callbacks=[SignalAt(2)])
    step, newest = latest_checkpoint(tmp_path / "cut")
    assert step == cut.steps_completed == 3
    (newest / "COMPLETE").unlink()  # as if the process died while writing it
    assert latest_checkpoint(tmp_path / "cut")[0] == 2
    done = resume(str(tmp_path / "cut"), quiet=True)
    assert done.resumed_from_step == 2 and done.steps_completed == 6


def _launch(args, out, env=None):
    return subprocess.Popen([sys.executable, "-m", "layerwise", "train", *args, "--out", str(out)],
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_steps(out, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not list((out / "tensorboard").glob("events.*")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1.5)  # inside the training loop now


def _ctrl_c(proc, wait=None) -> str:
    """Ctrl-C once `wait()` returns; the process's stderr. Never leaves the process behind."""
    try:
        if wait is not None:
            wait()
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    args = ["--model", "tiny:llama", "--layers", "1", "--steps", "100000", "--batch-size", "4",
            "--eval-n", "2", "--general-seqs", "1", "--general-seq-len", "32", "-q"]
    proc = _launch(args, out)
    err = _ctrl_c(proc, lambda: _wait_for_steps(out, proc))
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("layerwise: interrupted at step ") and f"layerwise train --resume {out}" in last
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["steps_completed"] > 0
    step, ckpt = latest_checkpoint(out)
    assert step == metrics["steps_completed"] and (ckpt / "optimizer.pt").is_file()
    assert (ckpt / "rng_state.pth").is_file() and (ckpt / "scheduler.pt").is_file()


def test_kill_9_leaves_running_which_later_commands_explain(tmp_path, capsys):
    from layerwise.cli.main import main

    out = tmp_path / "run"
    args = ["--model", "tiny:llama", "--layers", "1", "--steps", "100000", "--batch-size", "4",
            "--eval-n", "2", "--general-seqs", "1", "--general-seq-len", "32", "--save-every", "3",
            "-q"]
    proc = _launch(args, out)
    try:
        _wait_for_steps(out, proc)
        deadline = time.time() + 60
        while latest_checkpoint(out) is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads((out / "metrics.json").read_text())["status"] == "running"
    code = main(["train", *args[:-1], "--steps", "5", "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "stopped without a word" in err and f"layerwise train --resume {out}" in err
    # --resume continues the killed run (to its own 100000 steps: interrupt it right away).
    proc = subprocess.Popen([sys.executable, "-m", "layerwise", "train", "--resume", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    err = _ctrl_c(proc, lambda: time.sleep(12))
    assert proc.returncode == 130, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["resumed_from_step"] >= 3
