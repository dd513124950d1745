"""--score-on validation (tasks/validation.py) and the warning for a selection that saw the test set
(training/precheck.py:selection_overlap): disjoint items, real runs and sweeps on a tiny model."""

from __future__ import annotations

import json

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks.registry import get_task
from layerwise.tasks.validation import validation_view
from layerwise.training.config import TrainConfig
from layerwise.training.precheck import selection_overlap
from layerwise.training.runner import train

SMALL = dict(steps=2, n_train=16, eval_n=8, batch_size=4, general_seqs=1, general_seq_len=32,
             progress=False)


def test_the_validation_items_are_training_items_no_run_trains_on_and_never_eval_items():
    task = get_task("arithmetic")
    view = validation_view(task, 60)
    held = {it.id for it in view.items("eval", 60, 0)}
    assert len(held) == 60
    assert held == {it.id for it in view.items("eval", 60, 7)}  # the same for every seed
    assert not held & {it.id for it in task.items("eval", 1000, 0)}  # disjoint from the test set
    assert held <= {it.id for it in task.items("train", 1000, 0)}  # carved from training
    for seed in (0, 1, 2):
        trained = {it.id for it in view.items("train", 1000, seed)}
        assert trained and not trained & held  # 237 training problems - 60 = 177
        assert len(trained) == len({it.id for it in task.items("train", 1000, seed)}) - 60
    assert view.name == task.name and view.score(" 3", view.items("eval", 1, 0)[0]) in (0.0, 1.0)


def test_tasks_whose_data_is_not_their_items_are_refused():
    with pytest.raises(LayerwiseError, match="--score-on validation needs a task whose items are "
                                             "its data: the lm task"):
        TrainConfig(task="lm", method="sft", full=True, score_on="validation").make_task()
    with pytest.raises(LayerwiseError, match="builds its SFT data itself"):
        TrainConfig(task="decision", method="sft", full=True, score_on="validation").make_task()
    with pytest.raises(LayerwiseError, match="--score-on 'test'; valid: eval, validation"):
        TrainConfig(layers="1", score_on="test")


def test_a_validation_run_is_scored_on_its_validation_items_and_says_so(tmp_path):
    run = train(TrainConfig(layers="1", score_on="validation", out=str(tmp_path / "v"), **SMALL),
                "tiny:llama")
    assert run.status == "completed"
    assert run.eval == {"n": 8, "split": "validation", "from": "train", "seed": 1_000_003}
    scored = [json.loads(line)["id"] for line in
              (tmp_path / "v" / "eval_final.jsonl").read_text().splitlines()]
    view = validation_view(get_task("arithmetic"), 8)
    assert scored == [it.id for it in view.items("eval", 8, 0)]


def test_a_selection_from_a_sweep_scored_on_the_test_items_warns_and_is_recorded(tmp_path,
                                                                                   toy_task):
    from layerwise import api

    sweep_args = dict(task=toy_task, method="sft", layers="0;1;2;3", steps=12, lr=3e-3,
                      n_train=16, eval_n=6, batch_size=8, general_seqs=1, general_seq_len=32)
    api.sweep("tiny:llama", out=tmp_path / "test-scored", **sweep_args)
    api.sweep("tiny:llama", out=tmp_path / "validation-scored", score_on="validation",
              **sweep_args)
    seen = tmp_path / "test-scored" / "contribution.json"
    clean = tmp_path / "validation-scored" / "contribution.json"
    assert json.loads(clean.read_text())["sweep"]["train"]["score_on"] == "validation"
    run = dict(SMALL, task=toy_task, layers="all", steps=4)
    (line,) = selection_overlap(TrainConfig(schedule=f"growth@{seen}:contribution_mean@2", **run))
    assert line.startswith(f"{seen} was scored on the held-out items of task '{toy_task}' that "
                           "score this run too")
    assert selection_overlap(TrainConfig(schedule=f"growth@{clean}:contribution_mean@2", **run)) == []
    assert selection_overlap(TrainConfig(schedule=f"growth@{seen}:contribution_mean@2",
                                         score_on="validation", **run)) == []
    assert selection_overlap(TrainConfig(**{**run, "task": "arithmetic"},
                                         schedule=f"growth@{seen}:contribution_mean@2")) == []
    result = train(TrainConfig(schedule=f"growth@{seen}:contribution_mean@2", out=str(tmp_path / "r"),
                               **run), "tiny:llama")
    assert result.status == "completed" and result.warnings[:1] == [line]
