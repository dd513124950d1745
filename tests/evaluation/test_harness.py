"""lm-evaluation-harness on a tiny model in memory: the shipped local tasks, offline, with the
model, tokenizer and RNGs left as found, and the early checks that refuse bad task names."""

from __future__ import annotations

import copy
import json
import math
import random
import socket
import sys

import numpy as np
import pytest
import torch

from layerwise.errors import LayerwiseError
from layerwise.evaluation.harness import (
    HarnessResult,
    check_lm_eval,
    parse_lm_eval_tasks,
    run_lm_eval,
    wikitext_task,
)
from layerwise.evaluation.lm_eval_tasks import loaders
from layerwise.models import load_model
from tests.conftest import SHARED_DATA, shared_file

MC, GEN, WIKI = "layerwise_arith_mc", "layerwise_arith_gen", "layerwise_wikitext_local"
LIMIT = 5


def _no_network(*args, **kwargs):
    raise AssertionError("lm-eval tried to open a network connection")


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny:llama", seed=0)


@pytest.fixture(scope="module")
def include(tmp_path_factory):
    """One include folder for the whole module (lm-eval's task index is built once per folder):
    the WikiText task over the shared file, and a task whose text file has been deleted."""
    folder = tmp_path_factory.mktemp("lm_eval_include")
    wikitext = SHARED_DATA / "wikitext2_test.txt"
    if wikitext.is_file():
        wikitext_task(wikitext, folder)
    gone = folder / "gone.txt"
    gone.write_text(" = A = \n a \n")
    wikitext_task(gone, folder, name="layerwise_wikitext_gone")
    gone.unlink()
    return str(folder)


@pytest.fixture(scope="module")
def arith(tiny, include):
    """MC + generation at LIMIT items from a model in train mode (one block in eval mode), with
    sockets closed; what the model, tokenizer and RNGs were before and after."""
    model = tiny.model
    model.train()
    model.model.layers[0].eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    rng = random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _no_network)
    try:
        result = run_lm_eval(model, tiny.tokenizer, [MC, GEN], limit=LIMIT, include=include)
    finally:
        mp.undo()
    return dict(result=result, before=before, modes=modes, rng=rng)


def test_parse_lm_eval_tasks():
    assert parse_lm_eval_tasks(" a, b ,a,,c ") == ["a", "b", "c"]
    with pytest.raises(LayerwiseError, match="no lm-eval task names"):
        parse_lm_eval_tasks(" , ")


def test_mc_and_generation_metrics(arith):
    result = arith["result"]
    assert isinstance(result, HarnessResult) and result.tasks == [MC, GEN]
    assert set(result.metrics[MC]) == {"acc", "acc_norm"}
    assert result.keys[MC] == {"acc": "acc,none", "acc_norm": "acc_norm,none"}
    assert result.keys[GEN] == {"exact_match": "exact_match,first-number"}
    for task in (MC, GEN):
        assert all(0.0 <= v <= 1.0 for v in result.metrics[task].values())
        assert set(result.stderr[task]) == set(result.metrics[task])
    assert result.n_samples == {MC: LIMIT, GEN: LIMIT}
    assert result.headline() == {
        MC: ("acc", result.metrics[MC]["acc"], True),
        GEN: ("exact_match", result.metrics[GEN]["exact_match"], True),
    }
    assert result.seconds > 0


def test_model_rngs_and_modes_left_as_found(arith, tiny):
    model = tiny.model
    for name, param in model.named_parameters():
        assert torch.equal(param, arith["before"][name]), name
    assert {name: m.training for name, m in model.named_modules()} == arith["modes"]
    assert model.training and not model.model.layers[0].training
    assert random.getstate() == arith["rng"][0]
    assert np.array_equal(np.random.get_state()[1], arith["rng"][1])
    assert torch.equal(torch.random.get_rng_state(), arith["rng"][2])


def test_same_numbers_twice(arith, tiny, include):
    again = run_lm_eval(tiny.model, tiny.tokenizer, [MC, GEN], limit=LIMIT, include=include)
    first = arith["result"].to_dict()
    second = again.to_dict()
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_accuracy_is_this_models(tiny, include):
    """lm-eval's acc equals the share of items where this model finds the right choice likeliest."""
    model, tokenizer = tiny.model, tiny.tokenizer
    result = run_lm_eval(model, tokenizer, [MC], limit=20, include=include)
    rows = loaders.jsonl_rows("arith_mc.jsonl")["test"].select(range(20))
    seqs, targets = [], []  # every (question, choice) pair, scored in one right-padded batch
    for row in rows:
        context = tokenizer(f"Question: {row['question']}\nAnswer:").input_ids
        for choice in row["choices"]:
            target = tokenizer(" " + choice).input_ids
            seqs.append(context + target)
            targets.append((len(context), target))
    width = max(len(seq) for seq in seqs)
    batch = torch.tensor([seq + [0] * (width - len(seq)) for seq in seqs])  # (N, T)
    model.eval()
    with torch.no_grad():
        logp = model(batch, use_cache=False).logits.log_softmax(-1)  # (N, T, V)
    scores = torch.tensor([
        logp[i, start - 1 + torch.arange(len(target)), target].sum().item()
        for i, (start, target) in enumerate(targets)
    ]).view(len(rows), 4)
    correct = (scores.argmax(1) == torch.tensor(rows["answer"])).sum().item()
    assert result.n_samples == {MC: 20}
    assert result.metrics[MC]["acc"] == pytest.approx(correct / 20)


