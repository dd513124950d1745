"""Sized tiny models (`tiny:<family>:k=v,...`) and their tokenizers (byte, bpe:N).

Every family is built at a non-default size and checked structurally (blocks and width through
`discover_layers`, the family's own config keywords), then trained for one backward pass. A BPE
model and its tokenizer are saved the way training saves them and reloaded from the directory.
"""

from __future__ import annotations

import json

import pytest
import torch

from layerwise.data.corpus import load_corpus
from layerwise.errors import LayerwiseError
from layerwise.models import TINY_FAMILIES, discover_layers, load_model
from layerwise.models.tiny import (
    bpe_tokenizer,
    parse_tiny_spec,
    parse_tokenizer_spec,
    resolve_sizes,
    train_bpe,
)
from layerwise.training.outputs import save_model_atomic

SIZED = "layers=3,hidden=48,heads=6,ffn=40,context=64"
# What each family calls the sizes of SIZED (qwen2_moe also gets experts=3).
CONFIG_KEYWORDS = {
    "llama": dict(num_hidden_layers=3, hidden_size=48, num_attention_heads=6, intermediate_size=40,
                  max_position_embeddings=64, num_key_value_heads=3),
    "qwen2": dict(num_hidden_layers=3, hidden_size=48, intermediate_size=40),
    "qwen3": dict(num_hidden_layers=3, hidden_size=48, intermediate_size=40, head_dim=8),
    "olmo2": dict(num_hidden_layers=3, hidden_size=48, intermediate_size=40),
    "mistral": dict(num_hidden_layers=3, hidden_size=48, intermediate_size=40),
    "gpt2": dict(n_layer=3, n_embd=48, n_head=6, n_inner=40, n_positions=64),
    "gpt_neox": dict(num_hidden_layers=3, hidden_size=48, num_attention_heads=6,
                     intermediate_size=40, max_position_embeddings=64),
    "qwen2_moe": dict(num_hidden_layers=3, hidden_size=48, moe_intermediate_size=40,
                      shared_expert_intermediate_size=40, num_experts=3, num_experts_per_tok=2),
}


def sized_spec(family: str) -> str:
    extra = ",experts=3,experts_per_tok=2" if family == "qwen2_moe" else ""
    return f"tiny:{family}:{SIZED}{extra}"


@pytest.fixture(scope="module")
def bpe_text(tmp_path_factory):
    """80 kB of real English-and-code text (the embedded CPython reference) in a file."""
    path = tmp_path_factory.mktemp("bpe") / "text.txt"
    path.write_text(load_corpus(None).text[:80_000])
    return path


def test_every_family_has_a_mapping_under_test():
    assert set(CONFIG_KEYWORDS) == set(TINY_FAMILIES)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_sized_family_builds_to_the_asked_shape_and_trains(family):
    loaded = load_model(sized_spec(family), seed=0)
    layers = discover_layers(loaded.model)
    token_embedding = next(iter(layers.embed.values()))
    assert layers.num_blocks == 3 and token_embedding.weight.shape == (260, 48)
    for key, value in CONFIG_KEYWORDS[family].items():
        assert getattr(loaded.model.config, key) == value, key
    assert loaded.context_length == 64 and loaded.tokenizer.model_max_length == 64

    loaded.model.train()
    ids = loaded.tokenizer(["sized tiny models", "train in a blink"], return_tensors="pt",
                           padding=True)["input_ids"]
    loss = loaded.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    for i, block in enumerate(layers.blocks):
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"block {i} got no gradient"


