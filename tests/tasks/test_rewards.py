"""Rewards: the built-ins on right and wrong answers, user reward files written for TRL, every
refusal as one line, the weighted sum TRL takes, and a real GRPOTrainer step with our rewards."""

from __future__ import annotations

import math
import textwrap

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tasks.rewards import (REFERENCE_COLUMNS, REWARDS, check_rewards, contains_reward,
                                     describe, exact_reward, math_reward, parse_reward_specs,
                                     reward_funcs, reward_rows, reward_weights, score_completions)

GSM8K_SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _user_file(tmp_path, body: str, name: str = "my_rewards.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


# --- the built-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize("completion, solution, expected", [
    ("The answer is 72.", "72", 1.0),
    ("She sold 24 then 48, so #### 72", GSM8K_SOLUTION, 1.0),
    (r"So the total is \boxed{72}.", GSM8K_SOLUTION, 1.0),
    (r"The answer is $\frac{1}{3}$", r"\frac{1}{3}", 1.0),
    ("#### 1,000", "1000", 1.0),
    ("The answer is 73.", "72", 0.0),
    ("#### 7", "The answer is $\\frac{1}{2}$ of 14.\n#### 7", 1.0),  # read after the last ####
    ("#### 71", GSM8K_SOLUTION, 0.0),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{3}", 0.0),
    ("I do not know.", "72", 0.0),
    ("The answer is 72.", "no number here", None),  # gold unparsable: not applicable, as in TRL
])
def test_math_reads_plain_numbers_gsm8k_marks_and_latex(completion, solution, expected):
    assert math_reward([completion], solution=[solution]) == [expected]


def test_math_scores_plain_numbers_that_trls_accuracy_reward_scores_zero():
    from trl.rewards import accuracy_reward

    completions = [_messages("... so she sold #### 72"), _messages("The answer is 72.")]
    assert accuracy_reward(completions, solution=["72", "72"]) == [0.0, 0.0]  # LaTeX only
    assert math_reward(completions, solution=["72", "72"]) == [1.0, 1.0]


def test_conversational_completions_are_read_from_the_last_message():
    completions = [_messages("#### 72"),
                   [{"role": "assistant", "content": "#### 5"}, {"role": "assistant", "content": "#### 72"}],
                   _messages("#### 5")]
    for reward in (math_reward, contains_reward):
        assert reward(completions, answer=["72"] * 3) == [1.0, 1.0, 0.0]


def test_exact_and_contains():
    completions = [" Paris\n", "Paris.", "It is Paris, of course", "London"]
    assert exact_reward(completions, reference=["Paris"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert contains_reward(completions, reference=["Paris"] * 4) == [1.0, 1.0, 1.0, 0.0]
    assert contains_reward(["It is Paris."], reference=[" Paris\n"]) == [1.0]  # stripped first
    assert contains_reward(["anything"], reference=[""]) == [None]  # "" is in every completion
    assert exact_reward(["72"], ground_truth=[72]) == [1.0]  # a numeric column compares as text


def test_reference_columns_are_read_in_order():
    assert REFERENCE_COLUMNS == ("solution", "answer", "reference", "ground_truth")
    # `solution` wins over `answer`, `answer` over `reference`
    assert exact_reward(["72"], answer=["73"], solution=["72"]) == [1.0]
    assert exact_reward(["72"], reference=["73"], answer=["72"]) == [1.0]
    assert exact_reward(["72"], ground_truth=["73"], reference=["72"]) == [1.0]


def test_a_prompt_completion_datasets_completion_is_the_reference():
    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "completion": _messages("4")},
            {"prompt": [{"role": "user", "content": "3+3?"}], "completion": _messages("6")}]
    assert [r["reference"] for r in reward_rows(rows)] == ["4", "6"]
    specs = parse_reward_specs(["exact"])
    assert score_completions(specs, [_messages("4"), _messages("7")], rows) == [1.0, 0.0]
    check_rewards(specs, rows)  # the references, as conversational completions, score fine
    with_answer = [{**r, "answer": "5"} for r in rows]
    assert reward_rows(with_answer) is with_answer  # a real reference column is kept as it is


def test_weights_are_parsed_and_given_to_trl_in_order():
    specs = parse_reward_specs(["math=0.5", "exact", "contains=-2"])
    assert reward_weights(specs) == [0.5, 1.0, -2.0]
    assert reward_funcs(specs) == [math_reward, exact_reward, contains_reward]
    assert [s.metric_name for s in specs] == ["math_reward", "exact_reward", "contains_reward"]
    rows = [{"prompt": "q", "solution": "72"}]
    assert score_completions(specs, ["72"], rows) == [0.5 + 1.0 - 2.0]


