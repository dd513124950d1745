"""Lazy, tensor-by-tensor access to HF safetensors checkpoints (single file or sharded).

Comparing checkpoints must not load whole models: `Checkpoint` opens each shard with
`safetensors.safe_open` and reads one tensor at a time, so peak memory stays near the largest
tensor, not the model. Each read opens the shard and closes it again: a mapping kept open would
leave every page read so far counted in the process's resident memory. Only safetensors are read
(nothing is ever unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

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


class Checkpoint:
    def __init__(self, path: str | Path):
        self.path = resolve_checkpoint(path)
        if self.path.is_file() and self.path.suffix == ".safetensors":
            self._where = {n: self.path for n in self._names(self.path)}
        elif self.path.is_dir():
            index = self.path / INDEX
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise LayerwiseError(f"{index} is not a safetensors index: {exc}") from exc
                self._where = {n: self.path / f for n, f in weight_map.items()}
            else:
                shards = sorted(self.path.glob("*.safetensors"))
                if not shards:
                    raise LayerwiseError(f"{self.path} holds no .safetensors weights")
                self._where = {n: s for s in shards for n in self._names(s)}
        else:
            raise LayerwiseError(f"checkpoint {self.path} does not exist (expected an HF "
                                 "checkpoint directory or a .safetensors file)")
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}

    @staticmethod
    def _names(file: Path) -> list[str]:
        try:
            with safe_open(str(file), framework="pt") as f:
                return list(f.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise LayerwiseError(f"{file} is not a readable safetensors file: {exc}") from exc

    @property
    def names(self) -> list[str]:
        return sorted(self._where)

    def _info(self, name: str) -> tuple[tuple[int, ...], str]:
        if name not in self._meta:  # shapes and dtypes of the whole shard, from its header
            with safe_open(str(self._where[name]), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    self._meta[key] = (tuple(sl.get_shape()), sl.get_dtype())
        return self._meta[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name)[0]

    def dtype(self, name: str) -> torch.dtype:
        """The dtype the tensor is stored in."""
        code = self._info(name)[1]
        if code not in _DTYPES:
            raise LayerwiseError(f"{self._where[name]}: tensor {name} has unsupported dtype {code}")
        return _DTYPES[code]

    def tensor(self, name: str, round_to: torch.dtype | None = None) -> torch.Tensor:
        """One tensor as float32 (differences are never taken in bf16), optionally first rounded
        to `round_to` (round-to-nearest-even, as `.to(dtype)` does when a run starts)."""
        with safe_open(str(self._where[name]), framework="pt") as f:
            t = f.get_tensor(name)
        if round_to is not None and t.dtype != round_to and t.is_floating_point():
            t = t.to(round_to)
        return t.to(torch.float32)
