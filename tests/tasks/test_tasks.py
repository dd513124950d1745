"""Built-in arithmetic and GSM8K tasks, the registry, user task files, and reward == score."""

from __future__ import annotations

import json

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks import TaskItem, get_task, parse_task_options, reward_function
from layerwise.tasks.arithmetic import split_of
from tests.conftest import shared_file


def test_arithmetic_splits_are_disjoint_and_deterministic():
    task = get_task("arithmetic", digits=2, steps=2)
    train = task.items("train", 300, seed=1)
    train_other_seed = task.items("train", 300, seed=2)
    evals = task.items("eval", 100, seed=1)
    assert {i.id for i in train}.isdisjoint({i.id for i in evals})
    assert {i.id for i in train_other_seed}.isdisjoint({i.id for i in evals})
    assert [i.id for i in task.items("train", 300, seed=1)] == [i.id for i in train]
    assert [i.id for i in train] != [i.id for i in train_other_seed]
    assert all(split_of(i.id) == "eval" for i in evals)
    assert len({i.id for i in train}) == 300


def test_arithmetic_answers_and_knobs():
    task = get_task("arithmetic", digits=3, ops="*", steps=2)
    for item in task.items("eval", 20, seed=0):
        a, op1, b, op2, c = item.id.split()
        assert op1 == op2 == "*" and all(100 <= int(x) <= 999 for x in (a, b, c))
        assert int(item.answer) == int(a) * int(b) * int(c)
        assert task.score(item.target, item) == 1.0
        assert task.score(f" {int(item.answer) + 1}", item) == 0.0
        assert task.score(" no idea", item) == 0.0
    item = TaskItem(id="2 - 5", prompt="", answer="-3", target=" -3\n")
    assert task.score(" -3 is the answer, not 4", item) == 1.0
    assert task.extract(" 1,234", item) == "1234"


@pytest.mark.parametrize("options, pattern", [
    ({"digits": 0}, "digits=0"), ({"ops": "/"}, "ops='/'"), ({"steps": 0}, "steps=0"),
    ({"colour": 3}, "no option colour; valid: digits, ops, steps"),
])
def test_arithmetic_bad_options(options, pattern):
    with pytest.raises(LayerwiseError, match=pattern):
        get_task("arithmetic", **options)


def test_small_spaces_are_enumerated_and_capped(caplog):
    from layerwise.tasks import arithmetic

    arithmetic._WARNED.clear()  # the warning is given once per process
    task = get_task("arithmetic", digits=1, ops="+")
    evals = task.items("eval", 500, 0)
    train = task.items("train", 500, 0)
    assert len(evals) + len(train) == 100 and len({i.id for i in evals}) == len(evals)
    assert "only" in caplog.text and "distinct eval problems" in caplog.text
    assert {i.id for i in task.items("eval", 5, 0)} <= {i.id for i in evals}


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(LayerwiseError, match="valid: arithmetic, gsm8k, code, decision"):
        get_task("chess")


def test_task_options_are_typed():
    assert parse_task_options(["digits=3", "ops=+*", "flag=true", "x=0.5"]) == {
        "digits": 3, "ops": "+*", "flag": True, "x": 0.5}
    with pytest.raises(LayerwiseError, match="not KEY=VALUE"):
        parse_task_options(["digits"])


def test_reward_function_is_the_task_score():
    task = get_task("arithmetic")
    items = task.items("train", 6, seed=0)
    completions = [it.target if i % 2 else " 999999" for i, it in enumerate(items)]
    rows = [it.to_row() for it in items]
    reward = reward_function(task)
    got = reward(completions, prompts=[r["prompt"] for r in rows],
                 **{k: [r[k] for r in rows] for k in ("item_id", "answer", "meta", "target")})
    assert got == [task.score(c, it) for c, it in zip(completions, items)] == [0.0, 1.0] * 3


def test_gsm8k_from_the_shared_files():
    train = shared_file("gsm8k_train.jsonl")
    test = shared_file("gsm8k_test.jsonl")
    task = get_task("gsm8k", train=str(train), test=str(test))
    items = task.items("eval", 5, seed=0)
    assert len(items) == 5 and all(it.prompt.startswith("Question: ") for it in items)
    for it in items:
        assert "<<" not in it.target and task.score(it.target, it) == 1.0
    assert {i.prompt for i in task.items("train", 200, 0)}.isdisjoint(
        {i.prompt for i in task.items("eval", 200, 0)})
    it = items[0]
    assert task.score(f"so the answer is #### {it.answer}\nthen 99", it) == 1.0
    assert task.score(f"#### 0{it.answer}1", it) == 0.0
    assert task.score(f"I think {it.answer}", it) == 1.0  # no ####: the last number


def test_gsm8k_missing_field_and_empty_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(LayerwiseError, match=r"bad.jsonl line 1 has no field 'answer'"):
        get_task("gsm8k", train=str(bad), test=str(bad)).items("eval", 1, 0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(LayerwiseError, match="empty"):
        get_task("gsm8k", test=str(empty)).items("eval", 1, 0)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(LayerwiseError, match="line 1 is not valid JSON"):
        get_task("gsm8k", test=str(broken)).items("eval", 1, 0)


USER_TASK = '''
from layerwise.tasks import TaskItem

class Sevens:
    name = "sevens"
    description = "always answer 7"
    max_new_tokens = 3

    def items(self, split, n, seed):
        offset = 0 if split == "train" else 10_000
        return [TaskItem(id=str(offset + seed * 1000 + i), prompt=f"Q{i}:", answer="7",
                         target=" 7\\n") for i in range(n)]

    def extract(self, completion, item):
        return completion.strip()[:1]

    def score(self, completion, item):
        return 1.0 if self.extract(completion, item) == "7" else 0.0

def make_task(**options):
    return Sevens()
'''


def test_user_task_file(tmp_path):
    path = tmp_path / "mytask.py"
    path.write_text(USER_TASK)
    task = get_task(f"{path}:make_task")
    assert task.name == "sevens" and task.score(" 7", task.items("eval", 1, 0)[0]) == 1.0
    with pytest.raises(LayerwiseError, match="does not define a factory 'make_tsak'.*make_task"):
        get_task(f"{path}:make_tsak")
    with pytest.raises(LayerwiseError, match="does not exist"):
        get_task(f"{tmp_path / 'nope.py'}:make_task")
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(LayerwiseError, match="failed to import: ModuleNotFoundError"):
        get_task(f"{broken}:make_task")
    notask = tmp_path / "notask.py"
    notask.write_text("def make_task():\n    return object()\n")
    with pytest.raises(LayerwiseError, match="is not a task: missing items, score, extract"):
        get_task(f"{notask}:make_task")
