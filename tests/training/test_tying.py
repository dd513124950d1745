"""Layer tying (--tying): true sharing, gradients, untying, counts, export, policies, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.models.arch import discover_layers
from layerwise.models.tiny import TINY_FAMILIES
from layerwise.models.tying import (TiedBlocks, check_map, count_parameters, detect_sources,
                                    read_tying_file, save_tied)
from layerwise.training.config import TrainConfig
from layerwise.training.runner import train
from layerwise.training.tying import parse_tying, static_sources
from tests.cli.test_cli import _one_line_error, run

LM = dict(task="lm", method="sft", full=True, batch_size=4, n_train=64, eval_n=4, eval_batch_size=4,
          general_seqs=1, general_seq_len=32, progress=False, lr=1e-3, max_length=64,
          task_options={"seq_len": 32})


def _tiny(family="llama", seed=0):
    loaded = load_model(f"tiny:{family}", seed=seed)
    return loaded.model, discover_layers(loaded.model)


def _block(layers, i):
    return dict(layers.blocks[i].named_parameters())


def _loss(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=g)
    return model(input_ids=ids, labels=ids).loss


# ---- the mechanism -------------------------------------------------------------------------
def test_tied_positions_hold_one_tensor_before_and_after_optimizer_steps():
    model, layers = _tiny()
    start = {n: p.detach().clone() for n, p in _block(layers, 1).items()}
    tied = TiedBlocks(model, layers.blocks)
    tied.tie(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tied.bind_optimizer(opt)
    assert all(_block(layers, 2)[n] is p for n, p in _block(layers, 1).items())
    assert sum(1 for g in opt.param_groups for p in g["params"]
               if any(p is q for q in _block(layers, 1).values())) == len(start)  # held once
    for step in range(3):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    for n, p in _block(layers, 1).items():
        assert _block(layers, 2)[n] is p
        assert torch.equal(_block(layers, 2)[n], p)
        assert not torch.equal(p, start[n])  # they trained


def test_the_shared_gradient_is_the_sum_of_both_positions_gradients():
    untied, ul = _tiny()
    tied_model, tl = _tiny()
    with torch.no_grad():  # the untied model gets block 1's weights in block 2 too
        for n, p in _block(ul, 2).items():
            p.copy_(_block(ul, 1)[n])
    TiedBlocks(tied_model, tl.blocks).tie(2, 1)
    with torch.no_grad():
        for (n, p), q in zip(untied.state_dict().items(), tied_model.state_dict().values()):
            assert torch.equal(p, q), n
    _loss(untied).backward()
    _loss(tied_model).backward()
    for n, p in _block(tl, 1).items():
        manual = _block(ul, 1)[n].grad + _block(ul, 2)[n].grad
        assert torch.allclose(p.grad, manual, atol=1e-6, rtol=1e-5), n
        assert not torch.allclose(p.grad, _block(ul, 1)[n].grad, atol=1e-6)  # both positions count


def test_untie_clones_the_weights_and_carries_the_optimizer_state():
    model, layers = _tiny()
    tied = TiedBlocks(model, layers.blocks)
    tied.tie(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tied.bind_optimizer(opt)
    for step in range(2):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    shared = dict(_block(layers, 1))
    before = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in shared.items()}
    tied.untie(3)
    own = _block(layers, 3)
    for n, p in own.items():
        assert p is not shared[n] and p.data_ptr() != shared[n].data_ptr()
        assert torch.equal(p, shared[n])
        st = opt.state[p]
        assert set(st) == set(before[n])
        for k, v in before[n].items():
            assert torch.equal(st[k], v)
            assert st[k] is not opt.state[shared[n]][k]
    assert tied.sources == [0, 1, 2, 3]
    opt.zero_grad()
    _loss(model, 5).backward()
    opt.step()
    for n, p in own.items():  # they now train apart, each from the carried state
        assert float(opt.state[p]["step"]) == 3.0
        assert not torch.equal(p, shared[n])


def test_tying_a_block_whose_weights_others_share_moves_them_along():
    model, layers = _tiny()
    tied = TiedBlocks(model, layers.blocks)
    tied.tie(3, 2)
    tied.tie(2, 1)
    assert tied.sources == [0, 1, 1, 1]
    assert detect_sources(layers.blocks) == (0, 1, 1, 1)
    tied.apply([0, 0, 2, 2])
    assert detect_sources(layers.blocks) == (0, 0, 2, 2)


def test_the_faithful_alias_fault_double_updates_the_shared_storage():
    """The official code's untie keeps the storage shared: both objects step, the tensor moves twice."""
    lr = 1e-2
    moved = {}
    for alias in (False, True):
        model, layers = _tiny()
        tied = TiedBlocks(model, layers.blocks, alias=alias)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # every object, as there
        tied.bind_optimizer(opt)
        tied.tie(2, 1)
        tied.untie(2)
        p1 = layers.blocks[1].mlp.down_proj.weight
        p2 = layers.blocks[2].mlp.down_proj.weight
        assert (p1.data_ptr() == p2.data_ptr()) == alias
        assert (tied.shared_storage_pairs() > 0) == alias
        start = p1.detach().clone()
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
        moved[alias] = float((p1.detach() - start).abs().max())
    assert moved[False] <= lr * 1.01  # Adam's first step moves an entry by at most lr
    assert moved[True] > lr * 1.5  # two updates of the same storage


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_counts_for_every_tiny_family(family):
    model, layers = _tiny(family)
    untied = count_parameters(model)
    assert untied.total == untied.unique == sum(p.numel() for p in model.parameters())
    per_block = sum(p.numel() for p in layers.blocks[1].parameters())
    tied = TiedBlocks(model, layers.blocks)
    tied.apply(static_sources(parse_tying("static:all"), layers.num_blocks))
    c = count_parameters(model)
    assert c.total == untied.total
    assert c.unique == untied.unique - (layers.num_blocks - 1) * per_block
    assert c.unique == sum(p.numel() for p in model.parameters())  # what torch sees, deduplicated
    assert c.trainable == c.unique
    _loss(model).backward()  # the tied model still runs forward and backward


