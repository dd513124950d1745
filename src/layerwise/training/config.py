"""The typed configuration of one training run, validated before anything heavy loads.

Every CLI flag of `layerwise train` maps onto one field here, with its help text, and a bad
combination (no trainable part, an unknown method, a negative step count...) is a one-line
`LayerwiseError` raised in `__post_init__`, before a model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from layerwise.errors import LayerwiseError

SFT_METHODS = ("sft",)
GRPO_METHODS = ("grpo", "dr_grpo", "dapo")  # GRPOTrainer loss types
RL_METHODS = GRPO_METHODS + ("rloo",)
METHODS = SFT_METHODS + RL_METHODS + ("dpo",)
LORA_TARGETS = {"attn": "q, k, v, o projections (as in the mid-block paper)",
                "all": "every linear layer of the block (attention and MLP)"}
LORA_BUDGETS = ("fixed", "per-layer")


@dataclass
class TrainConfig:
    # what to train on
    task: str = field(default="arithmetic", metadata={"help": "task name or FILE.py:FACTORY"})
    task_options: dict[str, Any] = field(default_factory=dict)
    method: str = field(default="sft", metadata={"help": "one of " + ", ".join(METHODS)})
    # what trains (exactly one of layers / full / lora)
    layers: str | None = field(default=None, metadata={"help": "selection spec trained in full"})
    full: bool = False
    lora: bool = False
    rank: int = 16
    lora_alpha: float | None = None  # default: 2 x the rank each module gets
    lora_layers: str = "all"
    lora_targets: str = "attn"
    lora_budget: str = field(default="fixed", metadata={
        "help": "fixed: the total rank (rank x number of blocks) is shared by the --lora-layers "
                "blocks (mid-block LoRA); per-layer: each selected block gets --rank"})
    lr_scale: list[str] = field(default_factory=list)  # ["10-12=2", ...]
    # optimisation
    steps: int = 50
    lr: float | None = None  # default per method, see default_lr
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    seed: int = 0
    # data
    n_train: int = 1000
    max_length: int = 256
    # RL / preference
    num_generations: int = 8
    max_completion_length: int | None = None  # default: the task's max_new_tokens
    temperature: float = 1.0
    beta: float = 0.0  # KL coefficient (GRPO/RLOO); DPO uses dpo_beta
    dpo_beta: float = 0.1
    dpo_samples: int = 4  # completions sampled per prompt to build preference pairs
    pairs: str | None = None  # a .jsonl of prompt/chosen/rejected, instead of self-sampled pairs
    # subnetwork-only training: "BASE,TUNED" checkpoints whose differing entries may train
    mask_from: str | None = None
    mask_tol: float = 1e-5
    # evaluation and outputs
    eval_n: int = 100
    eval_batch_size: int = 32
    general_data: str | None = None
    general_seqs: int = 4
    general_seq_len: int = 256
    out: str | None = None
    merge: bool = False
    logging_steps: int = 1
    progress: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise LayerwiseError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        chosen = [n for n, on in (("--layers", self.layers is not None), ("--full", self.full),
                                  ("--lora", self.lora)) if on]
        if len(chosen) != 1:
            raise LayerwiseError("say what trains with exactly one of --layers SPEC, --full, --lora"
                                 + (f" (got {' and '.join(chosen)})" if chosen else ""))
        if self.lora_targets not in LORA_TARGETS:
            raise LayerwiseError(f"--lora-targets {self.lora_targets!r}; valid: {', '.join(LORA_TARGETS)}")
        if self.lora_budget not in LORA_BUDGETS:
            raise LayerwiseError(f"--lora-budget {self.lora_budget!r}; valid: {', '.join(LORA_BUDGETS)}")
        for name in ("steps", "batch_size", "grad_accum", "rank", "n_train", "max_length",
                     "num_generations", "eval_n", "dpo_samples", "logging_steps"):
            if getattr(self, name) < 1:
                raise LayerwiseError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise LayerwiseError(f"--lr {self.lr}: must be > 0")
        if self.method in RL_METHODS:
            if self.num_generations < 2:
                raise LayerwiseError("--num-generations must be >= 2: group-relative methods "
                                     "compare completions of the same prompt")
            if self.batch_size % self.num_generations:
                raise LayerwiseError(f"--batch-size {self.batch_size} must be a multiple of "
                                     f"--num-generations {self.num_generations} (whole groups per step)")
        if self.method == "dpo" and self.dpo_samples < 2 and not self.pairs:
            raise LayerwiseError("--dpo-samples must be >= 2 to find a correct and an incorrect sample")
        if self.mask_from and self.lora:
            raise LayerwiseError("--mask-from masks full-parameter training: use --full or --layers")
        if self.mask_tol < 0:
            raise LayerwiseError(f"--mask-tol {self.mask_tol}: must be >= 0")
        if self.merge and not self.lora:
            raise LayerwiseError("--merge applies to --lora runs only")

    @property
    def mode(self) -> str:
        return "lora" if self.lora else "full" if self.full else "layers"

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.method, self.mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_lr(method: str, mode: str) -> float:
    """Learning rates that work for ~100M-1B models in a few hundred steps on these tasks.

    LoRA adapters start at zero and need a larger rate; RL moves the policy more gently than SFT.
    """
    if mode == "lora":
        return 1e-3 if method == "sft" else 2e-4
    return 1e-4 if method == "sft" else 1e-5