def test_tokenizer_without_pad_token_is_not_changed(tiny, include):
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.pad_token = None
    size = len(tokenizer)
    result = run_lm_eval(tiny.model, tokenizer, [MC], limit=2, include=include, batch_size=2)
    assert result.n_samples == {MC: 2}
    assert tokenizer.pad_token is None and len(tokenizer) == size


def test_wikitext_rolling_from_any_directory(tiny, include, tmp_path, monkeypatch):
    shared_file("wikitext2_test.txt")
    monkeypatch.chdir(tmp_path)
    result = run_lm_eval(tiny.model, tiny.tokenizer, [WIKI], limit=2, include=include)
    values = result.metrics[WIKI]
    assert result.n_samples == {WIKI: 2}
    assert result.headline()[WIKI] == ("word_perplexity", values["word_perplexity"], False)
    assert all(math.isfinite(v) and v > 0 for v in values.values())
    # A random byte-level model: a few bits per byte, below the 8.02 of a uniform 260-way guess.
    assert values["bits_per_byte"] == pytest.approx(math.log2(values["byte_perplexity"]))
    assert 1.0 < values["bits_per_byte"] < math.log2(260) + 0.01


def test_wikitext_articles():
    text = shared_file("wikitext2_test.txt").read_text(encoding="utf-8")
    pages = loaders.wikitext_articles(str(SHARED_DATA / "wikitext2_test.txt"))["test"]["page"]
    assert len(pages) == 62  # WikiText-2 test: 62 articles
    assert all(page.startswith(" = ") and not page.startswith(" = = ") for page in pages)
    assert "".join(pages) == text.removeprefix(" \n")


def test_shipped_arithmetic_is_right():
    for row in loaders.jsonl_rows("arith_mc.jsonl")["test"]:
        _, _, a, op, b = row["question"].rstrip("?").split()
        truth = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert row["choices"][row["answer"]] == str(truth)
        assert len(set(row["choices"])) == 4
    for row in loaders.jsonl_rows("arith_gen.jsonl")["test"]:
        _, _, a, op, b = row["question"].rstrip("?").split()
        assert row["answer"] == str({"+": int(a) + int(b), "-": int(a) - int(b),
                                     "*": int(a) * int(b)}[op])


def test_unknown_task_suggests_near_names(include):
    near = "layerwise_arith_mcc.*near names: .*layerwise_arith_mc"
    with pytest.raises(LayerwiseError, match=near):
        check_lm_eval(["layerwise_arith_mc", "layerwise_arith_mcc"], include=include)
    check_lm_eval([MC, GEN, "layerwise_wikitext_local", "hellaswag", "mmlu"], include=include)


def test_missing_wikitext_file_is_refused_before_running(include):
    with pytest.raises(LayerwiseError, match="gone.txt.*wikitext_task"):
        check_lm_eval(["layerwise_wikitext_gone"], include=include)


def test_include_must_be_a_directory(tmp_path):
    with pytest.raises(LayerwiseError, match="is not a directory"):
        check_lm_eval([MC], include=str(tmp_path / "nowhere"))


def test_missing_lm_eval_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LayerwiseError, match="pip install lm-eval"):
        check_lm_eval([MC])


def test_untied_head_that_config_ties_is_refused(include):
    qwen = load_model("tiny:qwen2", seed=0).model  # tie_word_embeddings=True
    qwen.lm_head.weight = torch.nn.Parameter(qwen.lm_head.weight.detach() + 1.0)
    head = qwen.lm_head.weight.detach().clone()
    with pytest.raises(LayerwiseError, match="tie_word_embeddings"):
        run_lm_eval(qwen, None, [MC], include=include)
    assert qwen.lm_head.weight is not qwen.get_input_embeddings().weight
    assert torch.equal(qwen.lm_head.weight, head)


def test_to_dict_is_json_safe():
    result = HarnessResult(
        tasks=[WIKI], limit=None, metrics={WIKI: {"word_perplexity": math.inf, "x": math.nan}},
        stderr={WIKI: {}}, keys={WIKI: {"word_perplexity": "word_perplexity,none", "x": "x,none"}},
        higher_is_better={WIKI: {"word_perplexity": False}}, n_samples={WIKI: 3}, seconds=1.0,
    )
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["metrics"][WIKI] == {"word_perplexity": None, "x": None}
    assert data["headline"][WIKI] == {"metric": "word_perplexity", "value": None,
                                      "higher_is_better": False}


def test_a_lora_wrapped_model_is_evaluated_as_it_is():
    """A PEFT-wrapped model (LoRA training) goes through the harness: the tied-head check reads
    through PEFT's forwarding, and no weight changes."""
    import torch

    from layerwise.models import load_model
    from layerwise.training.config import TrainConfig
    from layerwise.training.trainable import prepare_trainable

    lm = load_model("tiny:llama", seed=0)
    wrapped = prepare_trainable(lm.model, TrainConfig(lora=True, steps=1)).model
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    result = run_lm_eval(wrapped, lm.tokenizer, ["layerwise_arith_mc"], limit=2)
    assert result.n_samples["layerwise_arith_mc"] == 2
    assert all(torch.equal(before[k], v) for k, v in wrapped.state_dict().items())
