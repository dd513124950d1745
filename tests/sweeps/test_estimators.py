"""Cheap C(k) estimators: one full run's per-block update, start-of-training gradients, metrics."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from layerwise.models import discover_layers, load_model
from layerwise.sweeps.estimators import (
    _answer_logp, _answer_pairs, _completion_logprob_loss, agreement, delta_estimates, depth_priors, gradient_estimates,
    gradient_norms, metric_seconds, probe_gains, profile_blocks, profile_estimates)
from layerwise.tasks.base import sft_examples
from layerwise.sweeps.runner import run_sweep
from layerwise.sweeps.spec import SweepSpec
from layerwise.tasks import get_task
from tests.cli.test_cli import run


def _block_grads(model, tok, blocks, pairs):
    """Per block, the gradients of the SFT loss of `pairs`, by hand."""
    model.zero_grad(set_to_none=True)
    _completion_logprob_loss(model, tok, [p for p, _ in pairs], [c for _, c in pairs],
                             [1.0] * len(pairs)).backward()
    g = [[q.grad.clone() for q in b.parameters()] for b in blocks]
    model.zero_grad(set_to_none=True)
    return g


def test_delta_of_an_unchanged_model_is_zero_and_the_base_is_restored(toy_task):
    loaded = load_model("tiny:llama")
    task = get_task(toy_task)
    same = copy.deepcopy(loaded.model)
    assert delta_estimates(loaded.model, same, loaded.tokenizer, task, 4, 0.0, 1.0) == [0.0] * 4
    # Grafting a changed block in for scoring must leave the base model exactly as it was.
    tuned = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for p in discover_layers(tuned).blocks[3].parameters():
            p.mul_(50.0)
    before = {n: p.clone() for n, p in loaded.model.named_parameters()}
    delta_estimates(loaded.model, tuned, loaded.tokenizer, task, 4, 0.0, 1.0)
    assert all(torch.equal(p, before[n]) for n, p in loaded.model.named_parameters())  # restored


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_gradient_estimates_leave_the_model_as_it_was(toy_task, method):
    loaded = load_model("tiny:llama")
    model = loaded.model
    for n, p in model.named_parameters():
        p.requires_grad_(".2." in n)
    scores = gradient_estimates(model, loaded.tokenizer, get_task(toy_task), method, n_prompts=4,
                                num_generations=4)
    assert len(scores) == 4 and all(math.isfinite(s) and s >= 0 for s in scores)
    assert any(s > 0 for s in scores)
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [".2." in n for n, _ in model.named_parameters()]


def test_adam_val_is_the_held_out_gradient_against_the_sign_of_the_training_one(toy_task):
    """adam-val_k = <v_k, sign(g_k)>, checked against two gradients computed by hand: g of the SFT
    loss on the estimate's prompts, v of the same loss on the next seed's other prompts."""
    loaded = load_model("tiny:llama")
    model, tok, task = loaded.model, loaded.tokenizer, get_task(toy_task)
    out = gradient_norms(model, tok, task, "sft", n_prompts=4, validate=True)
    blocks = discover_layers(model).blocks

    def grads(pairs):
        return _block_grads(model, tok, blocks, pairs)

    train = sft_examples(task, "train", 4, 0)
    held = [(p, c) for p, c in sft_examples(task, "train", 8, 1)
            if p not in {q for q, _ in train}][:4]
    assert held and not {p for p, _ in held} & {p for p, _ in train}
    g, v = grads(train), grads(held)
    manual = [sum(float((vi * gi.sign()).sum()) for vi, gi in zip(vb, gb)) for vb, gb in zip(v, g)]
    assert out["adam-val"] == pytest.approx(manual, rel=1e-4, abs=1e-7)
    assert out["adam-gain"] == pytest.approx([sum(float(x.abs().sum()) for x in b) for b in g],
                                             rel=1e-4)
    assert any(abs(x) > 0 for x in out["adam-val"])
    # a held-out gradient against its own sign is its l1 norm: the estimator is not a constant
    assert out["adam-val"] != pytest.approx(out["adam-gain"])


def test_adam_snr_is_the_mean_gradient_squared_over_the_root_mean_square(toy_task):
    """adam-snr_k = sum mu^2 / sqrt(s) with mu, s the mean of g and g^2 over independent batches,
    checked against the per-batch gradients computed by hand; gradient and adam-gain then use mu."""
    loaded = load_model("tiny:llama")
    model, tok, task = loaded.model, loaded.tokenizer, get_task(toy_task)
    out = gradient_norms(model, tok, task, "sft", n_prompts=3, batches=3)
    blocks = discover_layers(model).blocks

    def grads(pairs):
        return _block_grads(model, tok, blocks, pairs)

    per_batch = [grads(sft_examples(task, "train", 3, 7919 * b)) for b in range(3)]
    assert {p for p, _ in sft_examples(task, "train", 3, 0)} != \
        {p for p, _ in sft_examples(task, "train", 3, 7919)}  # the batches differ
    mu = [[sum(pb[k][i] for pb in per_batch) / 3 for i in range(len(per_batch[0][k]))]
          for k in range(len(blocks))]
    s = [[sum(pb[k][i] ** 2 for pb in per_batch) / 3 for i in range(len(per_batch[0][k]))]
         for k in range(len(blocks))]
    snr = [sum(float((m ** 2 / v.sqrt().clamp_min(1e-30)).sum()) for m, v in zip(mb, sb))
           for mb, sb in zip(mu, s)]
    assert out["adam-snr"] == pytest.approx(snr, rel=1e-4)
    assert out["adam-gain"] == pytest.approx([sum(float(m.abs().sum()) for m in b) for b in mu],
                                             rel=1e-4)
    # noise counts for less than in |mu|: mu^2/sqrt(s) <= |mu| entry by entry (|mu| <= sqrt(s))
    assert all(a <= g * (1 + 1e-6) for a, g in zip(out["adam-snr"], out["adam-gain"]))
    assert out["adam-snr"] != pytest.approx(out["adam-gain"])
    # one batch: no adam-snr, and the other estimators are those of that batch alone
    one = gradient_norms(model, tok, task, "sft", n_prompts=3)
    assert "adam-snr" not in one
    assert one["gradient"] == pytest.approx(
        [sum(float(g.pow(2).sum()) for g in b) for b in per_batch[0]], rel=1e-4)
    with pytest.raises(ValueError, match="batches"):
        gradient_norms(model, tok, task, "sft", n_prompts=3, batches=0)


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_probe_is_a_short_single_block_run_from_the_cached_prefix(toy_task, method):
    """probe_k = held-out loss before - after 3 AdamW steps on block k alone, checked against a
    by-hand run of those steps on a copy of the model through its full forward (no cached
    prefix); the model comes back bit for bit, and forcing full forwards gives the same values."""
    loaded = load_model("tiny:llama")
    model, tok, task = loaded.model, loaded.tokenizer, get_task(toy_task)
    before = {n: p.clone() for n, p in model.named_parameters()}
    flags = [p.requires_grad for p in model.parameters()]
    info: dict = {}
    probe = probe_gains(model, tok, task, method, lr=1e-2, steps=3, n_prompts=4, num_generations=4,
                        seed=3, info=info)
    assert info["prefix_cache"] is True  # llama takes the block input as inputs_embeds
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    slow = probe_gains(model, tok, task, method, lr=1e-2, steps=3, n_prompts=4, num_generations=4,
                       seed=3, share_prefix=False)
    assert probe == pytest.approx(slow, rel=1e-4, abs=1e-6)
    assert len(probe) == 4 and any(abs(v) > 1e-4 for v in probe)
    # by hand, for block 2: the same training batch (the gradient's draw with seed 3: for GRPO
    # the model's own samples weighted by group-normalised rewards), the next seed's held-out pairs
    from layerwise.sweeps.estimators import _objective_batch
    torch.manual_seed(3)
    prompts, completions, weights = _objective_batch(model, tok, task, method, 4, 4, None, 1.0, 3)
    held = [(p, c) for p, c in sft_examples(task, "train", 8, 4) if p not in set(prompts)][:4]
    copy_ = copy.deepcopy(model)
    for p in copy_.parameters():
        p.requires_grad_(False)
    block = list(discover_layers(copy_).blocks[2].parameters())
    for p in block:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(block, lr=1e-2, weight_decay=0.0)

    @torch.no_grad()
    def held_loss():
        return float(_completion_logprob_loss(copy_, tok, [p for p, _ in held],
                                              [c for _, c in held], [1.0] * len(held)))

    start = held_loss()
    for _ in range(3):
        opt.zero_grad()
        _completion_logprob_loss(copy_, tok, prompts, completions, weights).backward()
        opt.step()
    assert probe[2] == pytest.approx(start - held_loss(), rel=1e-3, abs=1e-5)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        probe_gains(model, tok, task, method, lr=1e-2, steps=0)


def test_agreement_is_spearman_against_the_measured_contribution():
    rows = agreement({"a": [1, 2, 3, 4], "b": [4, 3, 2, 1], "metric:x": [None, 1, 2, 3]},
                     {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}, {"a": 10.0, "metric": 1.0}, 100.0)
    by = {r["estimator"]: r for r in rows}
    assert by["a"]["spearman"] == pytest.approx(1.0) and by["a"]["cost_vs_sweep"] == 0.1
    assert by["b"]["spearman"] == pytest.approx(-1.0) and by["b"]["cost_vs_sweep"] is None
    assert by["metric:x"]["blocks"] == 3 and by["metric:x"]["cost_vs_sweep"] == 0.01


def test_a_metric_costs_its_own_diagnostics_seconds_not_the_whole_run():
    diag = {"seconds": 100.0, "metrics": {
        "removal": {"seconds": 60.0, "fields": {"removal_perplexity": [], "removal_delta_pct": []}},
        "snr": {"seconds": 2.0, "fields": {"snr": []}},
        "broken": {"fields": {"x": []}}}}  # no seconds recorded: falls back to the whole run
    seconds = metric_seconds(diag)
    assert seconds == {"metric:removal_perplexity": 60.0, "metric:removal_delta_pct": 60.0,
                       "metric:snr": 2.0, "metric": 100.0}
    rows = agreement({"metric:snr": [1, 2], "metric:removal_delta_pct": [2, 1], "metric:x": [1, 2]},
                     {0: 0.1, 1: 0.2}, seconds, 1000.0, run_seconds=4.0)
    by = {r["estimator"]: r for r in rows}
    assert by["metric:snr"]["cost_in_runs"] == 0.5
    assert by["metric:removal_delta_pct"]["cost_in_runs"] == 15.0
    assert by["metric:x"]["cost_in_runs"] == 25.0


def test_profile_blocks_spread_over_depth():
    assert profile_blocks(30, 5) == [0, 7, 14, 22, 29]
    assert profile_blocks(4, 5) == [0, 1, 2, 3] and profile_blocks(4, 2) == [0, 3]
    with pytest.raises(ValueError, match="at least 2 blocks"):
        profile_blocks(30, 1)


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_profile_trains_real_runs_and_interpolates_over_depth(toy_task, method):
    loaded = load_model("tiny:llama")
    before = {n: p.clone() for n, p in loaded.model.named_parameters()}
    template = {"task": toy_task, "method": method, "lr": 3e-3, "batch_size": 4, "n_train": 8,
                "num_generations": 2, "steps": 12}
    info, seconds = {}, {}
    ests = profile_estimates(loaded, template, probes=2, steps=4, seed=1, model="tiny:llama",
                             answer_prompts=6, seconds=seconds, info=info)
    assert set(ests) == {"profile", "profile:logp"}
    assert info["blocks"] == [0, 3] and info["seed"] == 101 and info["steps"] == 4
    assert info["signal"] == ("loss" if method == "sft" else "reward")
    a, b = info["scores"]
    est = ests["profile"]
    assert est == pytest.approx([a, a + (b - a) / 3, a + 2 * (b - a) / 3, b])  # linear in depth
    # profile:logp: each run's gain in answer log-likelihood, recomputed here from the base model
    pairs = _answer_pairs(get_task(toy_task), 6, 102)
    assert info["answer_prompts"] == len(pairs) > 0
    assert info["base_answer_logp"] == pytest.approx(
        _answer_logp(loaded.model, loaded.tokenizer, pairs), rel=1e-5)
    ga, gb = info["answer_logp_gains"]
    assert ga != 0 and gb != 0 and ga != gb  # both runs moved the answers' likelihood, differently
    assert ests["profile:logp"] == pytest.approx([ga, ga + (gb - ga) / 3, ga + 2 * (gb - ga) / 3, gb])
    assert seconds["profile:logp"] == seconds["profile"]
    if method == "sft":
        assert a < 0 and b < 0 and a != b  # minus two different runs' training losses
    assert seconds["profile"] > 0
    # each run's median step time, to put the profile's cost in runs at the machine's speed
    assert len(info["step_seconds"]) == 2 and all(0 < t < seconds["profile"]
                                                  for t in info["step_seconds"])
    # the runs trained copies: the model the estimate was handed is untouched
    assert all(torch.equal(p, before[n]) for n, p in loaded.model.named_parameters())
    with pytest.raises(ValueError, match="at least 2 steps"):
        profile_estimates(loaded, template, probes=2, steps=1)


def test_answer_logp_is_the_mean_token_log_likelihood_of_each_answer():
    loaded = load_model("tiny:llama")
    tok = loaded.tokenizer
    pairs = [("1+2=", "3"), ("what is seven plus one? ", "8, of course"), ("x", "yz w")]
    got = _answer_logp(loaded.model, tok, pairs, batch_size=2)  # padded batches of 2 and 1
    by_hand = []
    with torch.no_grad():
        for prompt, answer in pairs:
            p_ids = tok(prompt)["input_ids"]
            ids = torch.tensor([p_ids + tok(answer, add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0, :-1].float(), -1)
            token = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)[len(p_ids) - 1:]
            by_hand.append(token.mean().item())
    assert got == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-4)
    for mode in (True, False):  # scored in eval mode, the caller's mode restored
        loaded.model.train(mode)
        assert _answer_logp(loaded.model, tok, pairs) == pytest.approx(got, rel=1e-4)
        assert loaded.model.training is mode


def test_depth_priors_rank_by_depth_alone():
    priors = depth_priors(5)
    assert priors["prior:shallow"] == [0.0, -1.0, -2.0, -3.0, -4.0]
    assert priors["prior:mid"] == [-2.0, -1.0, 0.0, -1.0, -2.0]
    # an even depth: the two middle blocks tie (agreement and tune break ties to the deeper one)
    rows = agreement(depth_priors(4), {0: 0.2, 1: 0.9, 2: 0.5, 3: 0.1}, {"prior": 0.0}, 10.0, 1.0)
    by = {r["estimator"]: r for r in rows}
    assert by["prior:mid"]["top1_regret"] == pytest.approx(0.4)  # ranks block 2 first
    assert by["prior:shallow"]["top1_regret"] == pytest.approx(0.7)
    assert by["prior:shallow"]["spearman"] == pytest.approx(0.4)
    assert by["prior:mid"]["cost_in_runs"] == 0.0
    with pytest.raises(ValueError, match="num_blocks must be >= 1"):
        depth_priors(0)


def test_estimate_command_on_a_real_sweep(toy_task, tmp_path, capsys):
    train = {"steps": 12, "lr": 3e-3, "batch_size": 8, "n_train": 16, "eval_n": 6,
             "general_seqs": 1, "general_seq_len": 32}
    sweep = SweepSpec(model="tiny:llama", task=toy_task, method="sft", layers="each", train=train)
    from layerwise.sweeps.outputs import write_sweep_outputs

    write_sweep_outputs(sweep, run_sweep(sweep, tmp_path), tmp_path)
    assert (tmp_path / "full-seed0" / "model" / "model.safetensors").is_file()
    code, out, err = run(capsys, "estimate", str(tmp_path), "-q", "--gradient-prompts", "4")
    assert code == 0, err
    doc = json.loads((tmp_path / "estimators.json").read_text())
    names = {r["estimator"] for r in doc["rows"]}
    assert names == {"delta", "gradient", "adam-gain", "adam-val", "adam-snr", "probe",
                     "profile", "profile:logp", "prior:mid", "prior:shallow"}
    assert doc["estimates"]["profile:logp"] == pytest.approx(doc["profile"]["answer_logp_gains"])
    assert doc["profile"]["answer_prompts"] > 0
    # the profile: real single-block runs of 12 // (5 + 1) = 2 steps at blocks spread over depth
    assert doc["profile"]["blocks"] == [0, 1, 2, 3] and doc["profile"]["steps"] == 2
    assert doc["estimates"]["profile"] == pytest.approx(doc["profile"]["scores"])
    assert all(v < 0 for v in doc["profile"]["scores"])  # minus a training loss
    assert doc["estimates"]["prior:shallow"] == [0.0, -1.0, -2.0, -3.0]  # depth alone, 4 blocks
    assert doc["gradient_batches"] == 4 and doc["probe_steps"] == 4
    assert doc["probe_prefix_cache"] is True and len(doc["estimates"]["probe"]) == 4
    # another gradient seed draws other prompts: other values, same estimators
    code, out, err = run(capsys, "estimate", str(tmp_path), "-q", "--gradient-prompts", "4",
                         "--gradient-seed", "5", "--probe-steps", "0", "--no-delta",
                         "--out", str(tmp_path / "seed5.json"))
    assert code == 0, err
    seed5 = json.loads((tmp_path / "seed5.json").read_text())
    assert {r["estimator"] for r in seed5["rows"]} == names - {"delta", "probe"}
    assert seed5["profile"]["seed"] == 105 and seed5["profile"]["scores"] != doc["profile"]["scores"]
    assert seed5["gradient_seed"] == 5 and seed5["estimates"]["gradient"] != doc["estimates"]["gradient"]
    assert len(doc["estimates"]["delta"]) == 4 and doc["sweep_seconds"] > 0
    measuring = [r for r in doc["rows"] if not r["estimator"].startswith("prior:")]
    assert all(r["cost_vs_sweep"] is not None and r["cost_vs_sweep"] > 0 for r in measuring)
    assert doc["single_block_run_seconds"] > 0 and all(r["cost_in_runs"] > 0 for r in measuring)
    assert all(r["cost_in_runs"] == 0.0 for r in doc["rows"] if r not in measuring)
    measured = {int(k): v for k, v in doc["measured"].items()}
    for r in doc["rows"]:  # top-1 regret: the best block's C minus that of the one ranked first
        ranked = doc["estimates"][r["estimator"]]
        first = max(range(4), key=lambda b: ranked[b])
        assert r["top1_regret"] == pytest.approx(max(measured.values()) - measured[first])
        assert r["top1_regret"] >= 0
    # diagnostics of another model are refused before anything is computed
    from tests.cli.test_cli import _one_line_error

    other = tmp_path / "other"
    code, _, err = run(capsys, "diagnose", "--model", "tiny:llama:layers=6", "--metrics", "angular",
                       "--num-seqs", "2", "--seq-len", "16", "--out", str(other), "-q", "--no-progress")
    assert code == 0, err
    code, out, err = run(capsys, "estimate", str(tmp_path), "--diagnostics",
                         str(other / "diagnostics.json"), "--no-delta", "--no-gradient", "-q")
    _one_line_error(code, out, err, r"is of a 6-block model; the sweep .* is of tiny:llama.*4 blocks")
    doc = json.loads((tmp_path / "contribution.json").read_text())
    assert doc["identity"]["num_blocks"] == 4 and doc["identity"]["structure"]
    assert seed5["sweep_partial"] is False
    # the outputs an interrupted sweep writes (marked partial): estimate says so
    from layerwise.sweeps.outputs import write_partial_outputs

    assert write_partial_outputs(sweep, tmp_path) == 6
    code, out, err = run(capsys, "estimate", str(tmp_path), "--no-delta", "--probe-steps", "0",
                         "--gradient-batches", "1", "--gradient-prompts", "4", "-q",
                         "--out", str(tmp_path / "partial.json"))
    assert code == 0, err
    assert "note: against 4 measured blocks; the sweep's partial: 6 completed runs" in out
    assert json.loads((tmp_path / "partial.json").read_text())["sweep_partial"] is True
