"""`lm`: language modelling on windows of a text, the task whose score is a held-out loss.

There are no prompts and no answers: SFT trains on non-overlapping windows of `seq_len` tokens of
the `train` text, every token a target, in an order drawn from the seed. Evaluation is the mean
next-token cross-entropy in nats (perplexity = exp(loss)) over the first `n` windows of the `eval`
text: the same windows whatever the seed, so base and trained models are scored on one set.

By default training reads WikiText-2 validation and evaluation reads WikiText-2 test, from
`../shared/data/wikitext2_{valid,test}.txt` beside the checkout (found from the working directory
or from this source tree). Lower is better (`higher_is_better = False`); C(k) uses the loss as
its score S unchanged (docs/lm.md).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from layerwise.data.corpus import load_corpus
from layerwise.errors import LayerwiseError
from layerwise.evaluation.perplexity import mean_nll, perplexity_from_nll
from layerwise.evaluation.task_eval import TaskEvaluation
from layerwise.tasks.base import TaskItem, check_split

log = logging.getLogger(__name__)

DEFAULT_TRAIN = "wikitext2_valid.txt"
DEFAULT_EVAL = "wikitext2_test.txt"
SHARED_DATA = Path("../shared/data")
NO_ITEMS = ("the lm task trains on text windows: use --method sft (it has no prompt items for RL "
            "or DPO)")
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".md")


def shared_data_candidates(name: str) -> list[Path]:
    """Where `../shared/data/<name>` may be: beside the working directory, or the source tree."""
    checkout = Path(__file__).resolve().parents[3]  # src/layerwise/tasks/lm.py -> the checkout
    found: list[Path] = []
    for path in (Path.cwd() / SHARED_DATA / name, checkout / SHARED_DATA / name):
        if path.resolve() not in found:
            found.append(path.resolve())
    return found


def default_text(name: str, option: str) -> str:
    for path in shared_data_candidates(name):
        if path.is_file():
            return str(path)
    looked = ", ".join(str(p) for p in shared_data_candidates(name))
    raise LayerwiseError(f"the lm task's default {option} text {SHARED_DATA / name} is missing "
                         f"(looked in {looked}); pass --task-option {option}=FILE")


def _check_local(source: str, option: str) -> None:
    """A source that names a local file must exist (an hf:NAME source is checked when read)."""
    if source.startswith("hf:") or Path(source).suffix.lower() not in _FILE_SUFFIXES:
        return
    if not Path(source).expanduser().is_file():
        raise LayerwiseError(f"lm {option} file {source} does not exist; expected a .txt or "
                             f".jsonl file or hf:NAME[:CONFIG][@SPLIT]")


def tokenizer_fingerprint(tokenizer) -> str:
    """Two tokenizers with the same fingerprint cut a text into the same ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else (
        f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}:{id(tokenizer)}")
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class LMTask:
    train: str | None = None
    eval: str | None = None
    seq_len: int = 128
    text_field: str = "text"
    name: str = "lm"
    kind: str = "lm"
    metric: str = "loss"  # mean next-token cross-entropy, nats
    higher_is_better: bool = False
    max_new_tokens: int = 0
    _windows: dict[tuple[str, str, int], torch.Tensor] = field(
        default_factory=dict, init=False, repr=False)  # (tokenizer, source, seq_len) -> windows

    def __post_init__(self):
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise LayerwiseError(f"lm seq_len={self.seq_len!r}: must be a whole number >= 2 "
                                 "(a window predicts its tokens from the ones before)")
        self.train = str(self.train) if self.train else default_text(DEFAULT_TRAIN, "train")
        self.eval = str(self.eval) if self.eval else default_text(DEFAULT_EVAL, "eval")
        _check_local(self.train, "train")
        _check_local(self.eval, "eval")
        self.description = (f"language modelling: next-token loss on {self.seq_len}-token windows; "
                            f"train {self.train}, held-out {self.eval}")

    def source(self, split: str) -> str:
        check_split(split)
        return self.train if split == "train" else self.eval

    def windows(self, tokenizer, split: str) -> torch.Tensor:
        """(W, seq_len) token ids: every whole window of the split's text, in text order."""
        source = self.source(split)
        key = (tokenizer_fingerprint(tokenizer), source, self.seq_len)
        if key not in self._windows:
            text = load_corpus(source, self.text_field).text
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            count = len(ids) // self.seq_len
            if count == 0:
                raise LayerwiseError(f"lm {split} text {source} has {len(ids)} tokens, too few "
                                     f"for one window of seq_len={self.seq_len}; use a longer "
                                     "text or a smaller seq_len")
            usable = torch.tensor(ids[:count * self.seq_len], dtype=torch.long)
            self._windows[key] = usable.view(count, self.seq_len)  # (W, T)
        return self._windows[key]

    def _take(self, windows: torch.Tensor, n: int, split: str) -> int:
        if n < 1:
            raise LayerwiseError(f"lm: asked for {n} {split} windows; use at least 1")
        if n > len(windows):
            log.info("lm: %d %s windows asked for, the text has %d: using all of them",
                     n, split, len(windows))
        return min(n, len(windows))

    def train_dataset(self, tokenizer, n: int, seed: int):
        """`n` train windows in a seed-drawn order, as a pre-tokenized `input_ids` dataset."""
        from datasets import Dataset

        windows = self.windows(tokenizer, "train")
        take = self._take(windows, n, "train")
        order = list(range(len(windows)))
        random.Random(f"lm-train-{seed}").shuffle(order)
        return Dataset.from_dict({"input_ids": windows[order[:take]].tolist()})

    def evaluate(self, model, tokenizer, n: int, seed: int = 0, batch_size: int = 8,
                 split: str = "eval") -> TaskEvaluation:
        """Mean next-token loss over the first `n` windows of `split` (the seed changes nothing)."""
        windows = self.windows(tokenizer, split)
        windows = windows[:self._take(windows, n, split)]
        start = time.perf_counter()
        was_training = model.training
        model.eval()  # dropout off: the loss of the model, not of a random sub-network
        try:
            loss = mean_nll(model, windows, batch_size)
        finally:
            model.train(was_training)
        return TaskEvaluation(task=self.name, split=split, n=len(windows), seed=seed,
                              accuracy=None, mean_score=None,
                              seconds=time.perf_counter() - start, loss=loss,
                              perplexity=perplexity_from_nll(loss))

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        raise LayerwiseError(NO_ITEMS)

    def score(self, completion: str, item: TaskItem) -> float:
        raise LayerwiseError(NO_ITEMS)

    def extract(self, completion: str, item: TaskItem) -> str | None:
        raise LayerwiseError(NO_ITEMS)


def make_task(train: str | None = None, eval: str | None = None, seq_len: int = 128,
              text_field: str = "text") -> LMTask:
    """Language modelling: `train`/`eval` corpus specs (default WikiText-2 valid / test)."""
    return LMTask(train=train, eval=eval, seq_len=seq_len, text_field=text_field)
