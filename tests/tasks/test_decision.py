"""The decision task: the guessing environment, its expert, its splits, and multi-turn GRPO in TRL."""

from __future__ import annotations

import random
import re

import pytest
import torch

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import is_correct, sft_examples
from layerwise.tasks.decision import (GuessingGame, cut_turn, episode_completion, first_integer,
                                      make_task)
from layerwise.tasks.registry import get_task


@pytest.fixture(scope="module")
def task():
    return make_task()


# --- the environment ---------------------------------------------------------------------------


def test_env_answers_higher_lower_correct():
    env = GuessingGame(game=7, secret=5, low=1, high=8, max_turns=3)
    opening = env.reset()
    assert opening.startswith("Game 7.") and opening.endswith("Guess 1 of 3:")
    step = env.step(" 3\n")
    assert (step.guess, step.verdict, step.done) == (3, "higher", False)
    assert step.feedback == "Higher.\nGuess 2 of 3:"
    assert env.step(" 7 and 2\n").verdict == "lower"  # the first integer is the guess
    step = env.step("5")  # cut short by the token budget: the reply opens a new line
    assert (step.verdict, step.done, env.success, env.score) == ("correct", True, True, 1.0)
    assert step.feedback == "\nCorrect!"
    with pytest.raises(LayerwiseError, match="over"):
        env.step("5\n")


def test_env_wastes_invalid_turns_and_fails_at_the_limit():
    env = GuessingGame(game=0, secret=5, low=1, high=8, max_turns=3)
    env.reset()
    assert env.step("five\n").verdict == "no number"
    assert env.step(" 9\n").verdict == "out of range"
    last = env.step(" 4\n")
    assert last.done and not env.success and env.score == 0.0
    assert last.feedback == "Higher. No guesses left."
    # The secret on the last turn still counts.
    env.reset()
    for action in ("x\n", "x\n"):
        env.step(action)
    assert env.step("5\n").verdict == "correct" and env.success


def test_cut_turn_keeps_one_line_and_the_blank_after_it():
    assert cut_turn(" 8\n\n  Higher.") == (" 8\n\n  ", "Higher.")
    assert cut_turn(" 8") == (" 8", "")
    assert cut_turn("\n3\n") == ("\n", "3\n")


# --- policies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"low": 1, "high": 100, "max_turns": 7}, {"low": 5, "high": 6}])
def test_expert_wins_every_episode(options):
    task = make_task(**options)
    for split in ("train", "eval"):
        for item in task.items(split, 150, seed=3):
            episode = task.play(task.expert, item)
            assert episode.success and is_correct(episode.score), item.id
            assert len(episode.turns) <= task.expert_turns


def test_constant_guess_fails_unless_the_secret_is_that_guess(task):
    items = task.items("eval", 160, seed=0)
    wins = [task.play(lambda prompts: [" 1\n"] * len(prompts), it).success for it in items]
    assert wins == [it.meta["secret"] == 1 for it in items]
    assert sum(wins) < len(items) / 4


# --- items and SFT data --------------------------------------------------------------------------


def test_splits_are_disjoint_and_deterministic(task):
    train = {it.id for seed in range(3) for it in task.items("train", 300, seed)}
    evals = {it.id for seed in range(3) for it in task.items("eval", 300, seed)}
    assert not train & evals
    assert task.items("train", 20, 5) == task.items("train", 20, 5)
    assert [it.id for it in task.items("train", 20, 5)] != [it.id for it in task.items("train", 20, 6)]
    items = task.items("eval", 300, 0)
    assert len({it.id for it in items}) == 300
    assert {it.meta["secret"] for it in items} == set(range(1, 17))
    for it in items:  # the id names the secret, the prompt does not
        assert it.id.endswith(f"-s{it.answer}") and f"-g{it.meta['game']}-" in it.id
        assert task.item_for_prompt(it.prompt) == it
    with pytest.raises(LayerwiseError, match="split"):
        task.items("test", 1, 0)


