"""The typed configuration of one training run, validated before anything heavy loads.

Each field is declared once, with its help text and CLI group in the field's metadata; the flags
of `layerwise train` and `layerwise sweep` are generated from these declarations
(`layerwise.cli.args`, in the manner of transformers' `HfArgumentParser`), and so are the keys of
a `--config FILE.yaml`. A bad combination (no trainable part, an unknown method, a negative step
count...) is a one-line `LayerwiseError` raised in `__post_init__`, before a model is loaded.

`ModelConfig` says which model to load and how; `TrainConfig` says what to do with it.
"""

from __future__ import annotations

import dataclasses

from dataclasses import asdict, dataclass, field
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.training.methods import METHODS, get_method

LORA_TARGETS = {"attn": "q, k, v, o projections (as in the mid-block paper)",
                "all": "every linear layer of the block (attention and MLP)"}
LORA_BUDGETS = ("fixed", "per-layer")
# What transformers' `report_to` accepts that we offer, and the package each needs.
REPORT_TO = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb",
             "mlflow": "mlflow", "none": None}
# Flags of `--dataset` runs, folded into the `dataset` task's options (tasks/dataset.py).
DATASET_FLAGS = ("dataset", "columns", "reward", "eval_dataset", "eval_split", "chat_template",
                 "loss_on")

# CLI groups, in the order --help shows them.
G_TASK, G_WHAT, G_OPT, G_RL, G_EVAL, G_RUN = (
    "task", "what trains (exactly one of --layers, --full, --lora)", "optimisation",
    "RL and preference", "evaluation and outputs", "run control")