def test_static_schemes():
    n = 6
    assert static_sources(parse_tying("static:all"), n) == (0,) * 6
    assert static_sources(parse_tying("static:pairs"), n) == (0, 0, 2, 2, 4, 4)
    assert static_sources(parse_tying("static:cycle:2"), n) == (0, 1, 0, 1, 0, 1)
    assert static_sources(parse_tying("static:mirror"), n) == (0, 1, 2, 2, 1, 0)
    assert static_sources(parse_tying("static:mirror"), 5) == (0, 1, 2, 1, 0)


def test_maps_are_checked():
    assert check_map([0, 0, 1, 1], 4) == (0, 0, 0, 0)  # rooted
    with pytest.raises(LayerwiseError, match="earlier block"):
        check_map([0, 2, 2, 3], 4)
    with pytest.raises(LayerwiseError, match="6 entries; the model has 4"):
        check_map([0] * 6, 4)
    model, layers = _tiny()
    with pytest.raises(LayerwiseError, match="only to an earlier block"):
        TiedBlocks(model, layers.blocks).tie(2, 2)
    with pytest.raises(LayerwiseError, match="only to an earlier block"):
        TiedBlocks(model, layers.blocks).tie(1, 3)


# ---- on disk -------------------------------------------------------------------------------
def _logits(model):
    ids = torch.arange(20).reshape(2, 10) % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_export_full_loads_in_plain_transformers_and_compact_in_layerwise(tmp_path, family):
    loaded = load_model(f"tiny:{family}", seed=1)
    model, layers = loaded.model, discover_layers(loaded.model)
    TiedBlocks(model, layers.blocks).apply([0, 0, 2, 0])
    expect = _logits(model)
    save_tied(model, loaded.tokenizer, tmp_path / "full", [0, 0, 2, 0])
    save_tied(model, loaded.tokenizer, tmp_path / "compact", [0, 0, 2, 0], compact=True)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    assert torch.allclose(_logits(plain), expect, atol=1e-5)
    assert detect_sources(discover_layers(plain).blocks) == (0, 1, 2, 3)  # plain: sharing lost
    for form in ("full", "compact"):
        back = load_model(str(tmp_path / form)).model
        assert torch.allclose(_logits(back), expect, atol=1e-5), form
        assert detect_sources(discover_layers(back).blocks) == (0, 0, 2, 0), form
    full_bytes = (tmp_path / "full" / "model.safetensors").stat().st_size
    compact_bytes = (tmp_path / "compact" / "tied.safetensors").stat().st_size
    assert compact_bytes < full_bytes
    with pytest.raises(OSError):  # plain transformers refuses the compact form (no weights)
        AutoModelForCausalLM.from_pretrained(tmp_path / "compact")
    from layerwise.analysis.checkpoints import Checkpoint

    full, compact = Checkpoint(tmp_path / "full"), Checkpoint(tmp_path / "compact")
    assert set(full.names) <= set(compact.names) | {"lm_head.weight"}
    name = f"{layers.blocks_path}.3.mlp.{'c_fc' if family == 'gpt2' else 'up_proj'}.weight"
    assert torch.equal(full.tensor(name), compact.tensor(name))


