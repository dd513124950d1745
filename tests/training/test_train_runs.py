"""End-to-end runs of every method on tiny models: real TRL trainers, real backward passes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.models.arch import discover_layers
from layerwise.training import outputs
from layerwise.training.config import TrainConfig
from layerwise.training.result import read_run
from layerwise.training.runner import train
from layerwise.training.trainable import block_of

QUICK = dict(steps=3, batch_size=4, num_generations=2, n_train=16, eval_n=4, eval_batch_size=8,
             general_seqs=1, general_seq_len=32, progress=False, dpo_samples=2)


def _initial_state(family="llama"):
    return {n: p.detach().clone() for n, p in load_model(f"tiny:{family}", seed=0).model.named_parameters()}


@pytest.mark.parametrize("method", ["sft", "grpo", "dr_grpo", "dapo", "rloo", "dpo", "kto"])
def test_each_method_trains_only_the_selected_block(method, toy_task, tmp_path):
    config = TrainConfig(task=toy_task, method=method, layers="2", out=str(tmp_path), lr=1e-2,
                         **QUICK)
    result = train(config, "tiny:llama")
    m = result.to_dict()
    assert result.status == "completed" and result.steps_completed == 3
    before = _initial_state()
    model = result.model_object
    layers = discover_layers(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(block_of(n, layers) == 2 for n in changed), sorted(changed)[:4]
    # The optimizer holds state for exactly the trainable tensors, nothing else.
    opt = result.trainer.optimizer
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(map(id, opt.state)) <= trainable and len(opt.state) == len(trainable)
    # AdamW: two fp32 moments per trainable element, plus a 4-byte step counter per tensor.
    assert result.optimizer_state_bytes == 8 * result.trainable.params + 4 * len(opt.state)
    # Everything a user needs is on disk, and the checkpoint is the trained model.
    saved = load_file(tmp_path / "model" / "model.safetensors")
    name = next(iter(changed))
    assert torch.equal(saved[name], dict(model.named_parameters())[name].detach())
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m)), "metrics.json is the typed result, key for key"
    assert on_disk["status"] == "completed" and on_disk["method"] == method
    assert read_run(tmp_path).final.accuracy == result.final.accuracy
    for key in ("base", "final", "forgetting", "step_seconds_median", "peak_memory_mb",
                "wall_seconds", "precision", "seed", "trainable"):
        assert key in on_disk, key
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    records = (tmp_path / "eval_final.jsonl").read_text().splitlines()
    assert len(records) == 4 and {"completion", "score", "correct"} <= set(json.loads(records[0]))


def test_sft_learns_and_eval_sees_it(toy_task, tmp_path):
    config = TrainConfig(task=toy_task, method="sft", full=True, lr=3e-3, **{**QUICK, "steps": 40,
                         "batch_size": 8, "eval_n": 8})
    r = train(config, "tiny:llama")
    assert r.base.accuracy == 0.0
    assert r.final.accuracy == 1.0, r.history[-3:]


def test_grpo_reward_rises(toy_task):
    config = TrainConfig(task=toy_task, method="grpo", full=True, lr=5e-3,
                         **{**QUICK, "steps": 25, "batch_size": 8, "num_generations": 4})
    history = train(config, "tiny:llama").history
    rewards = [h["reward"] for h in history if "reward" in h]
    assert len(rewards) == 25
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.05, rewards


class HookLowerBlocks(TrainerCallback):
    """Registers backward hooks on every block once training starts."""

    def __init__(self):
        self.fired: set[int] = set()

    def on_train_begin(self, args, state, control, model=None, **kw):
        for i, block in enumerate(discover_layers(model).blocks):
            block.register_full_backward_hook(lambda m, gi, go, i=i: self.fired.add(i))


@pytest.mark.parametrize("what", [{"layers": "2"}, {"lora": True, "lora_layers": "2-3"},
                                  {"layers": "2", "method": "grpo"}])
def test_gradient_checkpointing_with_frozen_blocks(toy_task, what):
    """Checkpointing still trains a partly frozen model, and no frozen block below runs backward."""
    hooks = HookLowerBlocks()
    what = {"method": "sft", **what}
    config = TrainConfig(task=toy_task, gradient_checkpointing=True, lr=1e-2, **what, **QUICK)
    result = train(config, "tiny:llama", extra_callbacks=[hooks])
    model = result.model_object.get_base_model() if what.get("lora") else result.model_object
    assert model.is_gradient_checkpointing
    trained = [p for n, p in result.model_object.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is None or torch.isfinite(p.grad).all() for p in trained)
    if not what.get("lora"):
        before = _initial_state()
        block2 = {n for n, _ in discover_layers(model).block_params(2)}
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in block2)
    else:
        assert any(p.abs().sum() > 0 for n, p in result.model_object.named_parameters() if "lora_B" in n)
    assert hooks.fired == {2, 3}  # nothing below block 2 ran backward


def test_lr_scale_survives_the_scheduler(toy_task):
    config = TrainConfig(task=toy_task, method="sft", layers="1-2", lr=1e-3, lr_scale=["2=4"], **QUICK)
    result = train(config, "tiny:llama")
    lrs = sorted({g["lr"] for g in result.trainer.optimizer.param_groups})
    assert lrs == pytest.approx([1e-3, 4e-3])


def test_lora_adapter_and_merged_copy(toy_task, tmp_path):
    config = TrainConfig(task=toy_task, method="sft", lora=True, rank=2, lora_layers="1-2",
                         merge=True, lr=1e-2, out=str(tmp_path), **QUICK)
    r = train(config, "tiny:llama")
    assert r.trainable.lora["rank_per_module"] == 4  # budget 2 x 4 blocks over 2 blocks
    adapter = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert adapter["r"] == 4
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert not any("lora" in k for k in merged)
    base = _initial_state()
    key = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(merged[key], base[key])  # the adapter was folded in
    key0 = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(merged[key0], base[key0])  # block 0 had no adapter


class Diverge(TrainerCallback):
    """Simulates a diverging run: the trained block's weights become inf before step 3."""

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            self.good = {n: p.detach().clone() for n, p in model.named_parameters()}
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))


