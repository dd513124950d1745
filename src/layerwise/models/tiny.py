"""`tiny:<family>`: small random causal LMs built from real Hugging Face configs.

They exercise the exact module code of each family (attention, MLP, norms, tying) at a size that
runs a forward and backward pass in milliseconds, so tests and quick runs need no download. Their
tokenizer is a byte-level tokenizer built in memory: every text round-trips, nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Callable

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from layerwise.errors import LayerwiseError

TINY_VOCAB = 260  # 256 byte tokens + 4 specials
TINY_CONTEXT = 512
_SPECIALS = {"<pad>": 256, "<bos>": 257, "<eos>": 258, "<unk>": 259}
_COMMON = dict(
    vocab_size=TINY_VOCAB, pad_token_id=256, bos_token_id=257, eos_token_id=258,
)
_DECODER = dict(  # the llama-style config keywords
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT, **_COMMON,
)


def _cfg(name: str, **kw) -> Callable[[], PretrainedConfig]:
    return lambda: getattr(transformers, name)(**kw)


# Each entry is the family's own config class with small sizes; tie_word_embeddings varies on
# purpose so that tied and untied heads are both covered.
TINY_FAMILIES: dict[str, Callable[[], PretrainedConfig]] = {
    "llama": _cfg("LlamaConfig", **_DECODER),
    "qwen2": _cfg("Qwen2Config", **_DECODER, tie_word_embeddings=True),
    "qwen3": _cfg("Qwen3Config", **_DECODER, head_dim=16),
    "olmo2": _cfg("Olmo2Config", **_DECODER),
    "mistral": _cfg("MistralConfig", **_DECODER),
    "gpt2": _cfg("GPT2Config", n_embd=64, n_layer=4, n_head=4, n_positions=TINY_CONTEXT, **_COMMON),
    "gpt_neox": _cfg("GPTNeoXConfig", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=TINY_CONTEXT, **_COMMON),
    "qwen2_moe": _cfg("Qwen2MoeConfig", **_DECODER, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=32, shared_expert_intermediate_size=32),
}


def tiny_config(family: str) -> PretrainedConfig:
    if family not in TINY_FAMILIES:
        raise LayerwiseError(
            f"unknown tiny family '{family}'; valid: {', '.join('tiny:' + f for f in TINY_FAMILIES)}"
        )
    return TINY_FAMILIES[family]()


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A real HF fast tokenizer over raw bytes (GPT-2's byte alphabet, no merges)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    assert len(vocab) == 256
    vocab.update(_SPECIALS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=TINY_CONTEXT,
    )
