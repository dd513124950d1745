"""One TRL trainer per method, configured by TRL's own config dataclasses.

- `sft`: `SFTTrainer` on prompt/completion pairs (loss on the completion only).
- `grpo`, `dr_grpo`, `dapo`: `GRPOTrainer` with that `loss_type` (Dr. GRPO also turns off the
  per-group std scaling, as its paper recommends); `rloo`: `RLOOTrainer`. The reward is the
  task's own score. Multi-turn tasks bring their own `rollout_func` (TRL's public hook).
- `dpo`: `DPOTrainer` on preference pairs: a user's `--pairs` file, or pairs built from the
  model's own samples (see preference.py).

The model arrives already frozen (or LoRA-wrapped) and the optimizer already built over its
trainable parameters, so no trainer internals are touched.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from datasets import Dataset

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import Task, reward_function, sft_examples
from layerwise.training.config import GRPO_METHODS, TrainConfig


def common_args(config: TrainConfig, output_dir: str, report_to: list[str],
                device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """TrainingArguments shared by every method."""
    return dict(
        output_dir=output_dir,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate(),
        lr_scheduler_type="constant_with_warmup" if config.warmup_ratio else "constant",
        warmup_steps=int(config.warmup_ratio * config.steps),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        # Trainer would replace a NaN/inf loss by the running mean in its logs: we must see it.
        logging_nan_inf_filter=False,
        save_strategy="no",
        report_to=report_to,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and dtype == torch.bfloat16,
        # Checkpointing is switched on by us, on the model (trainable.enable_checkpointing): the
        # Trainer's own switch would make the embedding output require grad (see there).
        gradient_checkpointing=False,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # used when TRL re-enables it
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _rows(task: Task, config: TrainConfig) -> Dataset:
    items = task.items("train", config.n_train, config.seed)
    if not items:
        raise LayerwiseError(f"task {task.name!r} has no train items")
    return Dataset.from_list([it.to_row() for it in items])


def build_sft(model, tokenizer, task, config, args, callbacks, optimizer):
    from trl import SFTConfig, SFTTrainer

    pairs = sft_examples(task, "train", config.n_train, config.seed)
    if not pairs:
        raise LayerwiseError(f"task {task.name!r} has no SFT examples")
    data = Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
    sft_args = SFTConfig(**args, max_length=config.max_length, completion_only_loss=True,
                         packing=False, include_num_input_tokens_seen="non_padding")
    return SFTTrainer(model=model, args=sft_args, train_dataset=data, processing_class=tokenizer,
                      callbacks=callbacks, optimizers=(optimizer, None))


def _rl_common(config: TrainConfig, task: Task) -> dict[str, Any]:
    return dict(num_generations=config.num_generations,
                max_completion_length=config.max_completion_length or task.max_new_tokens,
                temperature=config.temperature, beta=config.beta)


def _reward_and_rollout(task: Task, tokenizer) -> tuple[Any, dict[str, Any]]:
    reward = task.make_reward() if hasattr(task, "make_reward") else reward_function(task)
    extra = {}
    if hasattr(task, "make_rollout_func"):
        extra["rollout_func"] = task.make_rollout_func(tokenizer)
    return reward, extra


def build_grpo(model, tokenizer, task, config, args, callbacks, optimizer):
    from trl import GRPOConfig, GRPOTrainer

    reward, extra = _reward_and_rollout(task, tokenizer)
    grpo_args = GRPOConfig(**args, **_rl_common(config, task), loss_type=config.method,
                           scale_rewards="none" if config.method == "dr_grpo" else "group")
    return GRPOTrainer(model=model, reward_funcs=reward, args=grpo_args,
                       train_dataset=_rows(task, config), processing_class=tokenizer,
                       callbacks=callbacks, optimizers=(optimizer, None), **extra)


def build_rloo(model, tokenizer, task, config, args, callbacks, optimizer):
    from trl import RLOOConfig, RLOOTrainer

    if hasattr(task, "make_rollout_func"):
        raise LayerwiseError(f"task {task.name!r} is multi-turn; RLOOTrainer has no rollout hook: "
                             f"use --method {', '.join(GRPO_METHODS)}")
    reward = task.make_reward() if hasattr(task, "make_reward") else reward_function(task)
    rloo_args = RLOOConfig(**args, **_rl_common(config, task))
    return RLOOTrainer(model=model, reward_funcs=reward, args=rloo_args,
                       train_dataset=_rows(task, config), processing_class=tokenizer,
                       callbacks=callbacks, optimizers=(optimizer, None))


def build_dpo(model, tokenizer, task, config, args, callbacks, optimizer, pairs: list[dict]):
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise LayerwiseError("no preference pair to train DPO on (see the pairs report above)")
    is_peft = hasattr(model, "disable_adapter")
    # A frozen copy of the starting policy; with LoRA the adapter is simply switched off instead.
    ref = None if is_peft else copy.deepcopy(model).eval().requires_grad_(False)
    dpo_args = DPOConfig(**args, beta=config.dpo_beta, max_length=config.max_length)
    return DPOTrainer(model=model, ref_model=ref, args=dpo_args,
                      train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                      callbacks=callbacks, optimizers=(optimizer, None))


BUILDERS = {"sft": build_sft, "rloo": build_rloo, "dpo": build_dpo,
            **{m: build_grpo for m in GRPO_METHODS}}
