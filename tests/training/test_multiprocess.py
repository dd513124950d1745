"""`layerwise train` in two CPU processes (DDP over gloo) under `accelerate launch`.

What must hold with N processes: the same blocks-only change as one process, one writer (rank 0:
one metrics.json, one model, one TensorBoard run), identical weights on every rank, `--batch-size`
per process, and interruption, `--save-every` and `--resume` working across the processes.

The launch is `accelerate launch --multi_gpu --num_processes 2`, which runs torchrun, with no
visible GPU and `--device cpu`: in accelerate 1.16, `accelerate launch --cpu --num_processes 2`
starts ONE process (its CPU launcher starts several only through mpirun). See docs/distributed.md.

Rank 1 writes nothing, so to see its weights some launches run `python -m layerwise` through a
small driver (written below into tmp_path) that adds one TrainerCallback, saving each rank's
weights when training ends; argument parsing, the recipe and the trainer are the real ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from layerwise.models import load_model
from layerwise.models.arch import discover_layers
from layerwise.training.config import ModelConfig, TrainConfig
from layerwise.training.runner import train
from layerwise.training.trainable import block_of

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is needed")

# Tiny runs: 8 training items, 4 per process per step, so one step is one epoch.
TINY = ["--model", "tiny:llama", "--layers", "2", "--device", "cpu", "--n-train", "8",
        "--eval-n", "4", "--eval-batch-size", "8", "--general-seqs", "1",
        "--general-seq-len", "32", "-q"]
SAME_AS_TINY = dict(n_train=8, eval_n=4, eval_batch_size=8, general_seqs=1, general_seq_len=32,
                    progress=False)  # TrainConfig fields of TINY, for one-process references
CPU_TINY = ModelConfig(model="tiny:llama", device="cpu")

DRIVER = '''
import os, runpy, signal, sys

import torch
from transformers import TrainerCallback

from layerwise.training import recipe

weights_dir, stop_at = sys.argv[1], int(sys.argv[2])


class RankWeights(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == stop_at:  # Ctrl-C on every rank after the same step
            os.kill(os.getpid(), signal.SIGINT)

    def on_train_end(self, args, state, control, model=None, **kw):
        weights = {n: t.detach().clone() for n, t in model.state_dict().items()}
        torch.save(weights, os.path.join(weights_dir, "rank%s.pt" % os.environ["RANK"]))


_post_init = recipe.TrainRecipe.__post_init__


def _post_init_with_rank_weights(self):
    _post_init(self)
    self.extra_callbacks.append(RankWeights())


recipe.TrainRecipe.__post_init__ = _post_init_with_rank_weights
sys.argv = ["layerwise", *sys.argv[3:]]
runpy.run_module("layerwise", run_name="__main__", alter_sys=True)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`accelerate launch` of two CPU processes running `argv` (a script, or -m module)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *argv]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # A hung collective: torchrun's agent ends its workers on SIGTERM (SIGKILL after 30 s).
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=90)
        pytest.fail(f"the launch hung for {timeout} s:\n{(stdout + stderr)[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _with_rank_weights(tmp_path, stop_at: int = 0) -> list[str]:
    """The launch arguments that run `python -m layerwise` saving each rank's final weights."""
    driver = tmp_path / "rank_weights.py"
    driver.write_text(DRIVER)
    (tmp_path / "ranks").mkdir(exist_ok=True)
    return [str(driver), str(tmp_path / "ranks"), str(stop_at)]


def _rank_weights(tmp_path) -> tuple[dict, dict]:
    return (torch.load(tmp_path / "ranks" / "rank0.pt"), torch.load(tmp_path / "ranks" / "rank1.pt"))


def _tail(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr)[-4000:]


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _saved(out) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def _changed_blocks(saved: dict[str, torch.Tensor]) -> set:
    """The blocks whose saved tensors differ from a fresh tiny:llama with the same seed."""
    fresh = load_model("tiny:llama", seed=0).model
    layers, initial = discover_layers(fresh), fresh.state_dict()
    return {block_of(n, layers) for n, t in saved.items() if not torch.equal(t, initial[n])}


def _written_once(out) -> None:
    """Rank 0 wrote one run: one metrics.json, one model, one TensorBoard event file."""
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "config.yaml", "curves.png", "eval_base.jsonl", "eval_final.jsonl",
        "inputs.json", "metrics.json", "model", "tensorboard"]
    assert len(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (out / "model").glob("*.safetensors")) == ["model.safetensors"]


