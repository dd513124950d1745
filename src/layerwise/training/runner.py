"""`train`: one layer-selective (or full, or LoRA) training run, evaluated before and after.

The run reads top to bottom: load the task (cheap, fails fast), load the model, score the base
model on held-out items and on general text, decide what trains, build the optimizer over the
trainable parameters only, hand both to the TRL trainer for the method, train, score again, and
write the checkpoint and metrics. Everything a later comparison needs is in metrics.json.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from layerwise.data.corpus import load_corpus, token_windows
from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation import ensure_pad_token
from layerwise.evaluation.perplexity import perplexity
from layerwise.evaluation.task_eval import TaskEvaluation, evaluate_task, write_records
from layerwise.models.loading import LoadedModel, load_model
from layerwise.tasks.registry import get_task
from layerwise.training.callbacks import (
    LiveProgress,
    NaNGuard,
    RunRecorder,
    peak_memory_mb,
)
from layerwise.training.config import TrainConfig
from layerwise.training.methods import BUILDERS, common_args
from layerwise.training.outputs import plot_curves, save_model_atomic, write_metrics
from layerwise.training.preference import load_pairs, self_sampled_pairs
from layerwise.training.subnetwork import SubnetworkMask, build_masks, closeness
from layerwise.training.trainable import (
    build_optimizer,
    enable_checkpointing,
    optimizer_state_bytes,
    prepare_trainable,
)

log = logging.getLogger(__name__)
EVAL_SEED = 0  # every run, whatever its training seed, is scored on the same held-out items


@dataclass
class TrainResult:
    metrics: dict
    model: torch.nn.Module
    tokenizer: object
    trainer: object = None
    history: list[dict] = field(default_factory=list)


def _general_windows(tokenizer, config: TrainConfig, max_context):
    corpus = load_corpus(config.general_data)
    return token_windows(tokenizer, corpus, config.general_seq_len, config.general_seqs, max_context)


@contextlib.contextmanager
def _tensorboard_dir(path: Path | None):
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if path is not None:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if path is not None:
            if old is None:
                os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
            else:
                os.environ["TENSORBOARD_LOGGING_DIR"] = old


def _score(model, tokenizer, task, config, windows):
    ev = evaluate_task(model, tokenizer, task, n=config.eval_n, seed=EVAL_SEED,
                       batch_size=config.eval_batch_size)
    ppl = perplexity(model, windows) if windows is not None else None
    return ev, ppl


def score_base(config: TrainConfig, loaded: LoadedModel) -> tuple[TaskEvaluation, float | None]:
    """The base model's held-out accuracy and general-text perplexity, as `train` measures them."""
    task = get_task(config.task, **config.task_options)
    ensure_pad_token(loaded.tokenizer)
    windows = _general_windows(loaded.tokenizer, config, loaded.context_length)
    return _score(loaded.model, loaded.tokenizer, task, config, windows)


