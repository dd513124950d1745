"""A user's dataset: read by `datasets` from every format, its TRL type detected, bad rows refused."""

from __future__ import annotations

import pytest
from datasets import Dataset

from layerwise.data.formats import detect
from layerwise.data.user_data import load_user_dataset, parse_columns
from layerwise.errors import LayerwiseError
from tests.data.dataset_fixtures import build, rows, write_jsonl


@pytest.fixture(scope="module")
def F(tmp_path_factory):
    return build(tmp_path_factory.mktemp("datasets"))


@pytest.mark.parametrize("kind, expected", [
    ("lm", "language-modelling, standard"), ("messages", "language-modelling, conversational"),
    ("prompt", "prompt-only, conversational"), ("pc", "prompt-completion, standard"),
    ("pc_chat", "prompt-completion, conversational"),
    ("pref", "preference (explicit prompt), standard"),
    ("pref_implicit", "preference (implicit prompt), standard"),
    ("pref_chat", "preference (explicit prompt), conversational"),
    ("unpaired", "unpaired-preference, standard")])
def test_every_trl_type_is_detected(F, kind, expected):
    ds = load_user_dataset(str(F / f"{kind}.jsonl"))
    assert len(ds) == 40
    assert detect(ds, kind).describe() == expected


def test_trl_agrees_on_what_is_conversational(F):
    from trl.data_utils import is_conversational

    for kind in ("lm", "messages", "prompt", "pc", "pc_chat", "pref", "pref_chat", "unpaired"):
        ds = load_user_dataset(str(F / f"{kind}.jsonl"))
        assert detect(ds, kind).conversational == is_conversational(ds[0]), kind


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "disk"])
def test_every_file_format_reads_the_same_rows(F, tmp_path, fmt):
    ds = Dataset.from_list(rows("pc", 12))
    path = tmp_path / f"data.{fmt}"
    {"json": lambda: ds.to_json(str(path), lines=False), "csv": lambda: ds.to_csv(str(path)),
     "parquet": lambda: ds.to_parquet(str(path)), "disk": lambda: ds.save_to_disk(str(path))}[fmt]()
    loaded = load_user_dataset(str(path))
    assert loaded["prompt"] == ds["prompt"] and loaded["completion"] == ds["completion"]
    assert detect(loaded, fmt).type == "prompt-completion"


def test_columns_renames_before_detection(F, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q?", "answer": " a"}] * 3)
    ds = load_user_dataset(str(path), "prompt=question,completion=answer")
    assert ds.column_names == ["prompt", "completion"]
    assert parse_columns("prompt=question, completion=answer") == {"question": "prompt",
                                                                 "answer": "completion"}
    with pytest.raises(LayerwiseError, match="expected NEW=OLD"):
        parse_columns("prompt")
    with pytest.raises(LayerwiseError, match="renames nope, which .* does not have"):
        load_user_dataset(str(path), "prompt=nope")


def test_a_million_rows_are_arrow_not_python_lists(F):
    ds = load_user_dataset(str(F / "pc.jsonl"))
    assert type(ds).__name__ == "Dataset" and ds.cache_files  # memory-mapped from the cache


@pytest.mark.parametrize("name, columns, pattern", [
    ("nowhere.jsonl", None, r"dataset file .*nowhere.jsonl does not exist"),
    ("empty.jsonl", None, r"is empty"),
    ("latin1.jsonl", None, r"is not UTF-8 \(line 1"),
    ("broken.jsonl", None, r"cannot be parsed as jsonl: ArrowInvalid: JSON parse error.* row 1"),
    ("nomatch.jsonl", None, r"columns question, answer match no TRL dataset type; each needs: "
                            r"unpaired-preference: .*prompt-completion: prompt and completion"),
    ("mixed.jsonl", None, r"rows of mixed types: 3 of 6 rows have no 'completion' \(row 0 has text\)"),
    ("badrole.jsonl", None, r"row 4: a message in 'messages' has role 'narrator'; roles are "
                            r"system, user, assistant, tool"),
    ("noassistant.jsonl", None, r"row 2: 'messages' has no assistant turn \(roles user\)"),
    ("emptycontent.jsonl", None, r"row 3: message 1 \(assistant\) in 'messages' has empty content"),
    ("notext.jsonl", None, r"column 'text' holds int64, not text .*never converted"),
    ("pc.jsonl", "prompt=solution", r"already has a column 'prompt'"),
])
def test_bad_data_is_one_line(F, name, columns, pattern):
    with pytest.raises(LayerwiseError, match=pattern) as info:
        detect(load_user_dataset(str(F / name), columns), str(F / name))
    assert "\n" not in str(info.value)


def test_a_format_that_is_not_a_dataset(F, tmp_path):
    (tmp_path / "data.txt").write_text("hello\n")
    with pytest.raises(LayerwiseError, match=r"expected a .jsonl, .json, .csv or .parquet file"):
        load_user_dataset(str(tmp_path / "data.txt"))
    with pytest.raises(LayerwiseError, match="not one written by datasets' save_to_disk"):
        load_user_dataset(str(tmp_path))


def test_mixed_conversational_and_standard_columns(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "q", "completion": [
        {"role": "assistant", "content": "a"}]}] * 2)
    with pytest.raises(LayerwiseError, match="mixes conversational and standard columns"):
        detect(load_user_dataset(str(path)), "m")


def test_an_unpaired_label_must_be_boolean(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "q", "completion": "a", "label": 1}] * 2)
    with pytest.raises(LayerwiseError, match="label' holds int64"):
        detect(load_user_dataset(str(path)), "u")


def test_the_hub_unreachable_is_one_line(monkeypatch):
    import layerwise.hub

    monkeypatch.setattr(layerwise.hub, "hub_reachable", lambda: False)
    with pytest.raises(LayerwiseError, match="Hub is unreachable from here"):
        load_user_dataset("hf:openai/gsm8k:main@train")
