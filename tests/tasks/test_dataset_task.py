"""The `dataset` task: splits that never overlap, S per data type on a real tiny model, and each
TRL type x method pair through the real TRL trainer from the command line."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

from layerwise.cli.main import main
from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.tasks.dataset import make_task, parse_eval_split
from tests.data.dataset_fixtures import CHATML, build


@pytest.fixture(scope="module")
def F(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dataset-task"))


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny:llama", seed=0)
    loaded.tokenizer.chat_template = CHATML
    return loaded


def test_the_eval_split_is_the_same_rows_whatever_the_seed_and_never_trained_on(F):
    task = make_task(str(F / "pc.jsonl"), eval_split="10%")
    held = {r["id"] for r in task.rows("eval", 100, 0)}
    assert len(held) == 4  # 10% of 40 rows
    for seed in (0, 1, 7):
        train_rows = task.rows("train", 100, seed)
        assert len(train_rows) == 36
        assert not held & {r["id"] for r in train_rows}
        assert held == {r["id"] for r in
                        make_task(str(F / "pc.jsonl"), eval_split="10%").rows("eval", 100, seed)}
    first = [r["id"] for r in task.rows("train", 5, 0)]
    assert first != [r["id"] for r in task.rows("train", 5, 1)]  # the seed draws training rows


def test_eval_split_sizes_and_too_few_rows():
    assert parse_eval_split("5%", 40) == 2 and parse_eval_split("5%", 1000) == 50
    assert parse_eval_split(3, 10) == 3
    with pytest.raises(LayerwiseError, match="too few to hold out 1 and train on the rest"):
        parse_eval_split("5%", 1)
    with pytest.raises(LayerwiseError, match="expected a share such as 5%"):
        parse_eval_split("150%", 10)


def test_an_eval_dataset_must_be_of_the_same_type(F):
    task = make_task(str(F / "pc.jsonl"), eval_dataset=str(F / "pc.jsonl"))
    assert task.split_size("eval") == 40
    with pytest.raises(LayerwiseError, match="--eval-dataset .* is language-modelling"):
        make_task(str(F / "pc.jsonl"), eval_dataset=str(F / "lm.jsonl"))


def test_sft_data_is_scored_by_its_held_out_completion_loss(F, tiny):
    task = make_task(str(F / "pc_chat.jsonl"), eval_split="8")
    ev = task.evaluate(tiny.model, tiny.tokenizer, n=8)
    assert task.primary == "loss" and not task.higher_is_better
    assert ev.score == ev.loss and math.isfinite(ev.loss) and ev.loss > 0
    assert ev.n == 8 and ev.accuracy is None
    # the same number by hand: mean NLL of the completion tokens only
    from layerwise.data.chat import sft_tokens

    total, count = 0.0, 0
    for row in task.rows("eval", 8, 0):
        t = sft_tokens(row, tiny.tokenizer)
        ids = torch.tensor([t["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0, :-1].float(), -1)
        for pos, label in enumerate(t["labels"][1:]):
            if label != -100:
                total -= logp[pos, label].item()
                count += 1
    assert ev.loss == pytest.approx(total / count, rel=1e-5)


def test_a_reward_makes_s_the_mean_reward_of_greedy_completions(F, tiny):
    task = make_task(str(F / "prompt.jsonl"), reward=f"{F / 'rewards.py'}:first_digit",
                     eval_split="6", max_new_tokens=3)
    ev = task.evaluate(tiny.model, tiny.tokenizer, n=6)
    assert task.primary == "mean_score" and ev.score == ev.mean_score
    assert ev.accuracy is None  # a user's reward is not known to be 0/1: the mean is S
    assert len(ev.records) == 6 and all(r["prompt"].endswith("<|im_start|>assistant\n")
                                        for r in ev.records)
    assert ev.mean_score == pytest.approx(sum(r["score"] for r in ev.records) / 6)
    binary = make_task(str(F / "pc.jsonl"), reward="exact", eval_split="4", max_new_tokens=2)
    ev = binary.evaluate(tiny.model, tiny.tokenizer, n=4)
    assert ev.accuracy == ev.mean_score and ev.loss is not None  # both figures for prompt-completion


def test_preference_pairs_are_scored_by_preference_accuracy(F, tiny):
    task = make_task(str(F / "pref_chat.jsonl"), eval_split="10")
    ev = task.evaluate(tiny.model, tiny.tokenizer, n=10)
    assert task.primary == "preference_accuracy" and ev.score == ev.preference_accuracy
    assert 0 <= ev.preference_accuracy <= 1 and ev.preference_margin is not None
    implicit = make_task(str(F / "pref_implicit.jsonl"), eval_split="10")
    assert implicit.evaluate(tiny.model, tiny.tokenizer, n=10).preference_accuracy is not None
    unpaired = make_task(str(F / "unpaired.jsonl"), eval_split="10")
    ev = unpaired.evaluate(tiny.model, tiny.tokenizer, n=10)
    assert unpaired.primary == "preference_margin" and ev.score == ev.preference_margin


def test_a_conversational_dataset_needs_a_chat_template(F):
    task = make_task(str(F / "messages.jsonl"))
    tok = load_model("tiny:llama").tokenizer
    with pytest.raises(LayerwiseError, match="no chat template: give one with --chat-template"):
        task.bind(tok)
    make_task(str(F / "messages.jsonl"), chat_template=str(F / "chatml.jinja")).bind(tok)
    assert tok.chat_template == CHATML


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


PAIRS = [  # (data, method, extra flags): every type each TRL trainer takes
    ("lm", "sft", []), ("messages", "sft", []), ("pc", "sft", []), ("pc_chat", "sft", []),
    ("prompt", "grpo", ["--reward", "{F}/rewards.py:first_digit"]),
    ("pc", "dapo", ["--reward", "exact", "--reward", "contains=0.5"]),
    ("pc_chat", "rloo", ["--reward", "contains"]),
    ("pref", "dpo", []), ("pref_chat", "dpo", []), ("pref_implicit", "dpo", []),
    ("unpaired", "kto", []), ("pref", "kto", []),
]


@pytest.mark.parametrize("data, method, extra", PAIRS, ids=[f"{d}-{m}" for d, m, _ in PAIRS])
def test_every_type_trains_with_every_method_that_takes_it(F, tmp_path, data, method, extra):
    out = tmp_path / "run"
    rl = ["--num-generations", "2", "--max-completion-length", "3"] if method in (
        "grpo", "dapo", "rloo") else []
    code, stdout, err = run_cli([
        "train", "--model", "tiny:llama", "--dataset", str(F / f"{data}.jsonl"),
        "--chat-template", str(F / "chatml.jinja"), "--method", method, "--layers", "1",
        "--steps", "2", "--batch-size", "4", "--eval-n", "4", "--eval-split", "4",
        "--task-option", "max_new_tokens=3", "--general-seqs", "1", "--general-seq-len", "16",
        "--report-to", "none", "--out", str(out), "-q",
        *[a.replace("{F}", str(F)) for a in extra], *rl])
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps_completed"] == 2
    assert metrics["task"] == "dataset" and metrics["base"]["primary"] is not None
    assert metrics["final"][metrics["final"]["primary"]] is not None
    assert metrics["data"]["type"].startswith({"lm": "language", "messages": "language"}.get(
        data, metrics["data"]["type"][:4]))
    assert "S = " in stdout
    # only block 1 moved (the selection holds through TRL's trainer)
    from safetensors.torch import load_file

    before = load_model("tiny:llama", seed=0).model.state_dict()
    after = load_file(str(out / "model" / "model.safetensors"))
    moved = {k.split(".")[2] for k, v in after.items() if k.startswith("model.layers.")
             and not torch.equal(v, before[k])}
    assert moved <= {"1"}
    if method in ("sft", "dpo", "kto"):
        assert moved == {"1"}


def test_dry_run_shows_the_first_example_as_the_model_sees_it(F):
    code, out, err = run_cli(["train", "--model", "tiny:llama", "--dataset", str(F / "messages.jsonl"),
                              "--chat-template", str(F / "chatml.jinja"), "--layers", "1",
                              "--dry-run"])
    assert code == 0, err
    assert "# data " in out and "language-modelling, conversational" in out
    assert "# | <|im_start|>user" in out and "# | [[" in out
    assert "task: dataset" in out  # the config.yaml a rerun takes


def test_a_config_yaml_from_a_dataset_run_repeats_it(F, tmp_path):
    out = tmp_path / "r"
    code, _, err = run_cli(["train", "--model", "tiny:llama", "--dataset", str(F / "pc.jsonl"),
                            "--reward", "exact", "--layers", "1", "--steps", "1", "--batch-size", "2",
                            "--eval-n", "2", "--task-option", "max_new_tokens=2", "--general-seqs",
                            "1", "--general-seq-len", "16", "--report-to", "none", "--out", str(out), "-q"])
    assert code == 0, err
    code, text, err = run_cli(["train", "--config", str(out / "config.yaml"), "--dry-run"])
    assert code == 0, err
    assert f"path: {F / 'pc.jsonl'}" in text and "reward: exact" in text


def test_sft_trainer_takes_our_labels_as_they_are(F, tiny, tmp_path):
    """The pre-tokenized rows reach SFTTrainer's collator with the prompt masked: its loss on a
    batch equals our held-out completion loss on the same rows."""
    from layerwise.evaluation.likelihood import completion_loss
    from layerwise.training.config import TrainConfig
    from layerwise.training.methods import METHODS, common_args

    cfg = TrainConfig(dataset=str(F / "pc_chat.jsonl"), layers="1", n_train=4, batch_size=4,
                      steps=1, report_to="none")
    task = make_task(**cfg.task_options)
    args = common_args(cfg, str(tmp_path), [], torch.device("cpu"), torch.float32)
    trainer = METHODS["sft"].build(tiny.model, tiny.tokenizer, task, cfg, args, [], None)
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    for row, labels in zip(rows, batch["labels"]):
        assert labels[:len(row["labels"])].tolist() == list(row["labels"])
        assert labels[0] == -100
    with torch.no_grad():
        theirs = tiny.model(**{k: v for k, v in batch.items() if k in ("input_ids", "labels",
                                                                       "attention_mask")}).loss
    ours = completion_loss(tiny.model, [{"input_ids": r["input_ids"], "labels": r["labels"]}
                                        for r in rows], tiny.tokenizer.pad_token_id)
    assert theirs.item() == pytest.approx(ours, rel=1e-5)


def test_sweep_and_tune_take_a_dataset_through_the_same_path(F, tmp_path):
    """A sweep keys its runs on the dataset task's options and computes C(k) on the held-out
    loss; tune estimates, chooses, trains and verifies on the same data."""
    common = ["--model", "tiny:llama", "--dataset", str(F / "pc_chat.jsonl"), "--chat-template",
              str(F / "chatml.jinja"), "--steps", "2", "--batch-size", "4", "--eval-n", "4",
              "--eval-split", "4", "--general-seqs", "1", "--general-seq-len", "16",
              "--report-to", "none", "-q"]
    code, out, err = run_cli(["sweep", *common, "--layers", "1;2", "--out", str(tmp_path / "s")])
    assert code == 0, err
    contribution = json.loads((tmp_path / "s" / "contribution.json").read_text())
    assert contribution["sweep"]["task"] == "dataset"
    assert contribution["sweep"]["task_options"]["path"] == str(F / "pc_chat.jsonl")
    # S is the held-out completion loss (nats): the base's equals the task's own evaluation
    task = make_task(**contribution["sweep"]["task_options"])
    tiny = load_model("tiny:llama", seed=0)
    assert contribution["base_score"] == pytest.approx(
        task.evaluate(tiny.model, tiny.tokenizer, n=4).loss, rel=1e-6)
    assert contribution["full_score"]["0"] < contribution["base_score"]  # training lowered it
    code, out, err = run_cli(["tune", *common, "--budget", "1", "--out", str(tmp_path / "t")])
    assert code == 0, err
    tune = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert tune["status"] == "completed" and len(tune["choice"]["blocks"]) == 1
    assert tune["settings"]["task"] == "dataset"


def test_the_python_api_takes_a_dataset_like_the_command(F, tmp_path):
    import layerwise

    common = dict(dataset=str(F / "pc_chat.jsonl"), chat_template=str(F / "chatml.jinja"),
                  steps=1, batch_size=2, eval_n=2, eval_split="4", general_seqs=1,
                  general_seq_len=16, report_to="none")
    run = layerwise.train("tiny:llama", layers="1", out=str(tmp_path / "r"), **common)
    assert run.ok and run.task == "dataset" and run.base.primary == "loss"
    sw = layerwise.sweep("tiny:llama", layers="1", out=str(tmp_path / "s"), **common)
    assert sw.spec.task == "dataset" and sw.spec.task_options["path"] == str(F / "pc_chat.jsonl")
    assert sw.base_score == pytest.approx(run.base.score, rel=1e-6)  # the same S, both ways