def test_sft_targets_are_binary_search_moves(task):
    examples = sft_examples(task, "train", 60, seed=1)
    assert len(examples) == 60
    for prompt, target in examples:
        item = task.item_for_prompt(prompt)
        low, high = 1, 16  # an independent binary search over the feedback in the transcript
        for guess, verdict in re.findall(r" ([0-9]+)\n(Higher|Lower)", prompt[len(item.prompt):]):
            low, high = (int(guess) + 1, high) if verdict == "Higher" else (low, int(guess) - 1)
        assert target == f" {(low + high) // 2}\n"
        assert prompt.endswith(" of 5:") and low <= item.meta["secret"] <= high
    assert examples[0] == (task.items("train", 1, 1)[0].prompt, " 8\n")


def test_score_and_extract_replay_the_same_environment(task):
    rng = random.Random(0)
    pieces = [" 8\n", "12", " 3 4\n\n", "", "\n", "x 16\n", " 40\n", " 5 ", "Lower.\n"]
    for item in task.items("eval", 40, seed=2):
        episode = task.play(lambda prompts: ["".join(rng.choices(pieces, k=2))], item)
        completion = episode_completion(episode)
        assert task.score(completion, item) == episode.score
        guesses = [first_integer(t["action"].split("\n")[0]) for t in episode.turns]
        assert task.extract(completion, item) == ",".join("?" if g is None else str(g) for g in guesses)
    # A bare list of guesses, one a line, is played the same way (and only max_turns of them).
    item = task.item(0)
    secret = item.meta["secret"]
    assert task.score(f"1\n2\n{secret}\n", item) == 1.0
    assert task.score("1\n2\n3\n4\n5\n" + str(secret), item) == (1.0 if secret <= 5 else 0.0)
    assert task.extract("x\n 7\n", item) == "?,7"
    assert task.score("", item) == 0.0 and task.extract("", item) is None


def test_reward_is_the_episode_score_or_the_replayed_completion(task):
    reward = task.make_reward()
    items = task.items("train", 4, seed=0)
    episodes = [task.play(task.expert, it) for it in items[:2]]
    completions = [episode_completion(e) for e in episodes] + [" 1\n", " 16\n"]
    prompts = [it.prompt for it in items]
    # From the rollout: the episode_score field wins.
    assert reward(completions, prompts=prompts, episode_score=[1.0, 0.0, 0.0, 1.0]) == [1.0, 0.0, 0.0, 1.0]
    # Without it (single-turn generation): each completion is replayed through the environment.
    assert reward(completions, prompts=prompts) == [task.score(c, it) for c, it in zip(completions, items)]
    assert reward(completions[:2], prompts=prompts[:2]) == [1.0, 1.0]


def test_make_task_validates_its_options():
    assert get_task("decision", high=8, max_turns=4).expert_turns == 4
    with pytest.raises(LayerwiseError, match="greater than low"):
        make_task(low=5, high=5)
    with pytest.raises(LayerwiseError, match="max_turns"):
        get_task("decision", max_turns=0)
    with pytest.raises(LayerwiseError, match="whole number"):
        make_task(high=8.5)
    with pytest.raises(LayerwiseError, match="not an opening"):
        make_task(high=8).item_for_prompt(make_task().item(3).prompt)


# --- multi-turn GRPO through TRL's rollout_func ------------------------------------------------


def _trainer(tmp_path, task, model, tokenizer, reward, **config):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, logging_steps=1,
                      save_strategy="no", seed=0, **config)
    rows = [it.to_row() for it in task.items("train", 8, seed=0)]
    return GRPOTrainer(model=model, processing_class=tokenizer, args=args, reward_funcs=reward,
                       train_dataset=Dataset.from_list(rows),
                       rollout_func=task.make_rollout_func(tokenizer))


def _digits_only(tokenizer, digits):
    """Generation kwargs that let the random tiny model say only digits, newlines and EOS."""
    allowed = {tokenizer.convert_tokens_to_ids(d) for d in digits}
    allowed |= {tokenizer.convert_tokens_to_ids("Ċ"), tokenizer.eos_token_id}  # Ċ: the newline byte
    return {"suppress_tokens": [i for i in range(len(tokenizer)) if i not in allowed]}


def _turns(ids, mask):
    """[(model token ids, env token ids), ...] from a completion and its env_mask."""
    turns = []
    for token, m in zip(ids, mask):
        if m == 1 and (not turns or turns[-1][1]):
            turns.append(([], []))
        turns[-1][1 - m].append(token)
    return turns


