"""Lazy, tensor-by-tensor access to HF safetensors checkpoints (single file or sharded).

Comparing checkpoints must not load whole models: `Checkpoint` reads one tensor at a time, so peak
memory stays near the largest tensor, not the model. The header of each shard is parsed once
(names, dtypes, shapes, byte offsets, as the safetensors format specifies); a tensor is then read
with one plain `readinto` into a fresh buffer. Memory-mapping the shard (what `safe_open` does)
would count the file pages of every tensor being read as resident memory on top of the copy, and
an in-place update of a mapped tensor copies it once more. Only safetensors are read (nothing is
ever unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from layerwise.errors import LayerwiseError

INDEX = "model.safetensors.index.json"
# bits of mantissa: a checkpoint stored in fewer bits than its base was trained from the base
# rounded to that dtype, so that is what its differences must be taken against
PRECISION = {torch.float64: 52, torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}
ROUNDING = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint path from a path, ``embedded``, a ``.gguf`` file (converted once, cached) or a
    `layerwise train` run directory (its ``merged/`` model if there is one, else ``model/``)."""
    from layerwise.models.loading import convert_gguf, embedded_gguf_path

    text = str(spec)
    if text == "embedded":
        return convert_gguf(embedded_gguf_path())
    path = Path(text)
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path)
    if path.is_dir() and not any(path.glob("*.safetensors")) and not (path / INDEX).is_file():
        for sub in ("merged", "model"):
            if (path / sub).is_dir():
                path = path / sub
                break
    if (path / "adapter_config.json").is_file():
        raise LayerwiseError(f"{path} is a PEFT adapter, not a full checkpoint: compare the merged "
                             "model (layerwise train --lora --merge writes RUN/merged)")
    return path


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
           "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 * 2**20


def read_header(file: Path) -> dict[str, tuple[tuple[int, ...], str, int, int]]:
    """{name: (shape, dtype code, absolute byte offset, byte length)} of a safetensors file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= min(MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
            if not 0 <= begin <= end or 8 + n + end > size:
                raise ValueError(f"tensor {name} lies outside the file")
            out[name] = (shape, str(info["dtype"]), 8 + n + begin, end - begin)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LayerwiseError(f"{file} is not a readable safetensors file: {exc}") from exc


class Checkpoint:
    def __init__(self, path: str | Path):
        self.path = resolve_checkpoint(path)
        if self.path.is_file() and self.path.suffix == ".safetensors":
            files = [self.path]
        elif self.path.is_dir():
            index = self.path / INDEX
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise LayerwiseError(f"{index} is not a safetensors index: {exc}") from exc
                files = sorted({self.path / f for f in weight_map.values()})
            else:
                files = sorted(self.path.glob("*.safetensors"))
                if not files:
                    raise LayerwiseError(f"{self.path} holds no .safetensors weights")
        elif self.path.exists():
            raise LayerwiseError(f"checkpoint {self.path} is a file but not a .safetensors file "
                                 "(expected an HF checkpoint directory or a .safetensors file; "
                                 "layerwise never unpickles .bin/.pt weights)")
        else:
            raise LayerwiseError(f"checkpoint {self.path} does not exist (expected an HF "
                                 "checkpoint directory or a .safetensors file)")
        self._meta: dict[str, tuple[tuple[int, ...], str, int, int]] = {}
        self._where: dict[str, Path] = {}
        for file in files:
            for name, info in read_header(file).items():
                self._meta[name] = info
                self._where[name] = file
        self.tying = self._expand_tying()

    def _expand_tying(self) -> dict | None:
        """A tied checkpoint (tying.json beside the weights): in the compact form, each tied
        block's tensors are its source block's, so they are listed under both names."""
        from layerwise.models.tying import TYING_FILE, read_tying_file

        f = (self.path if self.path.is_dir() else self.path.parent) / TYING_FILE
        if not f.is_file():
            return None
        doc = read_tying_file(f)
        prefix = doc.get("blocks_path")
        if doc.get("form") != "compact" or not prefix:
            return doc
        for i, j in enumerate(doc["sources"]):
            if i == j:
                continue
            src = f"{prefix}.{j}."
            for name in [n for n in self._meta if n.startswith(src)]:
                alias = f"{prefix}.{i}." + name[len(src):]
                self._meta[alias], self._where[alias] = self._meta[name], self._where[name]
        return doc

    @property
    def names(self) -> list[str]:
        return sorted(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][0]

    def dtype(self, name: str) -> torch.dtype:
        """The dtype the tensor is stored in."""
        code = self._meta[name][1]
        if code not in _DTYPES:
            raise LayerwiseError(f"{self._where[name]}: tensor {name} has unsupported dtype {code}")
        return _DTYPES[code]

    def raw(self, name: str) -> torch.Tensor:
        """One tensor as stored, read into a fresh buffer (no mapping of the file)."""
        shape, _, offset, nbytes = self._meta[name]
        t = torch.empty(shape, dtype=self.dtype(name))
        if t.numel() * t.element_size() != nbytes:
            raise LayerwiseError(f"{self._where[name]}: tensor {name} has {nbytes} bytes for shape "
                                 f"{list(shape)} of {self._meta[name][1]}")
        if nbytes:
            buffer = t.reshape(-1).view(torch.uint8).numpy()
            with open(self._where[name], "rb") as f:
                f.seek(offset)
                if f.readinto(buffer) != nbytes:
                    raise LayerwiseError(f"{self._where[name]}: tensor {name} is truncated")
        return t

    def tensor(self, name: str, round_to: torch.dtype | None = None) -> torch.Tensor:
        """One tensor as float32 (differences are never taken in bf16), optionally first rounded
        to `round_to` (round-to-nearest-even, as `.to(dtype)` does when a run starts)."""
        t = self.raw(name)
        if round_to is not None and t.dtype != round_to and t.is_floating_point():
            t = t.to(round_to)
        return t.to(torch.float32)
