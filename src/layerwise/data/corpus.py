"""Text corpora and deterministic token windows.

A corpus comes from a .txt file, a .jsonl file (one JSON object per line, text under
`text_field`), a Hugging Face dataset (``hf:NAME[:CONFIG][@SPLIT]`` or a bare name, when the Hub is
reachable), or the embedded default: the Python reference text that ships with every CPython
(`pydoc_data.topics`), which needs no download.

`token_windows` cuts the tokenized corpus into `num_seqs` consecutive, non-overlapping windows of
`seq_len` tokens from the start of the text: the same input always gives the same windows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from layerwise.errors import LayerwiseError
from layerwise.fileio import jsonl_error, read_text_file
from layerwise.hub import hub_reachable

log = logging.getLogger(__name__)
EMBEDDED_CORPUS = "embedded"


# diagnose/data take --text-field; train/sweep/tune take the lm task's option
TEXT_FIELD_FLAGS = "--text-field (diagnose, data) or --task-option text_field=NAME (the lm task)"


def _text_value(value, where: str, field: str) -> str:
    """The text of a record: a string, never another value turned into one."""
    if not isinstance(value, str):
        hint = (" (messages: a conversation is a --dataset, docs/data.md)"
                if isinstance(value, list) else "")
        raise LayerwiseError(f"{where}: field '{field}' holds a {type(value).__name__}, not text"
                             f"{hint}; it is never converted to text")
    return value


@dataclass(frozen=True)
class Corpus:
    """A named text: where it came from, and the text itself (documents joined by blank lines)."""

    source: str
    text: str


def _embedded_text() -> str:
    from pydoc_data.topics import topics

    # Sorted by topic name so the text is the same on every machine with this Python version.
    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def _read_text_file(path: Path) -> str:
    return read_text_file(path, "data file")


def _read_jsonl(path: Path, text_field: str) -> str:
    docs = []
    for lineno, line in enumerate(_read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise jsonl_error(path, lineno, line, exc) from None
        if not isinstance(record, dict) or text_field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise LayerwiseError(
                f"{path} line {lineno} has no field '{text_field}' (fields: {fields}); "
                f"choose one with {TEXT_FIELD_FLAGS}"
            )
        docs.append(_text_value(record[text_field], f"{path} line {lineno}", text_field))
    return "\n\n".join(docs)


def _read_hf_dataset(name: str, text_field: str) -> str:
    spec = name.removeprefix("hf:")
    spec, _, split = spec.partition("@")
    path, _, config = spec.partition(":")
    if not hub_reachable():
        raise LayerwiseError(
            f"cannot load data '{name}': not an existing .txt/.jsonl file, and the Hugging Face Hub "
            "is unreachable for a dataset of that name"
        )
    try:
        import datasets

        ds = datasets.load_dataset(path, config or None, split=split or "train")
    except Exception as exc:  # datasets raises many types for "not found / offline"
        raise LayerwiseError(
            f"cannot load data '{name}': not a .txt/.jsonl file and not a reachable Hugging Face "
            f"dataset ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    if text_field not in ds.column_names:
        raise LayerwiseError(
            f"dataset '{name}' has no column '{text_field}' (columns: {', '.join(ds.column_names)}); "
            f"choose one with {TEXT_FIELD_FLAGS}"
        )
    return "\n\n".join(_text_value(t, f"dataset '{name}' row {i}", text_field)
                       for i, t in enumerate(ds[text_field]))


def load_corpus(source: str | None = None, text_field: str = "text") -> Corpus:
    """Load a corpus from a file, a Hugging Face dataset, or the embedded default."""
    if source in (None, "", EMBEDDED_CORPUS):
        return Corpus(EMBEDDED_CORPUS + " (CPython pydoc_data.topics)", _embedded_text())
    path = Path(source).expanduser()
    if path.suffix.lower() in (".txt", ".jsonl", ".json", ".md") or path.exists():
        if not path.is_file():
            raise LayerwiseError(f"data file {path} does not exist")
        text = _read_jsonl(path, text_field) if path.suffix.lower() == ".jsonl" else _read_text_file(path)
    else:
        text = _read_hf_dataset(source, text_field)
    if not text.strip():
        raise LayerwiseError(f"data '{source}' is empty: it holds no text")
    return Corpus(str(source), text)


def token_windows(
    tokenizer, corpus: Corpus, seq_len: int, num_seqs: int, max_context: int | None = None
) -> torch.Tensor:
    """(num_seqs, seq_len) token ids: consecutive windows from the start of the corpus.

    Only as much text as the windows need is tokenized (plus a margin, grown if short), so a
    large corpus costs no more than a small one.
    """
    if seq_len < 2:
        raise LayerwiseError(f"--seq-len must be at least 2 tokens, got {seq_len}")
    if num_seqs < 1:
        raise LayerwiseError(f"--num-seqs must be at least 1, got {num_seqs}")
    if max_context is not None and seq_len > max_context:
        raise LayerwiseError(
            f"--seq-len {seq_len} is over the model's context of {max_context} tokens; "
            f"use at most {max_context}"
        )
    needed = seq_len * num_seqs
    chars = needed * 8
    while True:
        chunk = corpus.text[:chars]
        ids = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        complete = chars >= len(corpus.text)
        # Drop the last few tokens of a cut chunk: they may differ once the text continues.
        usable = ids if complete else ids[:-8]
        if len(usable) >= needed or complete:
            break
        chars *= 2
    if len(usable) < needed:
        raise LayerwiseError(
            f"data '{corpus.source}' has {len(usable)} tokens, too few for --num-seqs {num_seqs} x "
            f"--seq-len {seq_len} = {needed}; lower one of them or use more text"
        )
    return torch.tensor(usable[:needed], dtype=torch.long).view(num_seqs, seq_len)