def test_rollout_returns_model_and_env_tokens_with_masks_and_logprobs(tmp_path, monkeypatch):
    from layerwise.models.loading import load_model

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    loaded = load_model("tiny:llama", seed=0)
    model, tokenizer = loaded.model, loaded.tokenizer
    task = make_task(low=1, high=4, max_turns=3)
    trainer = _trainer(tmp_path, task, model, tokenizer, task.make_reward(), max_steps=1,
                       num_generations=2, per_device_train_batch_size=2, max_completion_length=4,
                       temperature=0.7)
    prompts = [it.prompt for it in task.items("train", 3, seed=1) for _ in range(2)]
    out = task.make_rollout_func(tokenizer)(prompts, trainer)

    assert {len(out[k]) for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask",
                                  "episode_score")} == {6}
    model.eval()
    for i, prompt in enumerate(prompts):
        ids, mask, logps = out["completion_ids"][i], out["env_mask"][i], out["logprobs"][i]
        assert len(ids) == len(mask) == len(logps) and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(out["prompt_ids"][i]) == prompt
        # Every model turn is at most the per-turn budget, and each is followed by env tokens.
        runs = "".join(map(str, mask)).split("0")
        assert all(len(r) <= 4 for r in runs) and mask[0] == 1 and mask[-1] == 0
        # The env tokens are the environment's replies to the model's turns, and the decoded
        # transcript replays to the same score.
        item = task.item_for_prompt(prompt)
        env = GuessingGame(item.meta["game"], item.meta["secret"], 1, 4, 3)
        env.reset()
        for action, reply in _turns(ids, mask):
            assert tokenizer.decode(reply, skip_special_tokens=True) == env.step(
                tokenizer.decode(action, skip_special_tokens=True)).feedback
        assert env.done and env.score == out["episode_score"][i]
        assert task.score(tokenizer.decode(ids, skip_special_tokens=True), item) == env.score
        # The log-probabilities are the sampling policy's (temperature 0.7) on the model's tokens.
        full = torch.tensor([out["prompt_ids"][i] + ids])
        with torch.no_grad():
            logits = model(full).logits[0, len(out["prompt_ids"][i]) - 1:-1] / 0.7
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None])[:, 0]
        model_tokens = torch.tensor(mask).bool()
        torch.testing.assert_close(torch.tensor(logps)[model_tokens], expected[model_tokens],
                                   atol=1e-4, rtol=1e-4)
        assert all(lp == 0.0 for lp, m in zip(logps, mask) if m == 0)


def test_grpo_trains_on_whole_episodes(tmp_path, monkeypatch):
    from layerwise.models.loading import load_model

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    loaded = load_model("tiny:llama", seed=0)
    model, tokenizer = loaded.model, loaded.tokenizer
    task = make_task(low=1, high=3, max_turns=2)
    reward = task.make_reward()
    seen = []  # what TRL handed to the reward, step by step

    def spy(completions, prompts, episode_score, **columns):
        seen.append((list(prompts), list(completions), list(episode_score)))
        return reward(completions, prompts=prompts, episode_score=episode_score, **columns)

    spy.__name__ = reward.__name__
    trainer = _trainer(tmp_path, task, model, tokenizer, spy, max_steps=3, num_generations=4,
                       per_device_train_batch_size=4, max_completion_length=3, learning_rate=1e-2,
                       generation_kwargs=_digits_only(tokenizer, "123"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == len(seen) == 3
    for log, (prompts, completions, scores) in zip(logs, seen):
        assert len(set(prompts)) == 1 and len(prompts) == 4  # one group: a prompt, 4 episodes
        # Trainer-independent check: replaying each transcript through the environment gives the
        # score the rollout reported, and the logged reward is their mean.
        item = task.item_for_prompt(prompts[0])
        assert scores == [task.score(c, item) for c in completions]
        assert log["reward"] == pytest.approx(sum(scores) / len(scores))
        assert log["rewards/decision_reward/mean"] == pytest.approx(sum(scores) / len(scores))
    assert any("Guess 2 of 2:" in c for _, completions, _ in seen for c in completions)  # multi-turn episodes
    assert any(len(set(scores)) > 1 for _, _, scores in seen), "no group with a reward signal"
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed
