"""What trains: a block selection in full, the whole model, or LoRA adapters (incl. mid-block).

- `--layers SPEC`: `requires_grad` is set from the resolved selection (torchtune's two steps).
- `--full`: every parameter.
- `--lora`: PEFT LoRA on the attention projections (or every linear layer) of the `--lora-layers`
  blocks, found structurally (never by a regex on module names). With `--lora-budget fixed` the
  total rank is fixed at `rank x number of blocks` — what standard LoRA spends on the whole model —
  and shared by the selected blocks: the "Mid-Block Efficient Tuning" of arXiv 2604.11838, where
  the budget sits in one or more depth segments (e.g. `--lora-layers 40%-60%`).
- `--lr-scale SPEC=x`: an optimizer parameter group per scaled set of blocks, lr multiplied by x
  (the "raise the LR of the best blocks" strategy of arXiv 2607.01232).

The optimizer only ever sees trainable parameters, so it holds no state for frozen ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap, discover_layers
from layerwise.selection.export import to_peft_kwargs
from layerwise.selection.freeze import apply_selection
from layerwise.selection.resolve import resolve_selection
from layerwise.training.config import TrainConfig

PEFT_PREFIX = "base_model.model."


@dataclass
class Trainable:
    """The model to hand to a trainer, and an account of what trains."""

    model: nn.Module
    mode: str
    description: str
    trainable_params: int
    total_params: int
    blocks: tuple[int, ...]  # blocks holding at least one trainable parameter
    lowest_block: int | None
    lora: dict = field(default_factory=dict)  # rank per module, alpha, targets, total rank

    @property
    def share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0


def block_of(name: str, layers: LayerMap) -> int | None:
    """The block a parameter belongs to (PEFT's wrapper prefix and adapter names allowed)."""
    name = name.removeprefix(PEFT_PREFIX)
    prefix = layers.blocks_path + "."
    if not name.startswith(prefix):
        return None
    head = name[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _count(model: nn.Module) -> tuple[int, int]:
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():  # tied tensors counted once
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def _blocks(model: nn.Module, layers: LayerMap) -> tuple[int, ...]:
    return tuple(sorted({b for n, p in model.named_parameters() if p.requires_grad
                         and (b := block_of(n, layers)) is not None}))


def _lora(model: nn.Module, layers: LayerMap, config: TrainConfig) -> tuple[nn.Module, dict]:
    from peft import LoraConfig, get_peft_model

    spec = config.lora_layers
    filt = ":attn" if config.lora_targets == "attn" else ""
    try:
        selection = resolve_selection(layers, f"{spec}{filt}" if filt and ":" not in spec else spec)
    except LayerwiseError as exc:
        raise LayerwiseError(f"--lora-layers: {exc}") from exc
    try:
        kwargs, _uncovered = to_peft_kwargs(selection, model, layers)
    except ValueError as exc:
        raise LayerwiseError(f"--lora-layers {spec!r}: {exc}") from exc
    n_sel = len(selection.blocks)
    if n_sel == 0:
        raise LayerwiseError(f"--lora-layers {spec!r} selects no block")
    if config.lora_budget == "fixed":
        total_rank = config.rank * layers.num_blocks
        rank = max(1, total_rank // n_sel)
    else:
        rank = config.rank
    alpha = config.lora_alpha if config.lora_alpha is not None else 2 * rank
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                                                  task_type="CAUSAL_LM", **kwargs))
    info = {"rank_per_module": rank, "alpha": alpha, "blocks": list(selection.blocks),
            "targets": config.lora_targets, "budget": config.lora_budget,
            "total_rank_per_module_type": rank * n_sel}
    return peft_model, info


def prepare_trainable(model: nn.Module, config: TrainConfig) -> Trainable:
    """Set `requires_grad` (or wrap in LoRA) as the config says; refuse an empty selection."""
    layers = discover_layers(model)
    lora_info: dict = {}
    if config.mode == "layers":
        selection = resolve_selection(layers, config.layers)
        if apply_selection(model, selection) == 0:
            raise LayerwiseError(f"selection '{config.layers}' has no trainable parameter")
        description = f"layers {config.layers} (blocks {', '.join(map(str, selection.blocks)) or 'none'})"
    elif config.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        description = "full fine-tuning"
    else:
        model, lora_info = _lora(model, layers, config)
        description = (f"LoRA r={lora_info['rank_per_module']} on {config.lora_targets} of "
                       f"{config.lora_layers} ({config.lora_budget} budget)")
    trainable, total = _count(model)
    if trainable == 0:
        raise LayerwiseError(f"{description}: no trainable parameter")
    blocks = _blocks(model, layers)
    embed_trains = any(p.requires_grad for n, p in model.named_parameters()
                       if n.removeprefix(PEFT_PREFIX) in set(layers.part_names("embed")))
    lowest = None if embed_trains or not blocks else blocks[0]
    return Trainable(model=model, mode=config.mode, description=description,
                     trainable_params=trainable, total_params=total, blocks=blocks,
                     lowest_block=lowest, lora=lora_info)


def parse_lr_scale(items: list[str], layers: LayerMap) -> list[tuple[frozenset[int], float, str]]:
    """["10-12=2"] -> [({10, 11, 12}, 2.0, "10-12")]; each SPEC goes through the selection grammar."""
    out = []
    for item in items:
        spec, sep, value = item.rpartition("=")
        if not sep or not spec:
            raise LayerwiseError(f"--lr-scale {item!r} is not SPEC=FACTOR (e.g. 10-12=2)")
        try:
            factor = float(value)
        except ValueError:
            raise LayerwiseError(f"--lr-scale {item!r}: factor {value!r} is not a number") from None
        if not factor > 0:
            raise LayerwiseError(f"--lr-scale {item!r}: factor must be > 0")
        blocks = resolve_selection(layers, spec).blocks
        if not blocks:
            raise LayerwiseError(f"--lr-scale {item!r}: {spec!r} names no block")
        out.append((frozenset(blocks), factor, spec))
    return out


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only, one group per learning-rate scale.

    Biases and norm weights (1-D tensors) get no weight decay, as in transformers' Trainer.
    A block named by several --lr-scale items takes the last factor given.
    """
    layers = discover_layers(model.get_base_model() if hasattr(model, "get_base_model") else model)
    scales = parse_lr_scale(config.lr_scale, layers)
    base_lr = config.learning_rate()
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        block = block_of(name, layers)
        factor = 1.0
        for blocks, f, _spec in scales:
            if block in blocks:
                factor = f
        groups.setdefault((factor, param.ndim >= 2), []).append(param)
    if scales and not any(f != 1.0 for f, _ in groups):
        raise LayerwiseError("--lr-scale names no block that trains: "
                             + ", ".join(s for _, _, s in scales))
    param_groups = [{"params": ps, "lr": base_lr * f, "lr_scale": f,
                     "weight_decay": config.weight_decay if decay else 0.0}
                    for (f, decay), ps in sorted(groups.items())]
    return torch.optim.AdamW(param_groups, lr=base_lr)


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing that keeps frozen blocks out of the backward pass.

    transformers 5 (and PEFT, and TRL's SFTTrainer for PEFT models) make the embedding output
    require grad whenever checkpointing is enabled, which reentrant checkpointing needs; it also
    makes autograd compute gradients through every frozen block below the lowest trainable one.
    Non-reentrant checkpointing needs no such hook. GRPO/RLOO switch checkpointing off for
    generation and on again every step, which would add the hook back, so on this model instance
    `enable_input_require_grads` becomes a no-op (the Trainer is never asked to enable
    checkpointing itself, and re-enabling keeps `use_reentrant=False` from the trainer args).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.disable_input_require_grads()
    base.enable_input_require_grads = _input_grads_not_needed
    base.config.use_cache = False


def _input_grads_not_needed() -> None:
    """Stands in for `enable_input_require_grads` under non-reentrant checkpointing."""


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))
