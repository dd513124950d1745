"""`tiny:<family>[:key=value,...]`: small random causal LMs built from real Hugging Face configs.

They exercise the exact module code of each family (attention, MLP, norms, tying) at a size that
runs a forward and backward pass in milliseconds, so tests and quick runs need no download. Sizes
are optional (`tiny:llama:layers=12,hidden=256,heads=8,ffn=1024`); each family maps them onto its
own config keywords, so `hidden` is `hidden_size` for llama and `n_embd` for gpt2.

Their tokenizer is built in memory, nothing is fetched: byte-level by default (every text
round-trips, 260 tokens), or `bpe:N`, a byte-level BPE with N tokens trained on a text, which
lets a small model spend its parameters on blocks rather than on predicting bytes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from layerwise.errors import LayerwiseError

log = logging.getLogger(__name__)

TINY_VOCAB = 260  # 256 byte tokens + 4 specials
TINY_CONTEXT = 512
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
_BYTE_SPECIALS = {tok: 256 + i for i, tok in enumerate(SPECIAL_TOKENS)}

SIZE_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn", "context")
MOE_KEYS = ("experts", "experts_per_tok")
DEFAULT_SIZES = {"layers": 4, "hidden": 64, "heads": 4, "context": TINY_CONTEXT,
                 "experts": 4, "experts_per_tok": 2}
SIZE_EXAMPLE = "tiny:llama:layers=12,hidden=256,heads=8,ffn=1024"


def _llama_style(s: dict[str, int]) -> dict:
    return dict(hidden_size=s["hidden"], intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                max_position_embeddings=s["context"])


def _qwen3(s: dict[str, int]) -> dict:
    return {**_llama_style(s), "head_dim": s["hidden"] // s["heads"]}


def _gpt2(s: dict[str, int]) -> dict:
    return dict(n_embd=s["hidden"], n_inner=s["ffn"], n_layer=s["layers"], n_head=s["heads"],
                n_positions=s["context"])


def _gpt_neox(s: dict[str, int]) -> dict:
    return dict(hidden_size=s["hidden"], intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], max_position_embeddings=s["context"])


def _qwen2_moe(s: dict[str, int]) -> dict:
    # Every block is sparse (decoder_sparse_step 1), so the dense intermediate_size is unused;
    # `ffn` is the width of each expert and of the shared expert.
    return {**_llama_style(s), "intermediate_size": 2 * s["hidden"], "num_experts": s["experts"],
            "num_experts_per_tok": s["experts_per_tok"], "moe_intermediate_size": s["ffn"],
            "shared_expert_intermediate_size": s["ffn"]}


@dataclass(frozen=True)
class TinyFamily:
    """One family: its config class, how sizes map onto its keywords, and its fixed choices."""

    config_class: str
    keywords: Callable[[dict[str, int]], dict]
    keys: tuple[str, ...] = SIZE_KEYS
    ffn_per_hidden: float = 2.0  # default ffn = this x hidden
    rotary_share: float | None = 1.0  # share of a head rotated by RoPE; None: no RoPE
    fixed: dict = field(default_factory=dict)

    def config(self, **kw) -> PretrainedConfig:
        return getattr(transformers, self.config_class)(**kw, **self.fixed)


_NO_GQA = tuple(k for k in SIZE_KEYS if k != "kv_heads")

# tie_word_embeddings varies on purpose so that tied and untied heads are both covered.
TINY_FAMILIES: dict[str, TinyFamily] = {
    "llama": TinyFamily("LlamaConfig", _llama_style),
    "qwen2": TinyFamily("Qwen2Config", _llama_style, fixed={"tie_word_embeddings": True}),
    "qwen3": TinyFamily("Qwen3Config", _qwen3),
    "olmo2": TinyFamily("Olmo2Config", _llama_style),
    "mistral": TinyFamily("MistralConfig", _llama_style),
    # GPT-2's own default MLP is 4 x n_embd; NeoX rotates a quarter of each head.
    "gpt2": TinyFamily("GPT2Config", _gpt2, keys=_NO_GQA, ffn_per_hidden=4.0, rotary_share=None),
    "gpt_neox": TinyFamily("GPTNeoXConfig", _gpt_neox, keys=_NO_GQA, rotary_share=0.25),
    "qwen2_moe": TinyFamily("Qwen2MoeConfig", _qwen2_moe, keys=SIZE_KEYS + MOE_KEYS,
                            ffn_per_hidden=0.5),
}


def _family(name: str) -> TinyFamily:
    if name not in TINY_FAMILIES:
        raise LayerwiseError(
            f"unknown tiny family '{name}'; valid: {', '.join('tiny:' + f for f in TINY_FAMILIES)}"
        )
    return TINY_FAMILIES[name]


def _parse_pairs(text: str, family: str) -> dict[str, int]:
    """`layers=12,hidden=256` -> {"layers": 12, "hidden": 256}, every value a whole number >= 1."""
    valid = _family(family).keys
    sizes: dict[str, int] = {}
    for pair in text.split(","):
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key:
            raise LayerwiseError(f"tiny size {pair.strip()!r} is not KEY=VALUE; expected e.g. "
                                 f"{SIZE_EXAMPLE}")
        if key not in valid:
            hint = " (vocab comes from the tokenizer)" if key == "vocab" else ""
            raise LayerwiseError(f"unknown tiny size '{key}' for tiny:{family}{hint}; valid: "
                                 f"{', '.join(valid)}")
        if key in sizes:
            raise LayerwiseError(f"tiny size '{key}' is given twice in tiny:{family}:{text}")
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise LayerwiseError(f"tiny size {key}={value!r} must be a whole number >= 1")
        sizes[key] = number
    return sizes


def resolve_sizes(family: str, given: dict[str, int] | None = None) -> dict[str, int]:
    """Every size of `family`: the given ones, defaults for the rest, checked for consistency.

    Defaults: 4 blocks, width 64, 4 heads, half as many key/value heads (all of them when the
    head count is odd), ffn 2 x hidden (gpt2: 4 x, qwen2_moe experts: x 0.5), context 512,
    qwen2_moe 4 experts with 2 per token.
    """
    spec = _family(family)
    sizes = {k: v for k, v in DEFAULT_SIZES.items() if k in spec.keys}
    sizes.update(given or {})
    heads = sizes["heads"]
    if "kv_heads" in spec.keys:
        sizes.setdefault("kv_heads", heads // 2 if heads % 2 == 0 else heads)
    sizes.setdefault("ffn", max(1, int(spec.ffn_per_hidden * sizes["hidden"])))
    _check_sizes(family, spec, sizes)
    return {k: sizes[k] for k in spec.keys}


def _check_sizes(family: str, spec: TinyFamily, s: dict[str, int]) -> None:
    if s["hidden"] % s["heads"]:
        raise LayerwiseError(f"tiny:{family} hidden={s['hidden']} is not divisible by "
                             f"heads={s['heads']}; choose heads that divide hidden")
    if "kv_heads" in s and s["heads"] % s["kv_heads"]:
        raise LayerwiseError(f"tiny:{family} heads={s['heads']} is not divisible by "
                             f"kv_heads={s['kv_heads']}; choose kv_heads that divide heads")
    head = s["hidden"] // s["heads"]
    if spec.rotary_share is not None and int(head * spec.rotary_share) % 2:
        raise LayerwiseError(f"tiny:{family} head size hidden/heads = {head} gives an odd rotary "
                             f"width {int(head * spec.rotary_share)}; choose hidden/heads so it "
                             f"is even")
    if "experts" in s and s["experts_per_tok"] > s["experts"]:
        raise LayerwiseError(f"tiny:{family} experts_per_tok={s['experts_per_tok']} is more than "
                             f"experts={s['experts']}")


def parse_tiny_spec(text: str) -> tuple[str, dict[str, int]]:
    """`tiny:<family>[:k=v,...]` -> (family, every size resolved); cheap, loads nothing."""
    body = text.removeprefix("tiny:")
    family, colon, size_text = body.partition(":")
    _family(family)
    if colon and not size_text.strip():
        raise LayerwiseError(f"tiny spec {text!r} has nothing after '{family}:'; expected "
                             f"KEY=VALUE sizes, e.g. {SIZE_EXAMPLE}")
    given = _parse_pairs(size_text, family) if colon else {}
    return family, resolve_sizes(family, given)


def format_sizes(sizes: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


def tiny_config(family: str, sizes: dict[str, int] | None = None,
                tokenizer: PreTrainedTokenizerFast | None = None) -> PretrainedConfig:
    """The config of `tiny:<family>` at `sizes`, with vocab and special ids from `tokenizer`.

    Without a tokenizer the ids are the byte tokenizer's (vocab 260).
    """
    spec = _family(family)
    resolved = resolve_sizes(family, sizes)
    if tokenizer is None:
        ids = dict(vocab_size=TINY_VOCAB, pad_token_id=_BYTE_SPECIALS["<pad>"],
                   bos_token_id=_BYTE_SPECIALS["<bos>"], eos_token_id=_BYTE_SPECIALS["<eos>"])
    else:
        ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return spec.config(**spec.keywords(resolved), **ids)


# --- tokenizers -------------------------------------------------------------------------------

MIN_BPE_VOCAB = TINY_VOCAB  # the 256 bytes and the 4 specials; every merge adds one token
TOKENIZER_HELP = "byte (default) or bpe:N, a byte-level BPE with N >= 260 tokens"


def parse_tokenizer_spec(text: str | None) -> tuple[str, int]:
    """`None`/`byte` -> ("byte", 260); `bpe:N` -> ("bpe", N). Cheap, trains nothing."""
    if text in (None, "", "byte"):
        return "byte", TINY_VOCAB
    kind, colon, size = text.partition(":")
    if kind == "bpe" and colon:
        try:
            vocab = int(size)
        except ValueError:
            vocab = 0
        if vocab >= MIN_BPE_VOCAB:
            return "bpe", vocab
        raise LayerwiseError(f"tokenizer {text!r}: the BPE vocabulary must be a whole number >= "
                             f"{MIN_BPE_VOCAB} (256 bytes + 4 specials), e.g. bpe:8192")
    raise LayerwiseError(f"unknown tokenizer {text!r}; valid: {TOKENIZER_HELP}")


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=TINY_CONTEXT,
    )


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A real HF fast tokenizer over raw bytes (GPT-2's byte alphabet, no merges)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    assert len(vocab) == 256
    vocab.update(_BYTE_SPECIALS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return _wrap(backend)


def train_bpe(text: str, vocab_size: int) -> str:
    """Train a byte-level BPE with `vocab_size` tokens on `text`; its JSON (same text, same JSON).

    The specials take ids 0-3 and the 256 bytes follow, so any text still round-trips. A text
    with too few distinct pairs yields fewer merges; the model's vocab follows the tokenizer.
    """
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([text], trainer=trainer)
    if backend.get_vocab_size() < vocab_size:
        log.warning("BPE tokenizer: the text allows only %d tokens of the %d asked for",
                    backend.get_vocab_size(), vocab_size)
    return backend.to_str()


_TRAINED: dict[tuple[str, int], str] = {}  # (sha256 of the text, vocab) -> tokenizer JSON


def bpe_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """The `train_bpe` tokenizer of `text`, trained once per process; a fresh object each call."""
    key = (hashlib.sha256(text.encode()).hexdigest(), vocab_size)
    if key not in _TRAINED:
        _TRAINED[key] = train_bpe(text, vocab_size)
    return _wrap(Tokenizer.from_str(_TRAINED[key]))