def test_nan_loss_stops_and_keeps_the_last_good_weights(toy_task, tmp_path):
    diverge = Diverge()
    config = TrainConfig(task=toy_task, method="sft", layers="2", out=str(tmp_path), lr=1e-2,
                         **{**QUICK, "steps": 6})
    r = train(config, "tiny:llama", extra_callbacks=[diverge])
    assert r.status == "failed" and "non-finite loss" in r.failure
    assert r.steps_completed == 3 and r.last_good_step == 2
    saved = load_file(tmp_path / "model" / "model.safetensors")
    for name, good in diverge.good.items():
        if name in saved:
            assert torch.equal(saved[name], good), name
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_a_failed_save_leaves_no_complete_looking_checkpoint(toy_task, tmp_path, monkeypatch):
    def broken_save(self, path, *a, **k):
        (path / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
        (path / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", broken_save)
    config = TrainConfig(task=toy_task, method="sft", layers="2", out=str(tmp_path), **QUICK)
    with pytest.raises(LayerwiseError, match="cannot write checkpoint .*No space left on device"):
        train(config, "tiny:llama")
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".model.tmp-*"))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["status"] == "failed" and "No space left" in on_disk["failure"]


def test_save_replaces_an_older_checkpoint_atomically(tmp_path):
    loaded = load_model("tiny:llama")
    outputs.save_model_atomic(loaded.model, loaded.tokenizer, tmp_path / "model")
    outputs.save_model_atomic(loaded.model, None, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_dpo_from_a_pairs_file(toy_task, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"prompt": f"Q{i}:", "chosen": " 7\n", "rejected": " x\n"})
                               for i in range(8)) + "\n")
    config = TrainConfig(task=toy_task, method="dpo", layers="3", pairs=str(pairs), lr=1e-2, **QUICK)
    result = train(config, "tiny:llama")
    assert result.status == "completed" and result.pairs is None
    assert any("rewards/accuracies" in h for h in result.history)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q:", "chosen": " 7"}) + "\n")
    with pytest.raises(LayerwiseError, match="line 1 has no field 'rejected'"):
        train(TrainConfig(task=toy_task, method="dpo", layers="3", pairs=str(bad), **QUICK), "tiny:llama")


class Crash(TrainerCallback):
    """An error in the middle of a step (as an out-of-memory would be), after a weight change."""

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            self.good = {n: p.detach().clone() for n, p in model.named_parameters()}
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).add_(1.0)
            raise RuntimeError("CUDA out of memory (simulated)\nmore lines")


def test_an_error_mid_run_is_recorded_and_the_last_good_weights_kept(toy_task, tmp_path):
    crash = Crash()
    config = TrainConfig(task=toy_task, method="sft", layers="2", out=str(tmp_path), lr=1e-2,
                         **{**QUICK, "steps": 5})
    r = train(config, "tiny:llama", extra_callbacks=[crash])
    assert r.status == "failed" and r.failure == "RuntimeError: CUDA out of memory (simulated)"
    saved = load_file(tmp_path / "model" / "model.safetensors")
    for name, good in crash.good.items():
        if name in saved:
            assert torch.equal(saved[name], good), name


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_eval_every_draws_a_curve_without_changing_the_run(method, toy_task, tmp_path):
    """--eval-every scores the held-out items at steps N, 2N, ... (the last step is the run's own
    final score) and leaves the training exactly as it is without it: same weights bit for bit,
    even for GRPO, whose sampling shares the random state with the evaluation's."""
    common = dict(task=toy_task, method=method, layers="1,2", lr=1e-2,
                  **{**QUICK, "steps": 5, "batch_size": 8, "num_generations": 4, "eval_n": 4})
    plain = train(TrainConfig(**common), "tiny:llama")
    curved = train(TrainConfig(**common, eval_every=2, out=str(tmp_path)), "tiny:llama")
    points = [(h["step"], h["eval_score"]) for h in curved.history if "eval_score" in h]
    assert [s for s, _ in points] == [2, 4]
    assert all(0.0 <= v <= 1.0 for _, v in points)
    a, b = dict(plain.model_object.named_parameters()), dict(curved.model_object.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert plain.final.accuracy == curved.final.accuracy
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["step"] for h in on_disk["history"] if "eval_score" in h] == [2, 4]
    with pytest.raises(LayerwiseError, match="--eval-every 0: must be >= 1"):
        TrainConfig(**common, eval_every=0)