def test_no_sizes_is_the_old_default_model():
    assert resolve_sizes("llama") == dict(layers=4, hidden=64, heads=4, kv_heads=2, ffn=128,
                                          context=512)
    plain = load_model("tiny:llama", seed=5)
    explicit = load_model("tiny:llama:layers=4,hidden=64,heads=4,kv_heads=2,ffn=128,context=512",
                          seed=5)
    pairs = zip(plain.model.state_dict().items(), explicit.model.state_dict().items())
    assert all(n1 == n2 and torch.equal(a, b) for (n1, a), (n2, b) in pairs)
    # embed + head 2*260*64, per block q,o 2*64*64 + k,v 2*64*32 + mlp 3*64*128 + norms 2*64
    assert plain.num_parameters == 2 * 260 * 64 + 4 * (8192 + 4096 + 24576 + 128) + 64


def test_source_names_every_size():
    loaded = load_model("tiny:qwen2:layers=2,hidden=32")
    assert loaded.source.startswith(
        "tiny:qwen2:layers=2,hidden=32,heads=4,kv_heads=2,ffn=64,context=512 (random init")
    assert "byte tokenizer" in loaded.source


@pytest.mark.parametrize("family, key", [
    ("llama", "layers"), ("llama", "hidden"), ("llama", "ffn"), ("llama", "kv_heads"),
    ("gpt2", "layers"), ("gpt2", "hidden"), ("gpt2", "ffn"), ("gpt2", "context"),
    ("qwen2_moe", "ffn"), ("qwen2_moe", "experts"),
])
def test_parameter_count_grows_with_each_size(family, key):
    base = dict(layers=2, hidden=32, heads=4, ffn=32, context=64)
    if family != "gpt2":
        base["kv_heads"] = 2
    bigger = {**base, key: base.get(key, 4) * 2}

    def count(sizes):
        text = ",".join(f"{k}={v}" for k, v in sizes.items())
        return load_model(f"tiny:{family}:{text}").num_parameters

    assert count(bigger) > count(base)


@pytest.mark.parametrize("spec, message", [
    ("tiny:llama:depth=3", r"unknown tiny size 'depth' for tiny:llama; valid: layers, hidden, "
                           r"heads, kv_heads, ffn, context$"),
    ("tiny:llama:vocab=1000", "unknown tiny size 'vocab' .*vocab comes from the tokenizer"),
    ("tiny:gpt2:kv_heads=2", "unknown tiny size 'kv_heads' for tiny:gpt2"),
    ("tiny:llama:experts=4", "unknown tiny size 'experts' for tiny:llama"),
    ("tiny:llama:layers=two", "tiny size layers='two' must be a whole number >= 1"),
    ("tiny:llama:layers=1.5", "tiny size layers='1.5' must be a whole number >= 1"),
    ("tiny:llama:layers=0", "tiny size layers='0' must be a whole number >= 1"),
    ("tiny:llama:heads=-2", "tiny size heads='-2' must be a whole number >= 1"),
    ("tiny:llama:hidden=50", "hidden=50 is not divisible by heads=4"),
    ("tiny:llama:heads=8,kv_heads=3", "heads=8 is not divisible by kv_heads=3"),
    ("tiny:llama:hidden=12", "head size hidden/heads = 3 gives an odd rotary width"),
    ("tiny:qwen2_moe:experts=2,experts_per_tok=3", "experts_per_tok=3 is more than experts=2"),
    ("tiny:llama:layers", "tiny size 'layers' is not KEY=VALUE"),
    ("tiny:llama:layers=2,,hidden=64", "tiny size '' is not KEY=VALUE"),
    ("tiny:llama:layers=2,layers=3", "tiny size 'layers' is given twice"),
    ("tiny:llama:", "has nothing after 'llama:'"),
    ("tiny:nosuch:layers=2", "unknown tiny family 'nosuch'; valid: tiny:llama"),
])
def test_bad_size_specs_are_refused_in_one_line(spec, message):
    with pytest.raises(LayerwiseError, match=message) as parsed:
        parse_tiny_spec(spec)
    assert "\n" not in str(parsed.value)
    with pytest.raises(LayerwiseError, match=message):
        load_model(spec)


