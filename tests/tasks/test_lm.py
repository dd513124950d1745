"""The `lm` task: token windows of a text, a seed-ordered SFT dataset, a held-out loss.

The loss is checked against the Hugging Face model's own `labels=` loss on the same windows, and
the dataset is trained on by TRL's SFTTrainer for a few steps, as `train --task lm` does.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from layerwise.cli.main import main
from layerwise.data.corpus import load_corpus
from layerwise.errors import LayerwiseError
from layerwise.evaluation.task_eval import evaluate_task
from layerwise.models import load_model
from layerwise.models.tiny import byte_tokenizer
from layerwise.tasks import get_task, task_names
from layerwise.tasks.lm import NO_ITEMS, default_text, make_task
from tests.conftest import shared_file

SEQ = 32


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Two disjoint slices of real text (the embedded CPython reference): train and eval files."""
    folder = tmp_path_factory.mktemp("lm")
    text = load_corpus(None).text
    train, held_out = folder / "train.txt", folder / "eval.txt"
    train.write_text(text[:20_000])
    held_out.write_text(text[20_000:30_000])
    return train, held_out


@pytest.fixture(scope="module")
def task(texts):
    return make_task(train=str(texts[0]), eval=str(texts[1]), seq_len=SEQ)


@pytest.fixture(scope="module")
def tiny_llama():
    return load_model("tiny:llama", seed=0)


def test_windows_are_the_text_cut_in_order(task, texts):
    tok = byte_tokenizer()
    ids = tok(texts[0].read_text(), add_special_tokens=False)["input_ids"]
    windows = task.windows(tok, "train")
    assert windows.shape == (len(ids) // SEQ, SEQ)
    assert windows.flatten().tolist() == ids[:windows.numel()]
    assert task.windows(tok, "train") is windows  # cached: tokenized once
    assert task.windows(byte_tokenizer(), "train") is windows  # same tokenizer, another object
    assert not torch.equal(task.windows(tok, "eval")[:4], windows[:4])


def test_train_dataset_is_n_whole_windows_in_a_seed_order(task):
    tok = byte_tokenizer()
    windows = [tuple(w) for w in task.windows(tok, "train").tolist()]
    first = task.train_dataset(tok, 12, seed=0)
    assert first.column_names == ["input_ids"] and len(first) == 12
    rows = [tuple(r) for r in first["input_ids"]]
    assert all(len(r) == SEQ for r in rows) and len(set(rows)) == 12
    assert all(r in windows for r in rows)
    assert rows != windows[:12]  # drawn, not the start of the text
    assert [tuple(r) for r in task.train_dataset(tok, 12, seed=0)["input_ids"]] == rows
    assert [tuple(r) for r in task.train_dataset(tok, 12, seed=1)["input_ids"]] != rows
    everything = task.train_dataset(tok, 10 * len(windows), seed=0)
    assert sorted(tuple(r) for r in everything["input_ids"]) == sorted(windows)


def test_eval_loss_is_the_models_own_loss(task, tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    result = task.evaluate(model, tok, n=6, batch_size=4)
    windows = task.windows(tok, "eval")[:6]
    with torch.no_grad():
        reference = model(input_ids=windows, labels=windows).loss.item()
    assert result.n == 6 and result.split == "eval"
    assert abs(result.loss - reference) < 1e-5
    assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-12)
    assert result.accuracy is None and result.score == result.loss
    assert result.higher_is_better is False
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert summary["score"] == summary["loss"] == result.loss
    assert summary["higher_is_better"] is False


def test_eval_ignores_the_seed_and_uses_the_first_windows(task, tiny_llama):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    a = task.evaluate(model, tok, n=4, seed=0)
    b = task.evaluate(model, tok, n=4, seed=9)
    c = task.evaluate(model, tok, n=5, seed=0)
    assert a.loss == b.loss and a.seed == 0 and b.seed == 9
    assert c.loss != a.loss  # a fifth window changes the mean: the windows are the first n


def test_eval_turns_dropout_off_and_restores_the_mode(task):
    gpt2 = load_model("tiny:gpt2", seed=0).model  # GPT-2 configs carry 0.1 dropout
    tok = byte_tokenizer()
    expected = task.evaluate(gpt2, tok, n=4).loss
    gpt2.train()
    assert task.evaluate(gpt2, tok, n=4).loss == expected
    assert gpt2.training


def test_evaluate_task_dispatches_to_the_task(task, tiny_llama):
    direct = task.evaluate(tiny_llama.model, tiny_llama.tokenizer, n=3)
    through = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, task, n=3, batch_size=2)
    assert through.loss == pytest.approx(direct.loss, abs=1e-6) and through.n == 3
    train_split = evaluate_task(tiny_llama.model, tiny_llama.tokenizer, task, n=3, split="train")
    assert train_split.split == "train" and train_split.loss != through.loss