def opt(default=None, help: str = "", group: str = G_OPT, *, factory=None, flag: str | None = None,
        choices=None, metavar: str | None = None, sweep: bool = True, **extra) -> Any:
    """A config field with its CLI metadata (`sweep=False`: not a flag of `layerwise sweep`)."""
    meta = {"help": help, "group": group, "flag": flag, "choices": choices, "metavar": metavar,
            "sweep": sweep, **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which model a run loads (shared by every command that loads one)."""

    model: str | None = opt(None, "HF id, local checkpoint dir, .gguf file, tiny:<family>[:SIZES] "
                            "(e.g. tiny:llama:layers=12,hidden=256,heads=8,ffn=1024), or omit for "
                            "the embedded model", "model", metavar="M",
                            none_means="the embedded SmolLM2-135M-Instruct")
    dtype: str = opt("auto", "auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16",
                     "model")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N", "model")
    trust_remote_code: bool = opt(False, "allow model code from the Hub", "model")
    tokenizer: str | None = opt(None, "tiny models only: byte, or bpe:N, a byte-level BPE of N "
                                "tokens trained on --data (saved with the model)", "model",
                                metavar="T", none_means="byte")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainConfig:
    # what to train on
    task: str = opt("arithmetic", "arithmetic, gsm8k, code, decision, lm, or FILE.py:FACTORY "
                    "(your own data: --dataset)", G_TASK)
    dataset: str | None = opt(None, "your own data in a TRL dataset type (.jsonl, .json, .csv, "
                              ".parquet, a save_to_disk directory, hf:NAME[:CONFIG][@SPLIT]); "
                              "docs/data.md", G_TASK, metavar="SPEC")
    columns: str | None = opt(None, "--dataset: rename columns, NEW=OLD,... (e.g. "
                              "prompt=question,completion=answer)", G_TASK, metavar="MAP")
    reward: list[str] = opt(help="--dataset: a reward, NAME[=WEIGHT] (math, exact, contains) or "
                            "FILE.py:FUNCTION[=WEIGHT] with TRL's signature; repeatable",
                            group=G_TASK, factory=list, metavar="R")
    eval_dataset: str | None = opt(None, "--dataset: held-out rows from another file", G_TASK,
                                   metavar="SPEC", none_means="--eval-split of --dataset")
    eval_split: str = opt("5%", "--dataset: the share (5%%) or count of rows held out, the same "
                          "rows whatever --seed", G_TASK, metavar="SHARE")
    chat_template: str | None = opt(None, "--dataset: a Jinja chat template for a model without "
                                    "one", G_TASK, metavar="FILE.jinja",
                                    none_means="the tokenizer's own")
    loss_on: str = opt("completion", "--dataset SFT: loss on the completion/assistant tokens, or "
                       "on all", G_TASK, choices=("completion", "all"))
    task_options: dict[str, Any] = opt(help="task knob KEY=VALUE, repeatable (arithmetic: digits, "
                                       "ops, steps; gsm8k: train, test; decision: low, high, "
                                       "max_turns; lm: seq_len)", group=G_TASK, factory=dict,
                                       flag="task-option", metavar="KEY=VALUE")
    data: str | None = opt(None, "lm task: the training text (.txt, .jsonl, hf:NAME)", G_TASK,
                           metavar="D", none_means="WikiText-2 valid from ../shared/data")
    eval_data: str | None = opt(None, "lm task: the held-out text scored before and after", G_TASK,
                                metavar="D", none_means="WikiText-2 test from ../shared/data")
    method: str = opt("sft", "training method", G_TASK, choices=tuple(METHODS))
    # what trains (exactly one of layers / full / lora)
    layers: str | None = opt(None, "train these blocks/parts in full, e.g. 15, mid:2, 20%%-80%%, "
                             "8-11:mlp (docs/selection.md)", G_WHAT, metavar="SPEC", sweep=False)
    full: bool = opt(False, "train every parameter", G_WHAT, sweep=False)
    lora: bool = opt(False, "train PEFT LoRA adapters", G_WHAT, sweep=False)
    rank: int = opt(16, "LoRA rank per module (with --lora-budget fixed: the rank standard LoRA "
                    "would give each block)", G_WHAT, sweep=False)
    lora_alpha: float | None = opt(None, "LoRA alpha", G_WHAT, sweep=False, none_means="2 x rank")
    lora_layers: str = opt("all", "blocks that get adapters, e.g. 40%%-60%% for the middle depth "
                           "segment", G_WHAT, metavar="SPEC", sweep=False)
    lora_targets: str = opt("attn", "attn: q,k,v,o (the mid-block paper); all: every linear layer",
                            G_WHAT, choices=tuple(LORA_TARGETS), sweep=False)
    lora_budget: str = opt("fixed", "fixed: total rank = rank x blocks, shared by --lora-layers "
                           "(mid-block LoRA); per-layer: --rank in each selected block", G_WHAT,
                           choices=LORA_BUDGETS, sweep=False)
    lr_scale: list[str] = opt(help="multiply the learning rate of these blocks by X, repeatable "
                              "(e.g. 12-14=3)", group=G_WHAT, factory=list, metavar="SPEC=X",
                              sweep=False)
    schedule: str = opt("fixed", "which blocks of --layers train at each step: fixed, lisa:G@K, "
                        "sample:G@K@FILE[:FIELD][@T], phases:SPEC@N;..., growth@FILE[:FIELD][@P][@skip|@last] "
                        "(docs/training.md)", G_WHAT,
                        metavar="POLICY")
    park: str = opt("keep", "an inactive block's optimizer state: keep (in place), cpu (host "
                    "memory while inactive), drop (LISA: start afresh)", G_WHAT,
                    choices=("keep", "cpu", "drop"))
    tying: str = opt("none", "blocks that share weights: none, static:all|pairs|cycle:K|mirror|"
                     "map:FILE, random, dqn[:faithful|:FAULT,...], dqn-gain[:cost=X] "
                     "(docs/training.md)", G_WHAT, metavar="POLICY", sweep=False)
    tie_every: int | None = opt(None, "dynamic tying: steps between two decisions", G_WHAT,
                                metavar="K", none_means="4 (the paper's minibatches per decision)", sweep=False)
    tied_save: str = opt("full", "a tied model's model/: full (plain HF, shared weights written "
                         "out), compact (each shared tensor once; layerwise restores the sharing), "
                         "both (model/ and model-compact/)", G_WHAT,
                         choices=("full", "compact", "both"), sweep=False)
    mask_from: str | None = opt(None, "subnetwork-only training: only entries where BASE and "
                                "TUNED differ (|delta| > --mask-tol, fp32) may change; BASE may be "
                                "'embedded', TUNED a run directory", G_WHAT, metavar="BASE,TUNED",
                                sweep=False)
    mask_tol: float = opt(1e-5, "tolerance of --mask-from", G_WHAT, sweep=False)
    # optimisation
    steps: int = opt(50, "optimizer steps")
    lr: float | None = opt(None, "learning rate", none_means="per method and mode: SFT 1e-4, "
                           "others 1e-5; LoRA: SFT 1e-3, others 2e-4")
    batch_size: int = opt(8, "sequences per step (RL: completions per step, a multiple of "
                          "--num-generations)")
    grad_accum: int = opt(1, "gradient accumulation steps")
    weight_decay: float = opt(0.0, "AdamW weight decay (not on biases and norms)")
    warmup_ratio: float = opt(0.0, "share of the steps with a linear warm-up")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward (non-reentrant: "
                                       "works with frozen blocks)")
    seed: int = opt(0, "training seed (data order, sampling, random init of tiny models)",
                    sweep=False)
    n_train: int = opt(1000, "training items drawn from the task (lm: windows)")
    max_length: int = opt(256, "SFT/DPO/KTO: max tokens per example")
    # RL / preference
    num_generations: int = opt(8, "completions per prompt (RL)", G_RL)
    max_completion_length: int | None = opt(None, "tokens per completion", G_RL,
                                            none_means="the task's answer budget")
    temperature: float = opt(1.0, "sampling temperature", G_RL)
    beta: float = opt(0.0, "KL coefficient of GRPO/RLOO", G_RL)
    dpo_beta: float = opt(0.1, "beta of DPO and KTO", G_RL)
    dpo_samples: int = opt(4, "DPO/KTO without --pairs: samples per prompt used to build pairs",
                           G_RL)
    pairs: str | None = opt(None, "DPO/KTO preference pairs (fields prompt, chosen, rejected)", G_RL,
                            metavar="FILE.jsonl", sweep=False)
    # evaluation and outputs
    eval_n: int = opt(100, "held-out items scored before and after (lm: windows)", G_EVAL)
    score_on: str = opt("eval", "which items score the run: eval (the held-out split), or "
                        "validation (eval_n items of the training split, never trained on: for a "
                        "sweep whose C(k) will select blocks, so that the runs it selects for are "
                        "never scored on items their selection saw)", G_EVAL, metavar="SPLIT")
    eval_batch_size: int = opt(32, "batch size of the held-out scoring", G_EVAL)
    eval_every: int | None = opt(None, "also score the held-out items every N steps: a curve in "
                                 "metrics.json (history, eval_score) and curves.png; the "
                                 "training itself is unchanged", G_EVAL, metavar="N",
                                 none_means="before and after only")
    general_data: str | None = opt(None, "text for the forgetting check", G_EVAL, metavar="D",
                                   none_means="the embedded text")
    general_seqs: int = opt(4, "windows of the forgetting check", G_EVAL)
    general_seq_len: int = opt(256, "tokens per window of the forgetting check", G_EVAL)
    forgetting: str | None = opt(None, "also measure forgetting with lm-evaluation-harness "
                                 "before and after: lm-eval:TASK[,TASK...]", G_EVAL,
                                 metavar="lm-eval:TASKS", none_means="general-text perplexity only")
    lm_eval_limit: int | None = opt(None, "lm-eval: items per task", G_EVAL, metavar="N",
                                    none_means="every item")
    lm_eval_include: str | None = opt(None, "lm-eval: a directory of your own task YAMLs",
                                      G_EVAL, metavar="DIR")
    out: str | None = opt(None, "run directory: model/, metrics.json, config.yaml, curves.png, eval "
                          "records, logs", G_EVAL, metavar="DIR", sweep=False,
                          none_means="runs/<time>-<method>")
    merge: bool = opt(False, "LoRA: also save a merged copy (merged/)", G_EVAL, sweep=False)
    report_to: str = opt("tensorboard", "where the trainer logs (as transformers' report_to): "
                         "tensorboard (into OUT/tensorboard), trackio, wandb, mlflow or none",
                         G_EVAL, choices=tuple(REPORT_TO))
    logging_steps: int = opt(1, "log every N steps", G_EVAL)
    # run control
    save_every: int | None = opt(None, "write a resumable checkpoint (weights, optimizer, "
                                 "scheduler, RNG, data position) every N steps; an interrupted run "
                                 "always writes one", G_RUN, metavar="N", sweep=False,
                                 none_means="only when interrupted")
    overwrite: bool = opt(False, "replace an earlier run in --out (its files are removed)", G_RUN,
                          sweep=False)
    progress: bool = opt(True, "", G_RUN, cli=False)

    def __post_init__(self):
        from layerwise.tasks.registry import absolute_file, absolute_paths

        self._fold_dataset()
        # Paths a run's config.yaml (and --resume from elsewhere) must still find.
        self.task, self.task_options = absolute_paths(self.task, dict(self.task_options))
        self.data, self.eval_data = absolute_file(self.data), absolute_file(self.eval_data)
        self.general_data, self.pairs = absolute_file(self.general_data), absolute_file(self.pairs)
        method = get_method(self.method)
        chosen = [n for n, on in (("--layers", self.layers is not None), ("--full", self.full),
                                  ("--lora", self.lora)) if on]
        if len(chosen) != 1:
            raise LayerwiseError("say what trains with exactly one of --layers SPEC, --full, --lora"
                                 + (f" (got {' and '.join(chosen)})" if chosen else ""))
        if self.task == "lm" and not method.trains_on_text:
            raise LayerwiseError(f"the lm task trains on text windows: --method "
                                 f"{' or '.join(m.name for m in METHODS.values() if m.trains_on_text)}"
                                 f" (got {self.method})")
        if self.lora_targets not in LORA_TARGETS:
            raise LayerwiseError(f"--lora-targets {self.lora_targets!r}; valid: {', '.join(LORA_TARGETS)}")
        if self.lora_budget not in LORA_BUDGETS:
            raise LayerwiseError(f"--lora-budget {self.lora_budget!r}; valid: {', '.join(LORA_BUDGETS)}")
        check_report_to(self.report_to)
        from layerwise.tasks.validation import SCORE_ON

        if self.score_on not in SCORE_ON:
            raise LayerwiseError(f"--score-on {self.score_on!r}; valid: {', '.join(SCORE_ON)}")
        if self.forgetting is not None:
            from layerwise.evaluation.harness import parse_lm_eval_tasks

            if not self.forgetting.startswith("lm-eval:"):
                raise LayerwiseError(f"--forgetting {self.forgetting!r}: expected "
                                     "lm-eval:TASK[,TASK...]")
            parse_lm_eval_tasks(self.forgetting.removeprefix("lm-eval:"))
        elif self.lm_eval_limit is not None or self.lm_eval_include is not None:
            raise LayerwiseError("--lm-eval-limit/--lm-eval-include configure --forgetting "
                                 "lm-eval:TASKS; add it")
        if self.lm_eval_limit is not None and self.lm_eval_limit < 1:
            raise LayerwiseError(f"--lm-eval-limit {self.lm_eval_limit}: must be >= 1")
        for name in ("steps", "batch_size", "grad_accum", "rank", "n_train", "max_length",
                     "num_generations", "eval_n", "eval_batch_size", "dpo_samples",
                     "logging_steps", "general_seqs", "general_seq_len"):
            if getattr(self, name) < 1:
                raise LayerwiseError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.save_every is not None and self.save_every < 1:
            raise LayerwiseError(f"--save-every {self.save_every}: must be >= 1")
        if self.eval_every is not None and self.eval_every < 1:
            raise LayerwiseError(f"--eval-every {self.eval_every}: must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise LayerwiseError(f"--lr {self.lr}: must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise LayerwiseError(f"--warmup-ratio {self.warmup_ratio}: must be in [0, 1)")
        if self.group_relative:
            if self.num_generations < 2:
                raise LayerwiseError("--num-generations must be >= 2: group-relative methods "
                                     "compare completions of the same prompt")
            if self.batch_size % self.num_generations:
                raise LayerwiseError(f"--batch-size {self.batch_size} must be a multiple of "
                                     f"--num-generations {self.num_generations} (whole groups per step)")
        if method.needs_pairs and self.dpo_samples < 2 and not self.pairs:
            raise LayerwiseError("--dpo-samples must be >= 2 to find a correct and an incorrect sample")
        if self.pairs and not method.needs_pairs:
            raise LayerwiseError(f"--pairs is for preference methods "
                                 f"({', '.join(m.name for m in METHODS.values() if m.needs_pairs)})")
        if self.mask_from is not None:
            parts = [p.strip() for p in self.mask_from.split(",")]
            if len(parts) != 2 or not all(parts):
                raise LayerwiseError(f"--mask-from {self.mask_from!r}: expected BASE,TUNED (two "
                                     "checkpoints separated by a comma)")
            if self.lora:
                raise LayerwiseError("--mask-from masks full-parameter training: use --full or --layers")
        if self.schedule != "fixed":
            if self.layers is None:
                raise LayerwiseError(f"--schedule {self.schedule!r} draws blocks from --layers; "
                                     "with --full or --lora it means nothing (use --layers SPEC)")
            if self.mask_from:
                raise LayerwiseError("--schedule and --mask-from together are not supported")
        self._check_tying(method)
        if self.mask_tol < 0:
            raise LayerwiseError(f"--mask-tol {self.mask_tol}: must be >= 0")
        if self.merge and not self.lora:
            raise LayerwiseError("--merge applies to --lora runs only")
        if not self.lora:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            stray = [f"--{n.replace('_', '-')}" for n in ("rank", "lora_alpha", "lora_layers",
                                                         "lora_targets", "lora_budget")
                     if getattr(self, n) != defaults[n]]
            if stray:
                raise LayerwiseError(f"{', '.join(stray)} configure LoRA adapters: add --lora "
                                     "(this run trains without adapters)")
        if (self.data or self.eval_data) and self.task != "lm":
            raise LayerwiseError("--data/--eval-data are the lm task's texts: add --task lm "
                                 "(other tasks take their files as --task-option)")

    def _fold_dataset(self) -> None:
        """`--dataset` and its flags become the `dataset` task and its options (fold_dataset)."""
        values = fold_dataset({f: getattr(self, f) for f in ("task", "task_options", *DATASET_FLAGS)})
        for key, value in values.items():
            setattr(self, key, value)

    def _check_tying(self, method) -> None:
        from layerwise.training.tying import parse_tying

        spec = parse_tying(self.tying)
        if self.tie_every is not None and self.tie_every < 1:
            raise LayerwiseError(f"--tie-every {self.tie_every}: must be >= 1")
        if self.tied_save not in ("full", "compact", "both"):
            raise LayerwiseError(f"--tied-save {self.tied_save!r}; valid: full, compact, both")
        if self.tie_every is not None and not spec.dynamic:
            raise LayerwiseError(f"--tie-every applies to dynamic tying (--tying random, dqn, "
                                 f"dqn-gain); --tying {self.tying!r} decides nothing during the run")
        if not spec.active:
            return
        if self.lora:
            raise LayerwiseError(f"--tying {self.tying!r} with --lora: tying shares a block's own "
                                 "weights, LoRA freezes them (use --full or --layers)")
        if self.schedule != "fixed":
            raise LayerwiseError("--tying and --schedule together are not supported")
        if self.mask_from:
            raise LayerwiseError("--tying and --mask-from together are not supported")
        if spec.dynamic:
            if not self.full:
                raise LayerwiseError(f"--tying {self.tying!r} decides for every block: use --full")
            if not method.trains_on_text:
                raise LayerwiseError(f"--tying {self.tying!r} is rewarded by a cross-entropy on "
                                     "the training data: --method sft (static tying works with "
                                     "every method)")

    def lm_eval_tasks(self) -> list[str]:
        from layerwise.evaluation.harness import parse_lm_eval_tasks

        return parse_lm_eval_tasks(self.forgetting.removeprefix("lm-eval:")) if self.forgetting else []

    @property
    def mode(self) -> str:
        return "lora" if self.lora else "full" if self.full else "layers"

    @property
    def group_relative(self) -> bool:
        return get_method(self.method).group_relative

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else get_method(self.method).default_lr(self.mode)

    def make_task(self):
        """The task the run trains and is scored on (`--score-on validation`: its validation
        view, tasks/validation.py)."""
        from layerwise.tasks.registry import get_task

        task = get_task(self.task, **self.task_kwargs())
        if self.score_on == "validation":
            from layerwise.tasks.validation import validation_view

            task = validation_view(task, self.eval_n)
        return task

    def task_kwargs(self) -> dict[str, Any]:
        """The task factory's options, with --data/--eval-data for the lm task."""
        kw = dict(self.task_options)
        if self.task == "lm":
            if self.data:
                kw.setdefault("train", self.data)
            if self.eval_data:
                kw.setdefault("eval", self.eval_data)
        return kw

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in dataclasses.fields(TrainConfig)}
_DEFAULTS["eval_split"] = "5%"


