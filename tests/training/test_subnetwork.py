"""Subnetwork-only training: masked entries stay bit-identical, even with weight decay."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.training.config import TrainConfig
from layerwise.training.runner import train


def test_masked_entries_never_move(toy_task, tmp_path):
    loaded = load_model("tiny:llama")
    loaded.model.save_pretrained(tmp_path / "base")
    loaded.tokenizer.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        loaded.model.model.layers[2].self_attn.q_proj.weight[:10] += 0.01  # 10 rows "changed"
        loaded.model.model.layers[3].mlp.down_proj.weight[:, :3] += 0.01
    loaded.model.save_pretrained(tmp_path / "tuned")
    config = TrainConfig(task=toy_task, method="sft", full=True, lr=1e-2, weight_decay=0.1,
                         steps=4, batch_size=4, n_train=8, eval_n=2, general_seqs=1,
                         general_seq_len=32, progress=False, out=str(tmp_path / "run"),
                         mask_from=f"{tmp_path / 'base'},{tmp_path / 'tuned'}")
    m = train(config, str(tmp_path / "base")).to_dict()
    assert m["status"] == "completed"
    base = load_file(tmp_path / "base" / "model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    q = "model.layers.2.self_attn.q_proj.weight"
    d = "model.layers.3.mlp.down_proj.weight"
    for name, t in base.items():
        if name not in (q, d):
            assert torch.equal(after[name], t), name  # bit-identical, despite weight decay
    assert torch.equal(after[q][10:], base[q][10:]) and not torch.equal(after[q][:10], base[q][:10])
    assert torch.equal(after[d][:, 3:], base[d][:, 3:]) and not torch.equal(after[d][:, :3], base[d][:, :3])
    n = sum(t.numel() for t in base.values())
    assert m["subnetwork"]["trainable_share_kept"] == pytest.approx((10 * 64 + 64 * 3) / n)
    # closeness to TUNED, recomputed here from the two checkpoints
    tuned = load_file(tmp_path / "tuned" / "model.safetensors")
    sub = m["subnetwork"]
    for tol in ("1e-05", "0.0001"):
        same = sum(int(((after[k].float() - tuned[k].float()).abs() <= float(tol)).sum()) for k in tuned)
        inside = sum(int(((after[k][:10] - tuned[k][:10]).abs() <= float(tol)).sum()) for k in (q,)) + \
            sum(int(((after[d][:, :3] - tuned[d][:, :3]).abs() <= float(tol)).sum()) for _ in (d,))
        assert sub["identical_share"][tol] == pytest.approx(same / n)
        assert sub["identical_share_in_mask"][tol] == pytest.approx(inside / (10 * 64 + 64 * 3))
    # outside the mask the run equals BASE and TUNED alike; inside it, lr 1e-2 moved it away
    assert sub["identical_share"]["1e-05"] >= 1 - (10 * 64 + 64 * 3) / n
    assert sub["identical_share_in_mask"]["1e-05"] < 0.5
    assert sub["mask_entries"] == 10 * 64 + 64 * 3 and sub["reference_accuracy"] is None


def test_mask_from_bad_input(toy_task, tmp_path):
    with pytest.raises(LayerwiseError, match="expected BASE,TUNED"):
        train(TrainConfig(task=toy_task, full=True, steps=1, eval_n=1, mask_from="only-one",
                          progress=False), "tiny:llama")
    with pytest.raises(LayerwiseError, match="--mask-from masks full-parameter training"):
        TrainConfig(lora=True, mask_from="a,b")
