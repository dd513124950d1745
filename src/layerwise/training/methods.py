"""The table of training methods: one entry per method, one small builder per TRL trainer.

| method | TRL trainer | data |
|---|---|---|
| `sft` | `SFTTrainer` | prompt/completion pairs (loss on the completion); `lm`: text windows |
| `grpo`, `dr_grpo`, `dapo` | `GRPOTrainer` with that `loss_type` | the task's prompts and reward |
| `rloo` | `RLOOTrainer` | the task's prompts and reward |
| `dpo` | `DPOTrainer` | preference pairs (`--pairs`, or the model's own samples) |
| `kto` | `KTOTrainer` | the same pairs, unpaired: chosen = desirable, rejected = undesirable |

With `--dataset` (tasks/dataset.py) each method takes the TRL dataset types its trainer takes,
listed in its entry's `dataset_types`; the rows go to the trainer in TRL's own format (SFT
pre-tokenized by `layerwise.data.chat.sft_tokens`, which equals SFTTrainer's own tokenization).

Adding a TRL method is one `Method` entry: its builder gets the already frozen (or LoRA-wrapped)
model and an optimizer over its trainable parameters, and returns the trainer. No trainer is
subclassed and no trainer internals are touched. Everything else (config validation, the CLI
choices, the recipe, sweeps) reads the entry's attributes, never the method's name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import Task, reward_function, sft_examples

if TYPE_CHECKING:
    from layerwise.training.config import TrainConfig


@dataclass(frozen=True)
class Method:
    name: str
    trainer: str  # the TRL class
    build: Callable[..., Any]  # (model, tokenizer, task, config, args, callbacks, optimizer, pairs)
    description: str
    is_rl: bool = False  # samples completions and scores them with the task's reward
    group_relative: bool = False  # a batch is whole groups of --num-generations completions
    needs_pairs: bool = False  # preference data: --pairs, or pairs from the model's own samples
    trains_on_text: bool = False  # can train the `lm` task on plain text windows
    multi_turn: bool = False  # takes a task's `rollout_func` (multi-turn episodes)
    lr_full: float = 1e-5  # default learning rate, full-parameter or block training
    lr_lora: float = 2e-4  # default learning rate, LoRA adapters (they start at zero)
    dataset_types: tuple[str, ...] = ()  # TRL dataset types of a --dataset it trains on
    needs_reward: bool = False  # a --dataset run needs --reward

    def check_dataset(self, detected, has_reward: bool, where: str) -> None:
        """The user's dataset is of a type this method's trainer takes (one line otherwise)."""
        from layerwise.data.formats import public_name

        if public_name(detected.type) not in self.dataset_types:
            raise LayerwiseError(f"--method {self.name} ({self.trainer}) takes "
                                 f"{' or '.join(self.dataset_types)} data; {where} is "
                                 f"{detected.describe()}")
        if self.needs_reward and not has_reward:
            raise LayerwiseError(f"--method {self.name} learns from a reward: add --reward NAME "
                                 "(math, exact, contains) or --reward FILE.py:FUNCTION")

    def default_lr(self, mode: str) -> float:
        return self.lr_lora if mode == "lora" else self.lr_full


def common_args(config: "TrainConfig", output_dir: str, report_to: list[str],
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
        # Checkpoints are written every --save-every steps (and on interruption, by our callback).
        save_strategy="steps" if config.save_every else "no",
        save_steps=config.save_every or 500,
        save_total_limit=2,  # the newest and the one before, in case the newest is incomplete
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
        # Frozen blocks get no gradient: DDP must not wait for them. Under --schedule the active
        # blocks change during the run: DDP finds the unused ones each step (and leaves their
        # gradients None on every rank, so AdamW skips them as in one process).
        ddp_find_unused_parameters=config.schedule != "fixed",
    )


def _rows(task: Task, config: "TrainConfig"):
    from datasets import Dataset

    if getattr(task, "kind", None) == "dataset":
        return task.rl_dataset(config.n_train, config.seed)
    items = task.items("train", config.n_train, config.seed)
    if not items:
        raise LayerwiseError(f"task {task.name!r} has no train items")
    return Dataset.from_list([it.to_row() for it in items])


def build_sft(model, tokenizer, task, config, args, callbacks, optimizer, pairs=None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if getattr(task, "kind", None) == "lm":
        # Pre-tokenized windows: every token is a target (plain language modelling).
        data = task.train_dataset(tokenizer, config.n_train, config.seed)
        extra = {"completion_only_loss": False, "dataset_kwargs": {"skip_prepare_dataset": True}}
    elif getattr(task, "kind", None) == "dataset":
        # input_ids + labels, built as SFTTrainer builds them (it then only truncates).
        data, _ = task.sft_dataset(tokenizer, config.n_train, config.seed, config.max_length)
        extra = {}
    else:
        examples = sft_examples(task, "train", config.n_train, config.seed)
        if not examples:
            raise LayerwiseError(f"task {task.name!r} has no SFT examples")
        data = Dataset.from_list([{"prompt": p, "completion": c} for p, c in examples])
        extra = {"completion_only_loss": True}
    sft_args = SFTConfig(**args, max_length=config.max_length, packing=False,
                         include_num_input_tokens_seen="non_padding", **extra)
    return SFTTrainer(model=model, args=sft_args, train_dataset=data, processing_class=tokenizer,
                      callbacks=callbacks, optimizers=(optimizer, None))


def _rl_common(config: "TrainConfig", task: Task) -> dict[str, Any]:
    return dict(num_generations=config.num_generations,
                max_completion_length=config.max_completion_length or task.max_new_tokens,
                temperature=config.temperature, beta=config.beta)


def _reward(task: Task):
    if getattr(task, "kind", None) == "dataset":
        return task.reward_funcs()[0]
    return task.make_reward() if hasattr(task, "make_reward") else reward_function(task)


def _reward_weights(task: Task) -> dict[str, Any]:
    """GRPOConfig/RLOOConfig's `reward_weights` for a dataset's weighted --reward list."""
    if getattr(task, "kind", None) == "dataset":
        return {"reward_weights": task.reward_funcs()[1]}
    return {}


def build_grpo(model, tokenizer, task, config, args, callbacks, optimizer, pairs=None):
    from trl import GRPOConfig, GRPOTrainer

    extra = {}
    if hasattr(task, "make_rollout_func"):
        extra["rollout_func"] = task.make_rollout_func(tokenizer)
    grpo_args = GRPOConfig(**args, **_rl_common(config, task), **_reward_weights(task),
                           loss_type=config.method,
                           scale_rewards="none" if config.method == "dr_grpo" else "group")
    return GRPOTrainer(model=model, reward_funcs=_reward(task), args=grpo_args,
                       train_dataset=_rows(task, config), processing_class=tokenizer,
                       callbacks=callbacks, optimizers=(optimizer, None), **extra)


def build_rloo(model, tokenizer, task, config, args, callbacks, optimizer, pairs=None):
    from trl import RLOOConfig, RLOOTrainer

    if hasattr(task, "make_rollout_func"):
        multi = ", ".join(m.name for m in METHODS.values() if m.multi_turn)
        raise LayerwiseError(f"task {task.name!r} is multi-turn; RLOOTrainer has no rollout hook: "
                             f"use --method {multi}")
    rloo_args = RLOOConfig(**args, **_rl_common(config, task), **_reward_weights(task))
    return RLOOTrainer(model=model, reward_funcs=_reward(task), args=rloo_args,
                       train_dataset=_rows(task, config), processing_class=tokenizer,
                       callbacks=callbacks, optimizers=(optimizer, None))


def _reference(model):
    """A frozen copy of the starting policy; with LoRA the adapter is switched off instead."""
    return None if hasattr(model, "disable_adapter") else copy.deepcopy(model).eval().requires_grad_(False)


def build_dpo(model, tokenizer, task, config, args, callbacks, optimizer, pairs=None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if getattr(task, "kind", None) == "dataset":
        data = task.preference_dataset(config.n_train, config.seed, unpaired=False)
    elif not pairs:
        raise LayerwiseError("no preference pair to train DPO on (see the pairs report above)")
    else:
        data = Dataset.from_list(pairs)
    dpo_args = DPOConfig(**args, beta=config.dpo_beta, max_length=config.max_length)
    return DPOTrainer(model=model, ref_model=_reference(model), args=dpo_args,
                      train_dataset=data, processing_class=tokenizer,
                      callbacks=callbacks, optimizers=(optimizer, None))


def kto_rows(pairs: list[dict]) -> list[dict]:
    """KTO learns from unpaired examples: each pair gives a desirable and an undesirable one."""
    rows = []
    for p in pairs:
        rows.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
        rows.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
    return rows


def build_kto(model, tokenizer, task, config, args, callbacks, optimizer, pairs=None):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    if getattr(task, "kind", None) == "dataset":
        data = task.preference_dataset(config.n_train, config.seed, unpaired=True)
    elif not pairs:
        raise LayerwiseError("no preference pair to train KTO on (see the pairs report above)")
    else:
        data = Dataset.from_list(kto_rows(pairs))
    if config.batch_size < 2:
        raise LayerwiseError("KTO estimates its KL term from mismatched pairs within a batch: "
                             "--batch-size must be >= 2")
    kto_args = KTOConfig(**args, beta=config.dpo_beta, max_length=config.max_length)
    return KTOTrainer(model=model, ref_model=_reference(model), args=kto_args,
                      train_dataset=data, processing_class=tokenizer,
                      callbacks=callbacks, optimizers=(optimizer, None))


SFT_TYPES = ("language-modelling", "prompt-completion")
RL_TYPES = ("prompt-only", "prompt-completion")


def _grpo(name: str, description: str) -> Method:
    return Method(name, "GRPOTrainer", build_grpo, description, is_rl=True, group_relative=True,
                  multi_turn=True, dataset_types=RL_TYPES, needs_reward=True)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "SFTTrainer", build_sft, "supervised fine-tuning on the task's targets (lm: on "
           "text)", trains_on_text=True, lr_full=1e-4, lr_lora=1e-3, dataset_types=SFT_TYPES),
    _grpo("grpo", "GRPO: group-relative advantages, sequence-level loss normalisation"),
    _grpo("dr_grpo", "Dr. GRPO: no per-group std scaling, constant normaliser"),
    _grpo("dapo", "DAPO: token-level loss normalisation"),
    Method("rloo", "RLOOTrainer", build_rloo, "REINFORCE leave-one-out", is_rl=True,
           group_relative=True, dataset_types=RL_TYPES, needs_reward=True),
    Method("dpo", "DPOTrainer", build_dpo, "direct preference optimisation on pairs",
           needs_pairs=True, dataset_types=("preference",)),
    Method("kto", "KTOTrainer", build_kto, "Kahneman-Tversky optimisation on unpaired "
           "desirable/undesirable examples", needs_pairs=True,
           dataset_types=("unpaired-preference", "preference")),
)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise LayerwiseError(f"unknown method {name!r}; valid: {', '.join(METHODS)}") from None