def _absolute_reward(spec: str) -> str:
    """A FILE.py:FUNCTION reward with FILE made absolute (a stored run must find it anywhere)."""
    from pathlib import Path

    source, sep, weight = spec.rpartition("=") if "=" in spec else (spec, "", "")
    file, colon, function = source.rpartition(":")
    if colon and file.endswith(".py") and Path(file).expanduser().is_file():
        source = f"{Path(file).expanduser().resolve()}:{function}"
    return source + (f"={weight}" if sep else "")


def check_report_to(value: str) -> None:
    """A --report-to transformers knows and whose package is installed (else one line)."""
    import importlib.util

    if value not in REPORT_TO:
        raise LayerwiseError(f"--report-to {value!r}; valid: {', '.join(REPORT_TO)}")
    package = REPORT_TO[value]
    if package and importlib.util.find_spec(package) is None:
        raise LayerwiseError(f"--report-to {value}: the {package} package is not installed "
                             f"(pip install {package})")


def fold_dataset(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (TrainConfig field names) with `--dataset` and its flags folded into the
    `dataset` task and its options, the flags reset: one code path for every command that takes
    a task (train, sweep, tune, estimate, eval), and a config.yaml that repeats the run."""
    from pathlib import Path

    values = dict(values)
    given = [f for f in DATASET_FLAGS[1:] if f in values and values[f] != _DEFAULTS[f]]
    if values.get("dataset") is None:
        if given:
            raise LayerwiseError(f"{', '.join('--' + f.replace('_', '-') for f in given)}: only "
                                 "with your own data: add --dataset SPEC")
        return values
    if values.get("task", "arithmetic") not in ("arithmetic", "dataset"):
        raise LayerwiseError(f"--dataset and --task {values['task']}: give one of them")

    def local(value):
        path = Path(str(value)).expanduser()
        return str(path.resolve()) if value and path.exists() else value

    get = lambda f: values.get(f, _DEFAULTS[f])  # noqa: E731
    options = {"columns": get("columns"),
               "reward": ",".join(_absolute_reward(r) for r in get("reward")) or None,
               "eval_dataset": local(get("eval_dataset")), "eval_split": get("eval_split"),
               "chat_template": local(get("chat_template")), "loss_on": get("loss_on")}
    values["task"] = "dataset"
    values["task_options"] = dict(values.get("task_options") or {}) | {
        k: v for k, v in options.items() if v is not None and v != _DEFAULTS.get(k)} | {
        "path": local(values["dataset"])}
    for f in DATASET_FLAGS:
        if f in values:
            values[f] = list(_DEFAULTS[f]) if isinstance(_DEFAULTS[f], list) else _DEFAULTS[f]
    return values
