"""Paths a run or a sweep stores are absolute, so they work from any working directory."""

from __future__ import annotations

from pathlib import Path

from layerwise.tasks.gsm8k import GSM8KTask
from layerwise.training.config import TrainConfig


def test_a_relative_task_file_and_data_options_are_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "mytask.py").write_text("def make(**kw):\n    return None\n")
    (tmp_path / "train.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(task="mytask.py:make", layers="1", task_options={"train": "train.jsonl",
                                                                       "digits": 2, "ops": "+-"})
    assert cfg.task == f"{tmp_path / 'mytask.py'}:make"
    assert cfg.task_options == {"train": str(tmp_path / "train.jsonl"), "digits": 2, "ops": "+-"}


def test_gsm8k_finds_the_shared_data_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = GSM8KTask().train
    assert Path(train).is_absolute() and Path(train).is_file(), train