def test_describe_lists_every_builtin_and_the_file_form():
    text = describe()
    for name, reward in REWARDS.items():
        assert f"{name}  " in text and reward.description in text
    assert "FILE.py:FUNCTION" in text and "=WEIGHT" in text


# --- user reward files --------------------------------------------------------------------------

TRL_STYLE = """
def brevity(completions, **kwargs):
    # written for TRL: reads the trainer state and logs a metric, as TRL lets it
    kwargs["log_metric"]("mean_length", sum(len(c) for c in completions) / len(completions))
    assert kwargs["trainer_state"].global_step == 0
    return [1.0 / (1 + len(c)) for c in completions]

def only_math(completions, kind, **kwargs):
    return [float("7" in c) if k == "math" else None for c, k in zip(completions, kind)]
"""


def test_a_trl_reward_file_works_unchanged(tmp_path):
    path = _user_file(tmp_path, TRL_STYLE)
    specs = parse_reward_specs([f"{path}:brevity=2", f"{path}:only_math"])
    assert [s.weight for s in specs] == [2.0, 1.0] and [s.builtin for s in specs] == [None, None]
    rows = [{"prompt": "a", "kind": "math"}, {"prompt": "b", "kind": "chat"}]
    check_rewards(specs, rows)  # no reference column: user rewards get a dummy completion
    assert specs[1].function(["7", "7"], kind=["math", "chat"]) == [1.0, None]
    assert score_completions(specs, ["7", "abc"], rows) == [2 * 0.5 + 1.0, 2 * 0.25]


def test_score_completions_is_trls_weighted_nansum(tmp_path):
    path = _user_file(tmp_path, """
        def a(completions, **kwargs):
            return [1.0, None, None]

        def b(completions, **kwargs):
            return [0.5, 2.0, None]
    """)
    specs = parse_reward_specs([f"{path}:a=2", f"{path}:b=3"])
    scores = score_completions(specs, ["x", "y", "z"], [{"prompt": "p"}] * 3)
    assert scores[:2] == [2 * 1.0 + 3 * 0.5, 3 * 2.0]  # None counts as nothing in the sum
    assert math.isnan(scores[2])  # every reward said "not applicable": unscorable, as in TRL


# --- refusals, each one line naming the problem -------------------------------------------------

BAD = """
def raises(completions, **kwargs):
    raise ValueError("boom")

def short(completions, **kwargs):
    return [1.0]

def nan(completions, **kwargs):
    return [float("nan")] * len(completions)

def inf(completions, **kwargs):
    return [float("inf")] * len(completions)

def text(completions, **kwargs):
    return ["good"] * len(completions)

def scalar(completions, **kwargs):
    return 1.0

def needs_column(completions, difficulty, **kwargs):
    return [0.0] * len(completions)

def no_kwargs(completions):
    return [0.0] * len(completions)

def digits(completions, **kwargs):
    return [float(int(c)) for c in completions]

not_a_function = 3
"""


@pytest.mark.parametrize("function, message", [
    ("raises", "'{path}:raises' failed: ValueError: boom"),
    ("short", "returned 1 rewards for 2 completions"),
    ("nan", "returned nan for completion 0; rewards must be finite"),
    ("inf", "returned inf for completion 0; rewards must be finite"),
    ("text", "returned str 'good' for completion 0; rewards must be numbers"),
    ("scalar", "returned a float; it must return a list"),
    ("needs_column", "missing 1 required positional argument: 'difficulty'"),
])
def test_check_refuses_a_broken_reward(tmp_path, function, message):
    path = _user_file(tmp_path, BAD)
    specs = parse_reward_specs([f"{path}:{function}"])
    with pytest.raises(LayerwiseError) as err:
        check_rewards(specs, [{"prompt": "a", "solution": "1"}, {"prompt": "b", "solution": "2"}])
    assert message.format(path=path) in str(err.value)
    assert "\n" not in str(err.value)


def test_check_scores_given_completions_else_references_else_a_dummy(tmp_path):
    specs = parse_reward_specs([f"{_user_file(tmp_path, BAD)}:digits"])
    with_reference = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    check_rewards(specs, with_reference)  # the references "1" and "2" are digits
    without = [{"prompt": "a"}, {"prompt": "b"}]
    with pytest.raises(LayerwiseError, match="ValueError: invalid literal for int"):
        check_rewards(specs, without)  # the dummy answer is not
    check_rewards(specs, without, completions_for_rows=["3", "4"])


