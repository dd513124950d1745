"""A result file carries its model's identity; a file from another model is refused in one line."""

from __future__ import annotations

import json
import logging

import pytest

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.models.arch import discover_layers
from layerwise.models.identity import check_identity, model_identity, structure_fingerprint
from layerwise.selection.resolve import resolve_selection
from layerwise.training.precheck import meta_model
from tests.cli.test_cli import _one_line_error, run


def _diagnose(capsys, tmp_path, model):
    out = tmp_path / model.replace(":", "-")
    code, _, err = run(capsys, "diagnose", "--model", model, "--metrics", "angular,block-influence",
                       "--num-seqs", "2", "--seq-len", "16", "--out", str(out), "-q", "--no-progress")
    assert code == 0, err
    return out / "diagnostics.json"


def test_the_structure_is_known_before_loading_and_equals_the_loaded_models():
    meta = discover_layers(meta_model("tiny:llama"))
    loaded = discover_layers(load_model("tiny:llama").model)
    assert structure_fingerprint(meta) == structure_fingerprint(loaded)
    other = discover_layers(load_model("tiny:qwen2").model)
    assert structure_fingerprint(other) != structure_fingerprint(loaded)
    assert model_identity(meta, "tiny:llama")["weights"] is None  # no weights on meta
    assert model_identity(loaded, "tiny:llama")["weights"]


def test_a_diagnostics_file_of_another_model_is_refused_as_a_selection(capsys, tmp_path):
    diag = _diagnose(capsys, tmp_path, "tiny:qwen2")  # 4 blocks too, another structure
    doc = json.loads(diag.read_text())
    assert doc["identity"]["num_blocks"] == 4 and doc["identity"]["structure"]
    llama = discover_layers(load_model("tiny:llama").model)
    with pytest.raises(LayerwiseError, match="a file from another model"):
        resolve_selection(llama, f"top:2@{diag}:block_influence")
    code, out, err = run(capsys, "train", "--model", "tiny:llama", "--layers",
                         f"top:2@{diag}:block_influence", "--steps", "1", "-q")
    _one_line_error(code, out, err, r"was made for tiny:qwen2.*\(qwen2, 4 blocks\).*another model")
    own = _diagnose(capsys, tmp_path, "tiny:llama")
    assert len(resolve_selection(llama, f"top:2@{own}:block_influence").blocks) == 2


def test_same_structure_other_weights_is_a_warning(caplog):
    a = model_identity(discover_layers(load_model("tiny:llama", seed=0).model), "a")
    b = model_identity(discover_layers(load_model("tiny:llama", seed=1).model), "b")
    assert a["structure"] == b["structure"] and a["weights"] != b["weights"]
    with caplog.at_level(logging.WARNING, logger="layerwise.models.identity"):
        check_identity(a, b, "diagnostics.json")
    assert any("same structure but other weights" in r.message for r in caplog.records)


def test_a_sweep_store_refuses_runs_of_another_model(tmp_path):
    from layerwise.sweeps.store import open_store

    a = model_identity(discover_layers(load_model("tiny:llama", seed=0).model), "m")
    b = model_identity(discover_layers(load_model("tiny:llama", seed=1).model), "m")
    with open_store(tmp_path) as store:
        store.claim("sweep-1", {"summary": "s", "identity": a})
        store.claim("sweep-1", {"summary": "s", "identity": a})  # the same model again: fine
        with pytest.raises(LayerwiseError, match="cannot be mixed"):
            store.claim("sweep-1", {"summary": "s", "identity": b})
        assert store.identity() == a
