"""Model loading: tiny families, local safetensors dirs, dtype/seed, and every refusal."""

from __future__ import annotations

import torch
import transformers
import pytest

from layerwise.errors import LayerwiseError
from layerwise.models import TINY_FAMILIES, load_model
from layerwise.models.loading import resolve_dtype


def test_at_least_four_tiny_families_load_and_run():
    assert len(TINY_FAMILIES) >= 4
    for family in TINY_FAMILIES:
        loaded = load_model(f"tiny:{family}")
        ids = loaded.tokenizer("layer", return_tensors="pt")["input_ids"]
        logits = loaded.model(input_ids=ids).logits
        assert logits.shape == (1, ids.shape[1], loaded.model.config.vocab_size)
        assert loaded.model.dtype == torch.float32 and not loaded.model.training


def test_seed_fixes_random_init():
    a, b, c = (load_model("tiny:llama", seed=s).model for s in (1, 1, 2))
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_dtype_choice():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert load_model("tiny:llama", dtype="bfloat16").model.dtype == torch.bfloat16
    with pytest.raises(LayerwiseError, match="unknown dtype 'fp8'; valid"):
        load_model("tiny:llama", dtype="fp8")


def test_local_safetensors_dir_round_trip(tmp_path):
    original = load_model("tiny:qwen2", seed=3)
    original.model.save_pretrained(tmp_path, safe_serialization=True)
    original.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    for (n1, p1), (n2, p2) in zip(original.model.named_parameters(), again.model.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tiny:nosuch", "unknown tiny family 'nosuch'; valid: tiny:"),
        ("./no/such/dir", "does not exist; expected a local directory"),
        ("missing.gguf", "GGUF file missing.gguf does not exist"),
    ],
)
def test_unknown_models_are_refused(spec, message):
    with pytest.raises(LayerwiseError, match=message):
        load_model(spec)


def test_unreachable_hub_id_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LayerwiseError, match="cannot find model 'nobody/no-such-model'"):
        load_model("nobody/no-such-model")


def test_dir_without_config_and_pickled_weights_are_refused(tmp_path):
    with pytest.raises(LayerwiseError, match="has no config.json"):
        load_model(str(tmp_path))
    model = load_model("tiny:llama").model
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickled checkpoint
    with pytest.raises(LayerwiseError, match="no .safetensors weights.*never unpickles"):
        load_model(str(tmp_path))


def test_non_causal_model_is_refused(tmp_path):
    config = transformers.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    transformers.DistilBertModel(config).save_pretrained(tmp_path)
    with pytest.raises(LayerwiseError, match="model_type 'distilbert'.*is not a causal LM"):
        load_model(str(tmp_path))
