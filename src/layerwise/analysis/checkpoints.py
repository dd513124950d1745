"""Lazy, tensor-by-tensor access to HF safetensors checkpoints (single file or sharded).

Comparing checkpoints must not load whole models: `Checkpoint` opens each shard with
`safetensors.safe_open` and reads one tensor at a time, so peak memory stays near the largest
tensor, not the model. Only safetensors are read (nothing is ever unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from layerwise.errors import LayerwiseError

INDEX = "model.safetensors.index.json"


class Checkpoint:
    def __init__(self, path: str | Path):
        self.path = Path(path)
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
        self._handles: dict[Path, object] = {}

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

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, as float32 (differences are never taken in bf16)."""
        return self._handle(name).get_tensor(name).to(torch.float32)

    def _handle(self, name: str):
        file = self._where[name]
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file]
