"""The `decision` task: a number-guessing game that an episode wins or loses over several turns.

"Game 4821. I am thinking of a whole number from 1 to 16. ..." — the model guesses, the environment
answers "Higher." / "Lower." / "Correct!", and the episode succeeds when the number is found within
`max_turns` guesses. It is the smallest environment where a policy has to use feedback: binary
search always wins (1 to 16 needs at most 5 guesses), a constant guess almost never does.

One environment (`GuessingGame`: reset/step) decides everything, so that evaluation, the RL reward
and the SFT data can never disagree:
- `play(generate, item)` runs an episode with any `generate(prompts) -> completions` (evaluation);
- the TRL `rollout_func` (`make_rollout_func`) runs the same episodes token by token on the policy
  being trained, and `make_reward()` returns the score those episodes reached;
- `score(completion, item)` replays a completion through the environment, so a whole transcript
  (what `play` and the rollout produce after the prompt) or a bare list of guesses, one per line,
  gets exactly the score the environment gives it;
- `sft_examples` are the binary-search expert's moves in the states of its own episodes.

A turn is one line: the model's text up to its first newline (and any whitespace right after it;
the environment ignores the rest of a generation), the guess is the first integer in it, and a turn
without a number in range is wasted. The score is 1.0 for a success and 0.0 otherwise: no partial
credit, so the reward and the accuracy (`is_correct`) count the same thing.

The rollout only receives prompt strings from TRL, so an episode is a function of its prompt: the
prompt names its game number and the secret is a stable hash of that number, unguessable from the
text. Splits are decided by another hash of the game number, so train and eval never share a game.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import Episode, TaskItem, check_split

NUM_GAMES = 1_000_000  # game numbers 0..NUM_GAMES-1; a fifth of them form the eval split
EVAL_EVERY = 5
_INTEGER = re.compile(r"-?[0-9]+")
_TURN = re.compile(r"[^\n]*\n\s*")  # one line, its newline and the blank space right after it
_GAME = re.compile(r"\bGame ([0-9]+)\.")


def _stable_hash(text: str) -> int:
    """A hash that is the same in every process and Python version (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def first_integer(text: str) -> int | None:
    match = _INTEGER.search(text)
    return int(match.group()) if match else None


def cut_turn(text: str) -> tuple[str, str]:
    """(the first turn of `text`, the rest): a turn ends after its first newline and blank space."""
    match = _TURN.match(text)
    end = match.end() if match else len(text)
    return text[:end], text[end:]


def episode_completion(episode: Episode) -> str:
    """The transcript after the opening prompt: each action followed by the environment's reply."""
    return "".join(turn["action"] + turn["feedback"] for turn in episode.turns)


@dataclass(frozen=True)
class Step:
    """What the environment made of one action."""

    guess: int | None  # None: no integer in the action
    verdict: str  # "higher", "lower", "correct", "out of range" or "no number"
    feedback: str  # the text appended to the transcript after the action
    done: bool


class GuessingGame:
    """The environment: a secret in [low, high], a turn limit, and the reply to each guess."""

    def __init__(self, game: int, secret: int, low: int, high: int, max_turns: int):
        self.game, self.secret = game, secret
        self.low, self.high, self.max_turns = low, high, max_turns
        self.turn, self.done, self.success = 0, False, False

    def reset(self) -> str:
        """Start the episode; returns the opening prompt."""
        self.turn, self.done, self.success = 0, False, False
        return (f"Game {self.game}. I am thinking of a whole number from {self.low} to {self.high}. "
                f"Find it in at most {self.max_turns} guesses. After each guess I answer higher, "
                f"lower or correct. Reply with a number only.\n{self._ask()}")

    def _ask(self) -> str:
        return f"Guess {self.turn + 1} of {self.max_turns}:"

    @property
    def score(self) -> float:
        return 1.0 if self.success else 0.0

    def step(self, action: str) -> Step:
        """Read one turn's text, spend a turn, and answer."""
        if self.done:
            raise LayerwiseError(f"game {self.game} is over; reset() before stepping again")
        guess = first_integer(action.split("\n", 1)[0])
        self.turn += 1
        if guess is None:
            verdict = "no number"
        elif not self.low <= guess <= self.high:
            verdict = "out of range"
        else:
            verdict = "correct" if guess == self.secret else "higher" if guess < self.secret else "lower"
        self.success = verdict == "correct"
        self.done = self.success or self.turn >= self.max_turns
        reply = {"correct": "Correct!", "higher": "Higher.", "lower": "Lower.", "no number": "No number.",
                 "out of range": f"Out of range ({self.low} to {self.high})."}[verdict]
        reply += " No guesses left." if self.done and not self.success else ""
        reply += "" if self.done else "\n" + self._ask()
        # The reply starts on its own line: an action cut short by the token budget has no newline.
        separator = "" if "\n" in action else "\n"
        return Step(guess=guess, verdict=verdict, feedback=separator + reply, done=self.done)


class DecisionTask:
    """Number guessing over several turns (see the module docstring)."""

    name = "decision"
    episodic = True

    def __init__(self, low: int, high: int, max_turns: int, max_new_tokens: int):
        self.low, self.high, self.max_turns = low, high, max_turns
        self.max_new_tokens = max_new_tokens
        self.expert_turns = (high - low + 1).bit_length()  # binary search's worst case
        self.description = (
            f"guess a whole number from {low} to {high} in at most {max_turns} turns, with "
            f"higher/lower feedback after each guess; an episode succeeds when the number is found "
            f"(binary search needs at most {self.expert_turns} guesses)")

    # --- items -------------------------------------------------------------------------------

    def _secret(self, game: int) -> int:
        return self.low + _stable_hash(f"decision-secret:{game}") % (self.high - self.low + 1)

    def _game(self, game: int) -> GuessingGame:
        return GuessingGame(game, self._secret(game), self.low, self.high, self.max_turns)

    def item(self, game: int) -> TaskItem:
        """The episode of game number `game` (whatever its split)."""
        env = self._game(game)
        prompt = env.reset()
        return TaskItem(
            id=f"decision-{self.low}-{self.high}-t{self.max_turns}-g{game}-s{env.secret}",
            prompt=prompt, answer=str(env.secret), target=self._expert_move([]),
            meta={"game": game, "secret": env.secret, "low": self.low, "high": self.high,
                  "max_turns": self.max_turns})

    def _games(self, split: str, seed: int):
        """Distinct game numbers of `split`, in a random order fixed by `seed`."""
        check_split(split)
        rng, seen = random.Random(f"decision:{split}:{seed}"), set()
        while True:
            game = rng.randrange(NUM_GAMES)
            in_eval = _stable_hash(f"decision-split:{game}") % EVAL_EVERY == 0
            if game not in seen and in_eval == (split == "eval"):
                seen.add(game)
                yield game

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        if n > NUM_GAMES // (2 * EVAL_EVERY):
            raise LayerwiseError(f"decision task: n={n} items is more than the "
                                 f"{NUM_GAMES // (2 * EVAL_EVERY)} a split can hold")
        games = self._games(split, seed)
        return [self.item(next(games)) for _ in range(n)]

    def item_for_prompt(self, prompt: str) -> TaskItem:
        """The item whose episode `prompt` (an opening or a transcript) belongs to."""
        match = _GAME.search(prompt)
        item = self.item(int(match.group(1))) if match else None
        if item is None or not prompt.startswith(item.prompt):
            raise LayerwiseError(
                f"prompt {prompt[:60]!r}... is not an opening of this decision task "
                f"(low={self.low}, high={self.high}, max_turns={self.max_turns})")
        return item

    # --- scoring: a completion replayed through the environment ------------------------------

    def replay(self, completion: str, item: TaskItem) -> tuple[GuessingGame, list[Step]]:
        """Feed `completion` to a fresh environment one turn at a time.

        Where the completion already holds the environment's reply to a turn (a transcript), the
        reply is skipped; anything else is read as the next turn, so a bare list of guesses works
        too and an invented reply is just a wasted turn.
        """
        env, steps, rest = self._game(int(item.meta["game"])), [], completion
        env.reset()
        while rest and not env.done:
            action, rest = cut_turn(rest)
            step = env.step(action)
            if rest.startswith(step.feedback):
                rest = rest[len(step.feedback):]
            steps.append(step)
        return env, steps

    def score(self, completion: str, item: TaskItem) -> float:
        return self.replay(completion, item)[0].score

    def extract(self, completion: str, item: TaskItem) -> str | None:
        """The guesses read from the completion, comma-separated ("?" for a turn without a number)."""
        steps = self.replay(completion, item)[1]
        return ",".join("?" if s.guess is None else str(s.guess) for s in steps) or None

    # --- playing: evaluation and the expert ---------------------------------------------------

    def play(self, generate: Callable[[list[str]], list[str]], item: TaskItem) -> Episode:
        """One episode: the transcript grows by the model's turn and the environment's reply."""
        env = self._game(int(item.meta["game"]))
        transcript, turns = env.reset(), []
        while not env.done:
            action, _ = cut_turn(generate([transcript])[0])
            step = env.step(action)
            turns.append({"prompt": transcript, "action": action, "feedback": step.feedback})
            transcript += action + step.feedback
        return Episode(success=env.success, score=env.score, turns=turns)

    def _expert_move(self, steps: list[Step]) -> str:
        """Binary search: the middle of what the replies so far leave possible."""
        low, high = self.low, self.high
        for step in steps:
            if step.verdict == "higher":
                low = max(low, step.guess + 1)
            elif step.verdict == "lower":
                high = min(high, step.guess - 1)
        return f" {(low + high) // 2}\n"

    def expert(self, prompts: list[str]) -> list[str]:
        """A `generate` function that plays binary search from the transcripts (never the secret)."""
        moves = []
        for transcript in prompts:
            item = self.item_for_prompt(transcript)
            moves.append(self._expert_move(self.replay(transcript[len(item.prompt):], item)[1]))
        return moves

    def sft_examples(self, split: str, n: int, seed: int) -> list[tuple[str, str]]:
        """(transcript so far, expert guess) for every turn of expert episodes, `n` in all."""
        examples, games = [], self._games(split, seed)
        while len(examples) < n:
            episode = self.play(self.expert, self.item(next(games)))
            examples += [(turn["prompt"], turn["action"]) for turn in episode.turns]
        return examples[:n]

    # --- RL: multi-turn rollouts for TRL's GRPOTrainer ---------------------------------------

    def make_rollout_func(self, tokenizer) -> Callable[[list[str], Any], dict[str, list]]:
        """A TRL `rollout_func(prompts, trainer)` that plays whole episodes with `trainer.model`.

        TRL hands it the batch's prompts already repeated `num_generations` times (its sampler
        repeats each prompt), so it plays one episode per prompt. Per episode it returns
        `prompt_ids`; `completion_ids`, the model's tokens and the environment's reply tokens of
        every turn, ending with EOS so TRL does not count the episode as truncated; `logprobs`, the
        sampled tokens' log-probabilities under the sampling distribution (after temperature,
        top-k/top-p) and 0.0 on reply tokens (only read by TRL's importance-sampling and
        off-policy-mask code); `env_mask`, 1 on the model's tokens and 0 on the environment's, so
        only the model's own tokens are trained; and `episode_score`, which TRL forwards to the
        reward functions (see `make_reward`).

        Sampling follows `trainer.args` (temperature, top_p, top_k, min_p, repetition_penalty,
        generation_kwargs). A turn ends at the first token whose text holds a newline, at EOS, or
        after min(`max_new_tokens`, `args.max_completion_length`) tokens: the turn limit bounds an
        episode, so `max_completion_length` is a per-turn budget, not a cap on the whole transcript
        (a cap would end RL episodes that evaluation lets finish). Generation always runs through
        `generate` on the trained model, also when the trainer has vLLM configured.
        """
        stop_ids = _newline_token_ids(tokenizer) + _eos_ids(tokenizer)

        def rollout(prompts: list, trainer) -> dict[str, list]:
            if not all(isinstance(p, str) for p in prompts):
                raise LayerwiseError("the decision task's prompts are plain text; got conversational "
                                     "prompts (build the dataset from TaskItem.to_row())")
            from trl.models import unwrap_model_for_generation  # TRL only when training

            args = trainer.args
            budget = min(self.max_new_tokens, args.max_completion_length or self.max_new_tokens)
            config = _sampling_config(args, tokenizer, stop_ids, budget)
            runs = [_Rollout(self._game(self.item_for_prompt(p).meta["game"]), p, tokenizer)
                    for p in prompts]
            with unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator,
                gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as model, torch.no_grad():
                while active := [run for run in runs if not run.env.done]:
                    turns = _sample_turn(model, [run.context for run in active], config)
                    for run, (ids, logps) in zip(active, turns):
                        run.add_turn(ids, logps)
            for run in runs:
                run.finish()
            return {"prompt_ids": [r.prompt_ids for r in runs],
                    "completion_ids": [r.completion_ids for r in runs],
                    "logprobs": [r.logprobs for r in runs],
                    "env_mask": [r.env_mask for r in runs],
                    "episode_score": [r.env.score for r in runs]}

        return rollout

    def make_reward(self) -> Callable[..., list[float]]:
        """A TRL reward: the episode score the rollout reached (field `episode_score`).

        Without the rollout (plain single-turn generation) there is no `episode_score`, and each
        completion is replayed through the environment instead, which gives the same number.
        """

        def reward(completions, prompts=None, episode_score=None, **_):
            if episode_score is not None:
                return [float(s) for s in episode_score]
            return [self.score(_text(c), self.item_for_prompt(_text(p)))
                    for c, p in zip(completions, prompts)]

        reward.__name__ = f"{self.name}_reward"
        return reward


def _text(message) -> str:
    """A prompt or completion as text (conversational ones: their messages' contents joined)."""
    return message if isinstance(message, str) else "".join(m["content"] for m in message)


class _Rollout:
    """One episode being played in token space: the context grows turn by turn."""

    def __init__(self, env: GuessingGame, prompt: str, tokenizer):
        self.env, self.tokenizer = env, tokenizer
        env.reset()
        self.prompt_ids = tokenizer(prompt)["input_ids"]  # as TRL tokenizes plain-text prompts
        self.completion_ids, self.logprobs, self.env_mask = [], [], []

    @property
    def context(self) -> list[int]:
        # Token ids, never re-tokenized text: the trainer scores exactly these ids.
        return self.prompt_ids + self.completion_ids

    def _append(self, ids: list[int], logprobs: list[float], mask: int) -> None:
        self.completion_ids += ids
        self.logprobs += logprobs
        self.env_mask += [mask] * len(ids)

    def add_turn(self, ids: list[int], logprobs: list[float]) -> None:
        # With tokenizers whose newline tokens are blank after the newline (byte-level BPE as in
        # GPT-2, SmolLM2, the tiny byte tokenizer), this action equals `cut_turn(action)[0]`, so
        # `score` replays the decoded transcript to the same result.
        action = self.tokenizer.decode(ids, skip_special_tokens=True)
        step = self.env.step(action)
        self._append(ids, logprobs, 1)
        reply = self.tokenizer(step.feedback, add_special_tokens=False)["input_ids"]
        self._append(reply, [0.0] * len(reply), 0)

    def finish(self) -> None:
        # The episode is over, not cut short: a closing EOS keeps TRL from counting it as truncated.
        eos = _eos_ids(self.tokenizer)
        self._append(eos, [0.0] * len(eos), 0)


def _eos_ids(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _newline_token_ids(tokenizer) -> list[int]:
    """The ids of every token whose text contains a newline: each one ends a turn."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return [i for i, text in enumerate(texts) if "\n" in text]


def _sampling_config(args, tokenizer, stop_ids: list[int], budget: int):
    """A GenerationConfig with the trainer's sampling settings, stopping at the end of a turn."""
    from transformers import GenerationConfig

    kwargs = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p,
              "top_k": args.top_k, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
              else tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id}
    kwargs.update(args.generation_kwargs or {})
    extra_stops = kwargs.get("eos_token_id") or []
    extra_stops = [extra_stops] if isinstance(extra_stops, int) else list(extra_stops)
    kwargs.update(max_new_tokens=budget, eos_token_id=stop_ids + extra_stops,
                  output_scores=True, return_dict_in_generate=True)
    return GenerationConfig(**kwargs, disable_compile=True)


def _sample_turn(model, contexts: list[list[int]], config):
    """One turn for every context: (sampled ids up to the turn's end, their log-probabilities)."""
    stop_ids = set(config.eos_token_id)
    device = next(model.parameters()).device
    width = max(len(c) for c in contexts)
    pad = config.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts],
                                  device=device)  # (B, T), left-padded
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    new = out.sequences[:, width:].tolist()  # (B, steps)
    # The scores are the processed logits the tokens were sampled from, so these are the
    # sampling policy's log-probabilities.
    logps = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).tolist()
    turns = []
    for ids, lps in zip(new, logps):
        end = next((i + 1 for i, t in enumerate(ids) if t in stop_ids), len(ids))
        turns.append((ids[:end], lps[:end]))
    return turns


def make_task(low: int = 1, high: int = 16, max_turns: int = 5, max_new_tokens: int = 8) -> DecisionTask:
    """The decision task: guess a number in [low, high] within `max_turns` turns.

    `max_new_tokens` is the per-turn generation budget.
    """
    for key, value in (("low", low), ("high", high), ("max_turns", max_turns),
                       ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise LayerwiseError(f"decision task: {key} must be a whole number, got {value!r}")
    if high <= low:
        raise LayerwiseError(f"decision task: high ({high}) must be greater than low ({low})")
    if max_turns < 1 or max_new_tokens < 1:
        raise LayerwiseError(f"decision task: max_turns ({max_turns}) and max_new_tokens "
                             f"({max_new_tokens}) must be at least 1")
    return DecisionTask(low, high, max_turns, max_new_tokens)