def test_a_tying_file_from_another_model_is_refused(tmp_path):
    f = tmp_path / "tying.json"
    f.write_text(json.dumps({"num_blocks": 30, "sources": list(range(30))}))
    with pytest.raises(LayerwiseError, match="30-block model; this model has 4"):
        read_tying_file(f, 4)


# ---- training runs -------------------------------------------------------------------------
def test_a_static_run_trains_tied_and_saves_a_plain_checkpoint(tmp_path):
    out = tmp_path / "pairs"
    result = train(TrainConfig(steps=3, tying="static:pairs", out=str(out), **LM), "tiny:llama")
    assert result.ok, result.failure
    layers = discover_layers(result.model_object)
    assert detect_sources(layers.blocks) == (0, 0, 2, 2)
    t = result.tying
    assert t["final"] == [0, 0, 2, 2] and t["counts_end"]["unique"] < t["untied_counts"]["unique"]
    per_block = sum(p.numel() for p in layers.blocks[0].parameters())
    assert t["untied_counts"]["unique"] - t["counts_end"]["unique"] == 2 * per_block
    assert result.trainable.params == t["counts_end"]["trainable"]
    plain = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    assert torch.allclose(_logits(plain), _logits(result.model_object.eval()), atol=1e-5)
    assert json.loads((out / "model" / "tying.json").read_text())["sources"] == [0, 0, 2, 2]
    assert (out / "tying.png").is_file() and (out / "tying.json").is_file()


@pytest.mark.parametrize("policy", ["dqn", "dqn:faithful", "dqn-gain", "random"])
def test_dynamic_policies_decide_every_k_steps_and_the_model_follows(tmp_path, policy):
    cfg = TrainConfig(steps=6, tying=policy, tie_every=2, seed=3, out=str(tmp_path / "r"), **LM)
    result = train(cfg, "tiny:llama")
    assert result.ok, result.failure
    hist = result.tying["history"]
    assert [h["step"] for h in hist] == [2, 4, 6] and [h["block"] for h in hist] == [1, 2, 3]
    for h in hist:
        assert 0 <= h["action"] <= h["block"] and h["own"] == (h["action"] == h["block"])
    if "faithful" not in policy:  # the model's sharing is the recorded map
        assert list(detect_sources(discover_layers(result.model_object).blocks)) == result.tying["final"]
    if policy == "dqn:faithful":
        assert all(h["reward"] == -10.0 for h in hist)  # the clipped reward saturates early on
    if policy == "dqn":  # seeded: the same decisions again
        again = train(TrainConfig(steps=6, tying=policy, tie_every=2, seed=3, out=str(tmp_path / "s"),
                                  **LM), "tiny:llama")
        assert [h["action"] for h in again.tying["history"]] == [h["action"] for h in hist]


def test_a_discovered_map_retrains_from_scratch(tmp_path):
    first = train(TrainConfig(steps=4, tying="dqn", tie_every=1, seed=1, out=str(tmp_path / "a"),
                              **LM), "tiny:llama")
    found = first.tying["final"]
    again = train(TrainConfig(steps=2, tying=f"static:map:{tmp_path / 'a' / 'tying.json'}",
                              out=str(tmp_path / "b"), **LM), "tiny:llama")
    assert again.tying["start"] == found == again.tying["final"]


# ---- bad input: one line, exit 2, before any model is loaded ----------------------------------
@pytest.mark.parametrize("extra, pattern", [
    (["--tying", "static:cycle:9"], r"K must be in 1\.\.4"),
    (["--tying", "static:bands"], r"unknown static scheme 'bands'"),
    (["--tying", "dqn:wrong"], r"unknown fault 'wrong'"),
    (["--tying", "dqn", "--tie-every", "0"], r"--tie-every 0: must be >= 1"),
    (["--tying", "static:all", "--tie-every", "2"], r"--tie-every applies to dynamic tying"),
    (["--tying", "static:map:/nowhere.json"], r"tying map /nowhere.json does not exist"),
    (["--tying", "teleport"], r"unknown policy"),
])
def test_bad_tying_input_is_one_line(capsys, extra, pattern):
    code, out, err = run(capsys, "train", "--model", "tiny:llama", "--task", "lm", "--full",
                         "--steps", "2", "-q", *extra)
    _one_line_error(code, out, err, pattern)


def test_tying_with_lora_and_bad_maps_are_refused(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--model", "tiny:llama", "--lora", "--tying", "static:all")
    _one_line_error(code, out, err, r"--tying 'static:all' with --lora")
    for sources, pattern in (([0, 2, 2, 3], "only share the weights of an earlier block"),
                             (list(range(12)), "has 12 entries; the model has 4")):
        f = tmp_path / "m.json"
        f.write_text(json.dumps({"sources": sources}))
        code, out, err = run(capsys, "train", "--model", "tiny:llama", "--task", "lm", "--full",
                             "--steps", "2", "--tying", f"static:map:{f}")
        _one_line_error(code, out, err, pattern)


def test_a_dynamic_tying_run_resumes_as_if_never_stopped(tmp_path, policy="dqn-gain"):
    from tests.training.test_resume import SignalAt

    from layerwise.training.runner import resume

    cfg = dict(steps=6, tying=policy, tie_every=1, seed=2, **LM)
    whole = train(TrainConfig(out=str(tmp_path / "whole"), **cfg), "tiny:llama")
    cut = train(TrainConfig(out=str(tmp_path / "cut"), save_every=2, **cfg), "tiny:llama",
                extra_callbacks=[SignalAt(3)])
    assert cut.status == "interrupted" and cut.steps_completed == 4
    ckpt = tmp_path / "cut" / "checkpoints" / "checkpoint-4"
    assert (ckpt / "tying.json").is_file() and (ckpt / "tying_agent.json").is_file()
    done = resume(str(tmp_path / "cut"), quiet=True)
    assert done.status == "completed" and done.resumed_from_step == 4
    key = lambda r: [(h["step"], h["block"], h["action"]) for h in r.tying["history"]]  # noqa: E731
    assert key(done) == key(whole)
    assert done.tying["final"] == whole.tying["final"]
    for a, b in zip(done.tying["history"], whole.tying["history"]):
        assert a["reward"] == pytest.approx(b["reward"], rel=1e-4, abs=1e-5)
    wa = AutoModelForCausalLM.from_pretrained(tmp_path / "whole" / "model").state_dict()
    wb = AutoModelForCausalLM.from_pretrained(tmp_path / "cut" / "model").state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