def train(config: TrainConfig, model_spec: str | None = None, *, dtype: str = "auto",
          device: str = "auto", trust_remote_code: bool = False,
          extra_callbacks: list | None = None, loaded: LoadedModel | None = None,
          base: tuple[TaskEvaluation, float | None] | None = None) -> TrainResult:
    """Train as `config` says and score before and after.

    `loaded` (a model the caller already holds, trained in place) and `base` (the base model's
    scores from `score_base`) let a sweep load once and score the base once for many runs.
    """
    task = get_task(config.task, **config.task_options)
    pairs = load_pairs(config.pairs) if config.pairs else None
    out = Path(config.out) if config.out else None
    metrics: dict = {"status": "running", "task": task.name, "task_options": config.task_options,
                     "method": config.method, "mode": config.mode, "seed": config.seed,
                     "config": config.to_dict(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_metrics(out, metrics)
    wall_start = time.perf_counter()

    if loaded is None:
        loaded = load_model(model_spec, dtype=dtype, device=device, seed=config.seed,
                            trust_remote_code=trust_remote_code)
    model, tokenizer = loaded.model, loaded.tokenizer
    ensure_pad_token(tokenizer)
    dev = next(model.parameters()).device
    windows = _general_windows(tokenizer, config, loaded.context_length)

    if base is None:
        log.info("scoring the base model on %d %s items", config.eval_n, task.name)
        base = _score(model, tokenizer, task, config, windows)
    base_eval, base_ppl = base
    transformers.set_seed(config.seed)
    trainable = prepare_trainable(model, config)
    model = trainable.model
    log.info("training %s: %s trainable of %s parameters (%.2f%%)", trainable.description,
             f"{trainable.trainable_params:,}", f"{trainable.total_params:,}", 100 * trainable.share)
    optimizer = build_optimizer(model, config)
    if config.gradient_checkpointing:
        enable_checkpointing(model)

    pair_report = None
    if config.method == "dpo" and pairs is None:
        pairs, pair_report = self_sampled_pairs(model, tokenizer, task, config)
        log.info("preference pairs from the model's own samples: %s", pair_report)

    recorder, guard = RunRecorder(), NaNGuard(model)
    callbacks = [recorder, guard, LiveProgress(f"{config.method} {trainable.description}",
                                               enabled=config.progress), *(extra_callbacks or [])]
    subnetwork = None
    if config.mask_from:
        masks = build_masks(model, config.mask_from, config.mask_tol)
        subnetwork = SubnetworkMask(model, masks)
        callbacks.insert(0, subnetwork)  # restore masked entries before the NaN guard snapshots
        log.info("subnetwork training: %.2f%% of the trainable entries may change",
                 100 * subnetwork.kept_share)
    scratch = tempfile.mkdtemp(prefix="layerwise-trainer-")  # the Trainer's output_dir: unused
    trainer_dir = Path(scratch)
    report_to = ["tensorboard"] if out is not None else []
    args = common_args(config, str(trainer_dir), report_to, dev, next(model.parameters()).dtype)
    builder = BUILDERS[config.method]
    extra = {"pairs": pairs} if config.method == "dpo" else {}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    model.train()
    error = None
    try:
        with _tensorboard_dir(out / "tensorboard" if out is not None else None):
            trainer = builder(model, tokenizer, task, config, args, callbacks, optimizer, **extra)
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            # Ours shows the running reward as well, and keeps stdout for results.
            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
            try:
                trainer.train()
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory: keep the last good weights
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                guard.restore()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = trainer.model
    model.eval()
    state = trainer.state
    train_seconds = recorder.train_seconds or sum(recorder.step_seconds)
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)

    status = "failed" if (guard.failed_reason or error) else "completed"
    log.info("scoring the trained model")
    final_eval, final_ppl = _score(model, tokenizer, task, config, windows)
    metrics.update({
        "status": status,
        "failure": guard.failed_reason or error,
        "model": loaded.spec, "model_source": loaded.source,
        "trainable": {"description": trainable.description, "params": trainable.trainable_params,
                      "total_params": trainable.total_params, "share": trainable.share,
                      "blocks": list(trainable.blocks), "lowest_block": trainable.lowest_block,
                      "lora": trainable.lora,
                      "lr_groups": [{"lr": g["lr"], "lr_scale": g.get("lr_scale", 1.0),
                                     "tensors": len(g["params"])} for g in optimizer.param_groups]},
        "base": {"accuracy": base_eval.accuracy, "mean_score": base_eval.mean_score,
                 "general_perplexity": base_ppl},
        "final": {"accuracy": final_eval.accuracy, "mean_score": final_eval.mean_score,
                  "general_perplexity": final_ppl},
        "accuracy_gain": final_eval.accuracy - base_eval.accuracy,
        "forgetting": {"general_data": config.general_data or "embedded",
                       "perplexity_before": base_ppl, "perplexity_after": final_ppl,
                       "relative_change": (final_ppl / base_ppl - 1) if base_ppl else None},
        "eval": {"n": base_eval.n, "split": "eval", "seed": EVAL_SEED},
        "steps_completed": state.global_step,
        "last_good_step": guard.good_step if guard.failed_reason else state.global_step,
        "step_seconds_median": recorder.median_step_seconds(),
        "train_seconds": train_seconds,
        "tokens_seen": tokens,
        "tokens_per_second": tokens / train_seconds if train_seconds and tokens else None,
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "peak_memory_mb": peak_memory_mb(dev),
        "precision": {"weights": str(next(model.parameters()).dtype).removeprefix("torch."),
                      "bf16_autocast": bool(args["bf16"]), "device": str(dev)},
        "pairs": pair_report,
        "subnetwork": ({"mask_from": config.mask_from, "tol": config.mask_tol,
                        "trainable_share_kept": subnetwork.kept_share,
                        **closeness(model, config.mask_from, masks)} if subnetwork else None),
        "history": recorder.history,
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "threads": torch.get_num_threads()},
    })
    if out is not None:
        save_model_atomic(model, tokenizer, out / "model")
        if config.merge:
            import copy

            merged = copy.deepcopy(model).merge_and_unload()
            save_model_atomic(merged, tokenizer, out / "merged")
        if base_eval.records:  # a sweep passes the base scores without the per-item records
            write_records(base_eval, out / "eval_base.jsonl")
        write_records(final_eval, out / "eval_final.jsonl")
        plot_curves(recorder.history, out / "curves.png",
                    f"{task.name} {config.method}: {trainable.description}")
    metrics["wall_seconds"] = time.perf_counter() - wall_start
    if out is not None:
        write_metrics(out, metrics)
    return TrainResult(metrics=metrics, model=model, tokenizer=tokenizer, trainer=trainer,
                       history=recorder.history)