def test_check_gives_conversational_completions_for_conversational_prompts(tmp_path):
    path = _user_file(tmp_path, """
        def same_shape(completions, prompts, **kwargs):
            assert all(isinstance(c, list) == isinstance(p, list) for c, p in zip(completions, prompts))
            return [1.0] * len(completions)
    """)
    specs = parse_reward_specs([f"{path}:same_shape"])
    check_rewards(specs, [{"prompt": "2+2?"}])
    check_rewards(specs, [{"prompt": [{"role": "user", "content": "2+2?"}]}])
    with pytest.raises(LayerwiseError, match="AssertionError"):
        check_rewards(specs, [{"prompt": [{"role": "user", "content": "2+2?"}]}], ["4"])


def test_check_refuses_a_builtin_without_a_reference_column():
    with pytest.raises(LayerwiseError) as err:
        check_rewards(parse_reward_specs(["math"]), [{"prompt": "a", "question": "q", "id": 1}])
    assert str(err.value) == ("reward 'math' compares with a reference: no reference column: looked "
                              "for solution, answer, reference, ground_truth (or a prompt-completion "
                              "'completion'); the rows have prompt, question, id")


@pytest.mark.parametrize("spec, message", [
    ("mathh", "unknown reward 'mathh'; valid: math, exact, contains, or FILE.py:FUNCTION"),
    ("math=abc", "weight 'abc' is not a finite number"),
    ("math=nan", "weight 'nan' is not a finite number"),
    ("{dir}/absent.py:f", "reward file {dir}/absent.py does not exist"),
    ("{dir}/broken.py:f", "failed to import: ModuleNotFoundError: No module named 'no_such_module'"),
    ("{dir}/bad.py:missing", "does not define a function 'missing'; callables defined there: digits, "
                             "inf, nan, needs_column, no_kwargs, raises, scalar, short, text"),
    ("{dir}/bad.py:not_a_function", "does not define a function 'not_a_function'"),
    ("{dir}/bad.py:no_kwargs", "takes (completions); TRL calls rewards by keyword as "
                               "f(completions, **kwargs): it needs **kwargs"),
])
def test_parse_refuses_a_bad_spec(tmp_path, spec, message):
    _user_file(tmp_path, BAD, "bad.py")
    _user_file(tmp_path, "import no_such_module\n", "broken.py")
    with pytest.raises(LayerwiseError) as err:
        parse_reward_specs([spec.format(dir=tmp_path)])
    assert message.format(dir=tmp_path) in str(err.value)


def test_parse_refuses_two_rewards_trl_would_log_under_one_name(tmp_path):
    first = _user_file(tmp_path, TRL_STYLE, "one.py")
    second = _user_file(tmp_path, TRL_STYLE, "two.py")
    with pytest.raises(LayerwiseError, match="share the name 'brevity'"):
        parse_reward_specs([f"{first}:brevity", f"{second}:brevity"])
    with pytest.raises(LayerwiseError, match="share the name 'math_reward'"):
        parse_reward_specs(["math", "math=2"])


# --- a real GRPOTrainer step --------------------------------------------------------------------

RECORDER = """
CALLS = []

def length_parity(completions, solution, **kwargs):
    CALLS.append({"completions": list(completions), "prompts": list(kwargs["prompts"]),
                  "solution": list(solution)})
    return [float(len(c) % 2) if i % 2 else None for i, c in enumerate(completions)]
"""


def test_grpo_trainer_takes_our_rewards_and_weights_and_scores_as_we_do(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from layerwise.models import load_model

    path = _user_file(tmp_path, RECORDER)
    specs = parse_reward_specs(["math=0.5", f"{path}:length_parity=2", "contains"])
    lm = load_model("tiny:llama", seed=0)
    if lm.tokenizer.pad_token is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    rows = [{"prompt": f"Q{i}: 7+{i}=", "solution": str(7 + i)} for i in range(4)]
    check_rewards(specs, rows)
    calls = specs[1].function.__globals__["CALLS"]
    assert len(calls) == 1  # the check called it as TRL does: once, on all rows at once
    calls.clear()
    args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=4, use_cpu=True, report_to=[],
                      logging_steps=1, save_strategy="no", seed=0, reward_weights=reward_weights(specs))
    trainer = GRPOTrainer(model=lm.model, processing_class=lm.tokenizer, args=args,
                          reward_funcs=reward_funcs(specs), train_dataset=Dataset.from_list(rows))
    trainer.train()
    logged = next(entry for entry in trainer.state.log_history if "reward" in entry)
    for spec in specs:
        assert f"rewards/{spec.metric_name}/mean" in logged
    # TRL's combined reward for the batch equals ours on the same completions and rows
    assert len(calls) == 1 and len(calls[0]["completions"]) == 4
    seen = [{"prompt": p, "solution": s} for p, s in zip(calls[0]["prompts"], calls[0]["solution"])]
    ours = score_completions(specs, calls[0]["completions"], seen)
    scorable = [s for s in ours if not math.isnan(s)]
    assert logged["reward"] == pytest.approx(sum(scorable) / len(scorable), abs=1e-6)
