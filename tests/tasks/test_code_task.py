"""The `code` task: a big offline bank, disjoint splits, and a score that only a solution earns."""

from __future__ import annotations

import time

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks import get_task, reward_function
from layerwise.tasks.code import TEMPLATES, CodeTask, make_task, problem_bank


@pytest.fixture(scope="module")
def task() -> CodeTask:
    return make_task()


def first_of(template: str, n_tests: int = 8):
    return next(p.item for p in problem_bank(n_tests) if p.item.meta["template"] == template)


def test_the_bank_has_hundreds_of_distinct_problems():
    bank = problem_bank(8)
    assert len(bank) >= 400
    assert len({p.item.id for p in bank}) == len(bank)
    assert len({p.item.prompt for p in bank}) == len(bank)
    assert {p.item.meta["template"] for p in bank} == {t.key for t in TEMPLATES}
    assert all(len(p.item.meta["tests"]) == 8 for p in bank)


def test_reference_solutions_score_one_for_every_template(task):
    for template in TEMPLATES:
        item = first_of(template.key)
        assert task.score(item.target, item) == 1.0, item.id


def test_the_prompt_is_code_the_target_continues():
    item = first_of("fizzbuzz")
    assert item.prompt.endswith('    """\n') and "def fizzbuzz(n):" in item.prompt
    assert item.answer == item.meta["header"] + item.target
    compile(item.prompt + item.target, "<reference>", "exec")


def test_completion_formats_are_understood(task):
    item = first_of("gcd")
    fenced = f"Here you go:\n```python\n{item.answer}```\nThis uses Euclid."
    for completion in (item.target,                        # continues the prompt's body
                       fenced,                             # a full def in a fence
                       f"Sure.\n{item.answer}",             # a full def after prose
                       f"```\n{item.target}```"):           # a fenced body
        assert task.score(completion, item) == 1.0, completion
    assert task.extract(fenced, item) == item.answer
    parity = first_of("parity")
    assert task.score(parity.target.strip(), parity) == 1.0  # an unindented one-line body
    assert task.extract("   ", item) is None


def test_partly_right_solutions_earn_a_fraction(task):
    assert 0.0 < task.score("    return True\n", first_of("palindrome")) < 1.0
    # One raising test does not stop the others: fizzbuzz always tests n == 1.
    fizz = first_of("fizzbuzz")
    raising = f"def {fizz.meta['entry_point']}(n):\n    if n == 1:\n        raise ValueError\n"
    assert task.score(raising + fizz.target, fizz) == pytest.approx(7 / 8)


@pytest.mark.parametrize("garbage", ["", "I don't know.", "def broken(:\n",
                                     "    return undefined_name\n", "import os\nos._exit(0)\n",
                                     "import sys\nsys.exit(0)\n"])
def test_garbage_scores_zero(task, garbage):
    assert task.score(garbage, first_of("scale")) == 0.0


def test_an_infinite_loop_scores_zero_within_the_timeout():
    task = make_task(timeout_s=1.0)
    started = time.monotonic()
    assert task.score("    while True:\n        pass\n", first_of("reverse")) == 0.0
    assert time.monotonic() - started < 3.0


def test_printed_fake_reports_cannot_pass(task):
    item = first_of("sum_multiples")
    name = item.meta["entry_point"]
    n = len(item.meta["tests"])
    guessed = "".join(f"print('\\n0 {{\"test\": {i}, \"value\": 0}}')\n" for i in range(n))
    fake_prints = (f"import sys\nprint(sys.stdin.read())\n{guessed}print('{{\"done\": true}}')\n"
                   f"def {name}(numbers):\n"
                   "    print('{\"test\": 0, \"value\": 0}')\n    return -1\n")
    assert task.score(fake_prints, item) == 0.0
    # Even code that digs the nonce out of the harness's frame cannot win: the expected values
    # never enter the sandbox, and a test reported twice voids the run.
    frame_digger = (
        "import sys\n"
        f"def {name}(numbers):\n"
        "    frame = sys._getframe(1)\n"
        "    while 'nonce' not in frame.f_locals:\n        frame = frame.f_back\n"
        "    nonce = frame.f_locals['nonce']\n"
        f"    for i in range({n}):\n"
        "        print('\\n' + nonce + ' {\"test\": %d, \"value\": 0}' % i)\n"
        "    return 0\n")
    assert task.score(frame_digger, item) == 0.0
    lying_equality = (f"class Always:\n    def __eq__(self, other):\n        return True\n"
                      f"def {name}(numbers):\n    return Always()\n")
    assert task.score(lying_equality, item) == 0.0


def test_splits_are_disjoint_and_deterministic(task):
    bank = problem_bank(8)
    train = task.items("train", 300, seed=0)
    evals = task.items("eval", 50, seed=0)
    assert not {it.id for it in train} & {it.id for it in evals}
    cores = {split: {(p.item.meta["template"], p.item.id.split("/")[1])
                     for p in bank if p.split == split} for split in ("train", "eval")}
    assert not cores["train"] & cores["eval"]  # a renamed problem stays on its side
    assert [it.id for it in task.items("eval", 50, seed=0)] == [it.id for it in evals]
    assert [it.id for it in task.items("eval", 50, seed=1)] != [it.id for it in evals]
    assert len({it.id for it in evals}) == 50
    n_eval = sum(p.split == "eval" for p in bank)
    with pytest.raises(LayerwiseError, match="eval problems"):
        task.items("eval", n_eval + 1, seed=0)
    assert len(task.items("train", 2000, seed=0)) == 2000  # train may repeat its pool
    with pytest.raises(LayerwiseError):
        task.items("test", 1, seed=0)


def test_registry_and_reward_function_match_score():
    task = get_task("code", n_tests=4, timeout_s=1.0)
    assert task.name == "code" and task.max_new_tokens == 128 and task.description
    items = task.items("train", 3, seed=0)
    completions = [items[0].target, "    return None\n", "```python\nwhile True: pass\n```"]
    rows = [it.to_row() for it in items]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    reward = reward_function(task)
    rewards = reward(completions, prompts=columns["prompt"], **columns)
    assert rewards == [task.score(c, it) for c, it in zip(completions, items)]
    assert rewards[0] == 1.0 and rewards[2] == 0.0


def test_bad_options_are_one_line_errors():
    with pytest.raises(LayerwiseError, match="n_tests"):
        make_task(n_tests=0)
    with pytest.raises(LayerwiseError, match="timeout_s"):
        get_task("code", timeout_s=-1)
    with pytest.raises(LayerwiseError, match="no option"):
        get_task("code", tests=3)
