"""What every metric gets: the model as loaded, its anatomy, the token windows, the options, and the
work shared between metrics (one traced baseline pass, computed on first use and reused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap


@dataclass(frozen=True)
class DiagnosticOptions:
    """Knobs of the metrics; validated here so that every entry point refuses the same bad input."""

    alphas: tuple[float, ...] = (0.9,)  # `scale`: multiply a block's weight matrices by alpha
    noise_fraction: float = 0.5  # `noise`: std of the added noise, as a fraction of each matrix's std
    max_run: int = 4  # `angular`, `block-influence`: runs of n = 1..max_run consecutive blocks
    ridge: float = 1e-3  # `linear-r2`: ridge strength, relative to the mean diagonal of X^T X
    recovery_tolerance_pct: float = 5.0  # `recovery`: back within this % of the intact perplexity
    recovery_max_steps: int = 200
    recovery_lr: float = 1e-4
    recovery_eval_every: int = 5
    recovery_blocks: tuple[int, ...] | None = None  # None = every block
    prune_blocks: int | None = None  # `prune`: how many blocks to remove (None = L - 1)
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self):
        if not self.alphas:
            raise LayerwiseError("--alpha needs at least one value, e.g. 0.9")
        for alpha in self.alphas:
            if not alpha > 0:
                raise LayerwiseError(f"--alpha must be > 0, got {alpha}")
        if not self.noise_fraction >= 0:
            raise LayerwiseError(f"--noise-fraction must be >= 0, got {self.noise_fraction}")
        if self.max_run < 1:
            raise LayerwiseError(f"--max-run must be >= 1, got {self.max_run}")
        if not self.ridge >= 0:
            raise LayerwiseError(f"--ridge must be >= 0, got {self.ridge}")
        if not self.recovery_tolerance_pct > 0:
            raise LayerwiseError(
                f"--recovery-tolerance must be > 0 (a % of the intact perplexity), got "
                f"{self.recovery_tolerance_pct}"
            )
        if self.recovery_max_steps < 1 or self.recovery_eval_every < 1:
            raise LayerwiseError("--recovery-max-steps and the evaluation interval must be >= 1")
        if self.batch_size < 1:
            raise LayerwiseError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class DiagnosticContext:
    model: nn.Module
    layers: LayerMap
    windows: torch.Tensor  # (N, T) token ids
    options: DiagnosticOptions = field(default_factory=DiagnosticOptions)
    progress: bool = True

    @cached_property
    def trace(self):
        """The intact model's forward pass, traced block by block (shared by all metrics)."""
        from layerwise.diagnostics.trace import BlockTrace

        return BlockTrace.record(self.model, self.layers, self.windows, self.options.batch_size)

    @property
    def num_blocks(self) -> int:
        return self.layers.num_blocks
