"""File fingerprints (layerwise/fingerprint.py) and the inputs record (layerwise/inputs.py): what
they see, and what a sampled fingerprint is documented to miss."""

from __future__ import annotations

import json
import os

import pytest

from layerwise.errors import LayerwiseError
from layerwise.fingerprint import (SAMPLE_BYTES, SMALL_FILE, changed_files, file_fingerprint,
                                   path_fingerprint)
from layerwise.inputs import changes, check, data_section, identity_key, named_paths, record


def _big(path, size=SMALL_FILE + (1 << 20)):
    with path.open("wb") as fh:
        fh.write(os.urandom(size))
    return path


def test_a_content_hash_sees_one_byte_and_not_a_touch(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    before = path_fingerprint(f)
    os.utime(f, (1, 1))  # touched: the same bytes
    assert changed_files(before, path_fingerprint(f)) == []
    f.write_bytes(b"x" * 999 + b"y")
    assert changed_files(before, path_fingerprint(f)) == [
        f"a.bin changed (content hash {before['a.bin']['sha256'][:12]} -> "
        f"{path_fingerprint(f)['a.bin']['sha256'][:12]})"]


def test_a_sampled_fingerprint_sees_its_blocks_and_the_mtime_and_misses_what_it_says(tmp_path):
    f = _big(tmp_path / "big.safetensors")
    size = f.stat().st_size
    fp = file_fingerprint(f, sample=True)
    assert fp["method"] == "sampled" and fp["size"] == size
    stat = f.stat()

    def poke(offset):
        with f.open("r+b") as fh:
            fh.seek(offset)
            old = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([old[0] ^ 0xFF]))

    # a byte inside a sampled block (the first block starts at 0), mtime restored: seen
    poke(10)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed_files({"f": fp}, {"f": file_fingerprint(f, sample=True)}) == [
        "f changed (sampled bytes differ)"]
    poke(10)  # back
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_fingerprint(f, sample=True) == fp
    # a byte between two sampled blocks: seen only through the modification time ...
    gap = SAMPLE_BYTES + 100
    poke(gap)
    assert changed_files({"f": fp}, {"f": file_fingerprint(f, sample=True)})[0].startswith(
        "f was modified (mtime changed")
    # ... and missed when the mtime is put back: what the docs say a sampled fingerprint misses
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert changed_files({"f": fp}, {"f": file_fingerprint(f, sample=True)}) == []
    # a content hash sees it
    assert file_fingerprint(f)["sha256"] != file_fingerprint(f, sample=True)["sha256"]


def test_files_are_sampled_only_past_the_limit_and_compared_the_way_they_were_made(tmp_path,
                                                                                  monkeypatch):
    d = tmp_path / "m"
    d.mkdir()
    _big(d / "w.safetensors")
    (d / "config.json").write_text("{}")
    assert {v["method"] for v in path_fingerprint(d).values()} == {"content"}
    monkeypatch.setenv("LAYERWISE_HASH_FULL_MAX", str(1 << 20))
    sampled = path_fingerprint(d)
    assert sampled["w.safetensors"]["method"] == "sampled"
    assert sampled["config.json"]["method"] == "content"  # small files: always whole
    monkeypatch.delenv("LAYERWISE_HASH_FULL_MAX")
    # the limit changed since: the file is fingerprinted as it was then, so the two compare
    assert path_fingerprint(d, like=sampled) == sampled


def test_named_paths_find_files_inside_the_grammar(tmp_path):
    scores = tmp_path / "diag.json"
    scores.write_text("{}")
    task = tmp_path / "t.py"
    task.write_text("")
    assert named_paths(f"top:2@{scores}:block_influence") == [str(scores)]
    assert named_paths(f"{task}:make_task") == [str(task)]
    assert named_paths([f"{task}:reward=0.5", "math"]) == [str(task)]
    assert named_paths("0-3") == [] and named_paths("hf:openai/gsm8k") == []
    roles = data_section({"layers": f"top:2@{scores}", "task_options": {"file": str(task)},
                          "out": str(task)})  # where the run writes is not an input
    assert sorted(roles) == ["layers", "task_options.file"]


def test_a_record_refuses_each_section_in_words_and_an_old_run_without_one(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a"}\n')
    rec = record(model="tiny:llama", settings={"dataset": str(data), "lr": 1e-3}, seed=0)
    same = record(model="tiny:llama", settings={"dataset": str(data), "lr": 1e-3}, seed=0,
                  like=rec)
    assert changes(rec, same) == []
    assert identity_key(rec) == identity_key(same)
    data.write_text('{"text": "b"}\n')
    other = record(model="tiny:llama", settings={"dataset": str(data), "lr": 2e-3}, seed=1)
    found = changes(rec, other)
    assert found[0] == "the model was built with seed 0, now 1"
    assert any(f.startswith(f"data dataset {data}: rows.jsonl changed") for f in found)
    assert "setting lr was 0.001, now 0.002" in found
    assert identity_key(rec) != identity_key(other)
    with pytest.raises(LayerwiseError, match=r"^R: since the run started, the model was built "
                                             r"with seed 0, now 1 \(and 2 more differences\); "
                                             r"nothing was written: start afresh$"):
        check(rec, other, "R", "the run started", "start afresh")
    with pytest.raises(LayerwiseError, match="no record of what it read"):
        check(None, other, "R", "the run started", "start afresh")
    json.dumps(rec)  # what is written is JSON