def _assert_close(saved: dict, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    worst = max((saved[n] - expected[n]).abs().max().item() for n in saved)
    assert worst < 1e-5, f"2 processes x 4 differ from 1 process x 8 by up to {worst}"


def test_sft_on_two_processes_trains_one_block_and_writes_once(tmp_path):
    out = tmp_path / "run"
    proc = _launch("-m", "layerwise", "train", *TINY, "--method", "sft", "--steps", "3",
                   "--batch-size", "4", "--out", str(out))
    assert proc.returncode == 0, _tail(proc)
    m = _metrics(out)
    assert m["status"] == "completed" and m["processes"] == 2 and m["steps_completed"] == 3
    # --batch-size is per process: 2 x 4 = all 8 items in each step.
    assert [h["epoch"] for h in m["history"] if "loss" in h] == [1.0, 2.0, 3.0]
    _written_once(out)
    saved = _saved(out)
    assert _changed_blocks(saved) == {2}
    # What the averaged gradients imply: one process on the global batch of 8 ends where rank 0 did.
    one = train(TrainConfig(layers="2", method="sft", steps=3, batch_size=8, **SAME_AS_TINY),
                CPU_TINY)
    _assert_close(saved, one.model_object)


def test_grpo_on_two_processes_ends_with_identical_ranks(tmp_path, toy_task):
    out = tmp_path / "run"
    proc = _launch(*_with_rank_weights(tmp_path), "train", *TINY, "--method", "grpo",
                   "--task", toy_task, "--lr", "1e-2", "--steps", "2", "--batch-size", "2",
                   "--num-generations", "2", "--out", str(out))
    assert proc.returncode == 0, _tail(proc)
    m = _metrics(out)
    assert m["status"] == "completed" and m["processes"] == 2 and m["steps_completed"] == 2
    # 2 completions per process = one group of 2 per process: 2 of the 8 prompts per step.
    assert [h["epoch"] for h in m["history"] if "loss" in h] == [0.25, 0.5]
    _written_once(out)
    rank0, rank1 = _rank_weights(tmp_path)
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0), "the ranks' weights differ"
    saved = _saved(out)
    assert all(torch.equal(saved[n], rank0[n]) for n in saved)
    assert _changed_blocks(saved) == {2}


def test_interrupt_save_every_and_resume_on_two_processes(tmp_path):
    out = tmp_path / "run"
    run = ["train", *TINY, "--method", "sft", "--steps", "4", "--batch-size", "4",
           "--save-every", "3", "--out", str(out)]
    # SIGINT on both ranks during step 1: both stop after step 2 and one checkpoint is written.
    proc = _launch(*_with_rank_weights(tmp_path, stop_at=1), *run)
    assert proc.returncode != 0  # rank 0 exits 130; torchrun reports a failed child
    m = _metrics(out)
    assert (m["status"], m["steps_completed"], m["processes"]) == ("interrupted", 2, 2), _tail(proc)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert {"COMPLETE", "rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in ckpt.iterdir()}
    rank0, rank1 = _rank_weights(tmp_path)
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0)

    proc = _launch("-m", "layerwise", "train", "--resume", str(out), "-q")
    assert proc.returncode == 0, _tail(proc)
    m = _metrics(out)
    assert m["status"] == "completed" and m["processes"] == 2
    assert (m["resumed_from_step"], m["steps_completed"]) == (2, 4)
    assert (out / "checkpoints" / "checkpoint-3" / "COMPLETE").is_file()  # --save-every 3
    saved = _saved(out)
    assert _changed_blocks(saved) == {2}
    # Both ranks resumed from step 2: the result is an uninterrupted run on the global batch.
    one = train(TrainConfig(layers="2", method="sft", steps=4, batch_size=8, **SAME_AS_TINY),
                CPU_TINY)
    _assert_close(saved, one.model_object)


def test_a_block_schedule_on_two_processes(tmp_path):
    # blocks 1 and 2 take turns; 0 and 3 are in --layers but never scheduled. Under DDP the
    # inactive blocks are unused parameters: they must get no update on any rank, the ranks must
    # agree, and the run must end where one process on the global batch ends.
    out = tmp_path / "run"
    proc = _launch(*_with_rank_weights(tmp_path), "train", *TINY, "--layers", "0-3", "--method",
                   "sft", "--steps", "4", "--batch-size", "4",
                   "--schedule", "phases:1@2;2@2", "--out", str(out))
    assert proc.returncode == 0, _tail(proc)
    m = _metrics(out)
    assert m["status"] == "completed" and m["processes"] == 2 and m["steps_completed"] == 4
    assert m["schedule"]["phases"] == [{"from": 1, "to": 2, "blocks": [1]},
                                       {"from": 3, "to": 4, "blocks": [2]}]
    rank0, rank1 = _rank_weights(tmp_path)
    assert all(torch.equal(rank0[n], rank1[n]) for n in rank0), "the ranks' weights differ"
    saved = _saved(out)
    assert _changed_blocks(saved) == {1, 2}
    one = train(TrainConfig(layers="0-3", method="sft", steps=4, batch_size=8,
                            schedule="phases:1@2;2@2", **SAME_AS_TINY), CPU_TINY)
    _assert_close(saved, one.model_object)