def test_parse_tiny_spec_resolves_defaults_without_building():
    family, sizes = parse_tiny_spec("tiny:qwen2_moe:hidden=128,heads=8")
    assert family == "qwen2_moe"
    assert sizes == dict(layers=4, hidden=128, heads=8, kv_heads=4, ffn=64, context=512,
                         experts=4, experts_per_tok=2)
    assert parse_tiny_spec("tiny:gpt2:heads=3,hidden=48")[1] == dict(
        layers=4, hidden=48, heads=3, ffn=192, context=512)


@pytest.mark.parametrize("text, parsed", [
    (None, ("byte", 260)), ("byte", ("byte", 260)), ("bpe:260", ("bpe", 260)),
    ("bpe:8192", ("bpe", 8192)),
])
def test_tokenizer_specs(text, parsed):
    assert parse_tokenizer_spec(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("bpe:100", "tokenizer 'bpe:100': the BPE vocabulary must be a whole number >= 260"),
    ("bpe:lots", "the BPE vocabulary must be a whole number >= 260"),
    ("bpe", "unknown tokenizer 'bpe'; valid: byte .* or bpe:N"),
    ("wordpiece:300", "unknown tokenizer 'wordpiece:300'"),
])
def test_bad_tokenizer_specs_are_refused(text, message):
    with pytest.raises(LayerwiseError, match=message):
        parse_tokenizer_spec(text)


def test_bpe_tokenizer_has_the_asked_vocab_round_trips_and_is_deterministic(bpe_text):
    text = bpe_text.read_text()
    assert train_bpe(text, 400) == train_bpe(text, 400)
    assert train_bpe(text, 400) != train_bpe(text[:40_000], 400)
    tok = bpe_tokenizer(text, 400)
    assert len(tok) == 400
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    sample = "The for statement:\n\tfor x in range(3): print(x)  # héllo wörld, 日本 🙂"
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == sample
    assert len(ids) < len(sample.encode())  # merges were learnt: fewer tokens than bytes


def test_tiny_model_with_bpe_matches_its_tokenizer(bpe_text):
    loaded = load_model("tiny:gpt2:layers=2,hidden=32", tokenizer="bpe:300",
                        tokenizer_data=str(bpe_text))
    tok, config = loaded.tokenizer, loaded.model.config
    assert config.vocab_size == len(tok) == 300
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert loaded.model.get_input_embeddings().weight.shape == (300, 32)
    assert f"bpe:300 tokenizer trained on {bpe_text}" in loaded.source


def test_saved_bpe_model_reloads_with_identical_logits(bpe_text, tmp_path):
    original = load_model("tiny:llama:layers=2,hidden=32,ffn=48", tokenizer="bpe:320",
                          tokenizer_data=str(bpe_text), seed=7)
    save_model_atomic(original.model, original.tokenizer, tmp_path / "model")
    again = load_model(str(tmp_path / "model"))
    text = "Identifiers and keywords"
    ids = original.tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(again.tokenizer(text, return_tensors="pt")["input_ids"], ids)
    assert len(again.tokenizer) == 320
    with torch.no_grad():
        assert torch.equal(original.model(input_ids=ids).logits, again.model(input_ids=ids).logits)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["vocab_size"] == 320 and saved["num_hidden_layers"] == 2


def test_bpe_needs_data_and_a_tiny_model(bpe_text):
    with pytest.raises(LayerwiseError, match="tokenizer 'bpe:300' is trained on a text: give "
                                             "tokenizer_data"):
        load_model("tiny:llama", tokenizer="bpe:300")
    with pytest.raises(LayerwiseError, match="is for tiny:<family> models only; model "
                                             "'HuggingFaceTB/SmolLM2-135M' brings its own"):
        load_model("HuggingFaceTB/SmolLM2-135M", tokenizer="bpe:300", tokenizer_data=str(bpe_text))
    with pytest.raises(LayerwiseError, match="data file .*missing.txt does not exist"):
        load_model("tiny:llama", tokenizer="bpe:300",
                   tokenizer_data=str(bpe_text.parent / "missing.txt"))