def test_sft_on_the_windows_lowers_the_loss(task, tmp_path):
    from trl import SFTConfig, SFTTrainer

    loaded = load_model("tiny:llama", seed=1)
    tok = loaded.tokenizer
    before = task.evaluate(loaded.model, tok, n=8).loss
    args = SFTConfig(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=8,
                     learning_rate=5e-3, report_to=[], use_cpu=True, disable_tqdm=True,
                     save_strategy="no", logging_steps=100)
    SFTTrainer(model=loaded.model, args=args, train_dataset=task.train_dataset(tok, 64, seed=0),
               processing_class=tok).train()
    assert task.evaluate(loaded.model, tok, n=8).loss < before - 0.5


def test_registered_with_options(texts):
    assert "lm" in task_names()
    task = get_task("lm", train=str(texts[0]), eval=str(texts[1]), seq_len=16)
    assert (task.name, task.kind, task.metric, task.max_new_tokens) == ("lm", "lm", "loss", 0)
    assert task.higher_is_better is False and task.seq_len == 16
    for call in (lambda: task.items("train", 4, 0), lambda: task.score("x", None),
                 lambda: task.extract("x", None)):
        with pytest.raises(LayerwiseError, match="use --method sft"):
            call()
    assert NO_ITEMS == ("the lm task trains on text windows: use --method sft (it has no prompt "
                        "items for RL or DPO)")


def test_defaults_are_wikitext2_valid_and_test(monkeypatch, tmp_path):
    valid, test = shared_file("wikitext2_valid.txt"), shared_file("wikitext2_test.txt")
    monkeypatch.chdir(tmp_path)  # found from the source tree, not only from the working directory
    task = make_task()
    assert task.train == str(valid.resolve()) and task.eval == str(test.resolve())
    assert task.seq_len == 128


def test_missing_default_is_a_clear_error():
    with pytest.raises(LayerwiseError, match=r"default train text \.\./shared/data/nope.txt is "
                                             r"missing .*pass --task-option train=FILE"):
        default_text("nope.txt", "train")


@pytest.mark.parametrize("options, message", [
    (dict(seq_len=1), "lm seq_len=1: must be a whole number >= 2"),
    (dict(seq_len="long"), "lm seq_len='long': must be a whole number >= 2"),
    (dict(train="missing.txt"), "lm train file missing.txt does not exist"),
    (dict(eval="gone.jsonl"), "lm eval file gone.jsonl does not exist"),
])
def test_bad_options_are_refused(texts, options, message):
    paths = dict(train=str(texts[0]), eval=str(texts[1]))
    with pytest.raises(LayerwiseError, match=message):
        make_task(**{**paths, **options})


def test_empty_or_short_text_is_refused(tmp_path, texts):
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("  \n")
    short.write_text("too short")
    tok = byte_tokenizer()
    with pytest.raises(LayerwiseError, match="is empty"):
        make_task(train=str(empty), eval=str(texts[1])).train_dataset(tok, 4, 0)
    with pytest.raises(LayerwiseError, match=r"lm eval text .*short.txt has 9 tokens, too few for "
                                             r"one window of seq_len=32"):
        make_task(train=str(texts[0]), eval=str(short), seq_len=32).windows(tok, "eval")


def test_cli_eval_prints_loss_and_writes_it(texts, tmp_path, capsys):
    code = main(["eval", "-q", "--task", "lm", "--model", "tiny:llama", "--n", "3",
                 "--task-option", f"train={texts[0]}", "--task-option", f"eval={texts[1]}",
                 "--task-option", "seq_len=32", "--out", str(tmp_path)])
    line = capsys.readouterr().out
    assert code == 0
    assert line.startswith("lm: loss ") and "perplexity" in line and "3 eval windows" in line
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["accuracy"] is None and summary["higher_is_better"] is False
    assert math.exp(summary["loss"]) == pytest.approx(summary["perplexity"])
    assert f"{summary['loss']:.4f}" in line
    assert (tmp_path / "records.jsonl").read_text() == ""


def test_cli_eval_on_the_default_wikitext(capsys):
    shared_file("wikitext2_test.txt")
    assert main(["eval", "-q", "--task", "lm", "--model", "tiny:llama", "--n", "2"]) == 0
    loss = float(capsys.readouterr().out.split("loss ")[1].split()[0])
    assert abs(loss - math.log(260)) < 0.5  # a random byte model: about uniform over 260 tokens


@pytest.mark.parametrize("extra, message", [
    (["--task-option", "seq_len=1"], "lm seq_len=1"),
    (["--task-option", "train=missing.txt"], "lm train file missing.txt does not exist"),
    (["--task-option", "seq_len=100000"], "too few for one window"),
    (["--model", "tiny:llama:layers=0"], "tiny size layers='0'"),
    (["--model", "tiny:llama:hidden=30"], "hidden=30 is not divisible by heads=4"),
])
def test_cli_bad_inputs_exit_2(texts, capsys, extra, message):
    argv = ["eval", "-q", "--task", "lm", "--model", "tiny:llama", "--n", "2",
            "--task-option", f"train={texts[0]}", "--task-option", f"eval={texts[1]}", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
