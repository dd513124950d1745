"""Corpora from files and the embedded default, deterministic windows, and every refusal."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from layerwise.data import load_corpus, token_windows
from layerwise.errors import LayerwiseError
from layerwise.models.tiny import byte_tokenizer
from tests.conftest import shared_file

TOK = byte_tokenizer()


def test_embedded_corpus_needs_no_download():
    corpus = load_corpus(None)
    assert corpus.source.startswith("embedded") and len(corpus.text) > 100_000
    assert load_corpus("embedded").text == corpus.text


def test_txt_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("hello layerwise\n" * 50)
    assert load_corpus(str(txt)).text == txt.read_text()
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": f"doc {i}", "id": i}) for i in range(3)) + "\n\n")
    assert load_corpus(str(jsonl), text_field="body").text == "doc 0\n\ndoc 1\n\ndoc 2"


def test_windows_are_deterministic_consecutive_and_sized():
    corpus = load_corpus(None)
    a = token_windows(TOK, corpus, seq_len=64, num_seqs=5)
    b = token_windows(TOK, corpus, seq_len=64, num_seqs=5)
    assert a.shape == (5, 64) and a.dtype == torch.long and torch.equal(a, b)
    # consecutive, non-overlapping windows from the start of the text
    assert TOK.decode(a.flatten()) == corpus.text[: a.numel()]  # byte tokenizer: 1 token per byte (ASCII)


def test_real_wikitext_and_gsm8k_files():
    wiki = shared_file("wikitext2_test.txt")
    sums = dict(
        reversed(line.split()) for line in (wiki.parent / "SHA256SUMS").read_text().splitlines()
    )
    assert hashlib.sha256(wiki.read_bytes()).hexdigest() == sums["wikitext2_test.txt"]
    assert token_windows(TOK, load_corpus(str(wiki)), 256, 4).shape == (4, 256)
    gsm = load_corpus(str(shared_file("gsm8k_test.jsonl")), text_field="question")
    assert gsm.text.count("\n\n") >= 1318


def test_bad_data(tmp_path):
    with pytest.raises(LayerwiseError, match="data file .*missing.txt does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(LayerwiseError, match="is empty: it holds no text"):
        load_corpus(str(empty))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"question": "q"}\n')
    with pytest.raises(LayerwiseError, match="line 1 has no field 'text' \\(fields: question\\)"):
        load_corpus(str(jsonl))
    jsonl.write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(LayerwiseError, match="line 2 is not valid JSON"):
        load_corpus(str(jsonl))
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LayerwiseError, match=r"data file .*b.txt is not UTF-8 text \(a binary file\?\): byte 0xff at offset 0"):
        load_corpus(str(binary))


def test_unreachable_hf_dataset(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LayerwiseError, match="cannot load data 'hf:wikitext'"):
        load_corpus("hf:wikitext")


def test_bad_window_requests(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("only a few bytes")
    with pytest.raises(LayerwiseError, match="has 16 tokens, too few for --num-seqs 2 x --seq-len 10"):
        token_windows(TOK, load_corpus(str(small)), seq_len=10, num_seqs=2)
    corpus = load_corpus(None)
    with pytest.raises(LayerwiseError, match="--seq-len 600 is over the model's context of 512"):
        token_windows(TOK, corpus, seq_len=600, num_seqs=1, max_context=512)
    with pytest.raises(LayerwiseError, match="--num-seqs must be at least 1"):
        token_windows(TOK, corpus, seq_len=8, num_seqs=0)
    with pytest.raises(LayerwiseError, match="--seq-len must be at least 2"):
        token_windows(TOK, corpus, seq_len=1, num_seqs=1)
