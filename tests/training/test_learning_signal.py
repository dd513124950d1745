"""RL without a learning signal (every group's rewards equal) is said, not silently 'completed'."""

from __future__ import annotations

import logging

from layerwise.training.config import TrainConfig
from layerwise.training.runner import train

CONSTANT_TASK = '''
from layerwise.tasks import TaskItem

class Constant:
    """Every completion scores the same: GRPO has nothing to learn from."""
    name = "constant"
    description = "a reward that never varies"
    max_new_tokens = 4

    def items(self, split, n, seed):
        return [TaskItem(id=str(i), prompt=f"Q{i}:", answer="7", target=" 7") for i in range(n)]

    def extract(self, completion, item):
        return completion.strip()[:1]

    def score(self, completion, item):
        return 0.5

def make_task():
    return Constant()
'''


def test_grpo_without_signal_warns_and_records_it(tmp_path, caplog):
    task = tmp_path / "constant.py"
    task.write_text(CONSTANT_TASK)
    cfg = TrainConfig(task=f"{task}:make_task", method="grpo", layers="1", steps=4, batch_size=4,
                      num_generations=2, n_train=8, eval_n=2, general_seqs=1, general_seq_len=16,
                      progress=False, lr=1e-3, out=str(tmp_path / "run"))
    with caplog.at_level(logging.WARNING, logger="layerwise.training.callbacks"):
        result = train(cfg, "tiny:llama")
    assert result.status == "completed"
    sig = result.learning_signal
    assert sig == {"logged_steps": 4, "steps_without_signal": 4, "share_without_signal": 1.0,
                   "none_at_all": True}
    assert any("no learning signal" in w for w in result.warnings)
    assert any("no learning signal for 3 steps in a row" in r.message for r in caplog.records)
    import json

    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["learning_signal"]["none_at_all"] and on_disk["warnings"]


def test_sft_has_no_signal_record(tmp_path):
    cfg = TrainConfig(task="arithmetic", method="sft", layers="1", steps=2, batch_size=4, n_train=8,
                      eval_n=2, general_seqs=1, general_seq_len=16, progress=False)
    result = train(cfg, "tiny:llama")
    assert result.learning_signal is None and result.warnings == []


def test_a_sweep_without_signal_explains_its_nan_contributions(tmp_path):
    import json

    from layerwise.sweeps.outputs import write_sweep_outputs
    from layerwise.sweeps.runner import run_sweep
    from layerwise.sweeps.spec import SweepSpec

    task = tmp_path / "constant.py"
    task.write_text(CONSTANT_TASK)
    sweep = SweepSpec(model="tiny:llama", task=f"{task}:make_task", method="grpo", layers="1",
                      seeds=(0,), train={"steps": 3, "batch_size": 4, "num_generations": 2,
                                         "n_train": 8, "eval_n": 2, "general_seqs": 1,
                                         "general_seq_len": 16, "lr": 1e-3})
    rows = run_sweep(sweep, tmp_path / "sweep")
    write_sweep_outputs(sweep, rows, tmp_path / "sweep")
    doc = json.loads((tmp_path / "sweep" / "contribution.json").read_text())
    notes = " ".join(doc["notes"])
    assert "full training left the score where it was" in notes
    assert "2 of 2 training runs had no learning signal" in notes
    assert "no selection has a finite C(k)" in notes
    assert "no learning signal" in (tmp_path / "sweep" / "report.html").read_text()


BROKEN_TASK = '''
from layerwise.tasks import TaskItem

class Broken:
    name = "broken"
    max_new_tokens = 4

    def items(self, split, n, seed):
        return [TaskItem(id=str(i), prompt=f"Q{i}:", answer="7", target=" 7") for i in range(n)]

    def extract(self, completion, item):
        return completion

    def score(self, completion, item):
        return 1 / 0

def make_task():
    return Broken()
'''


def test_a_user_task_whose_score_raises_is_one_line(tmp_path, capsys):
    from tests.cli.test_cli import _one_line_error, run

    task = tmp_path / "broken.py"
    task.write_text(BROKEN_TASK)
    code, out, err = run(capsys, "eval", "--model", "tiny:llama", "--task", f"{task}:make_task",
                         "--n", "2", "-q")
    _one_line_error(code, out, err, r"task 'broken': score\(\) failed on item '0': "
                                    r"ZeroDivisionError: division by zero")
    from layerwise.tasks.base import reward_function
    from layerwise.tasks.registry import get_task

    reward = reward_function(get_task(f"{task}:make_task"))
    from layerwise.errors import LayerwiseError
    import pytest

    with pytest.raises(LayerwiseError, match="score\\(\\) failed on item '3'"):
        reward(["x"], item_id=["3"], answer=["7"], meta=["{}"])
