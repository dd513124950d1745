"""The training recipe: setup -> build trainer -> fit -> score -> save, returning a `RunResult`.

In the spirit of torchtune's recipe interface, each step is a method with one job, and `run()`
calls them in order:

1. `check()` (no model yet): the task, the pairs file, the run directory, and every selection
   (`--layers`, `--lora-layers`, `--lr-scale`, `--mask-from`) against the model's structure,
   built on the meta device from its config alone. Any bad input fails here, in one line.
2. `setup()`: load the model, score the base model (held-out task score, general-text
   perplexity), decide what trains, build AdamW over the trainable parameters only, build
   preference pairs if the method needs them.
3. `build_trainer()`: the method's TRL trainer from the methods table, with our callbacks.
4. `fit()`: `trainer.train()`, resuming from a checkpoint if asked; SIGINT/SIGTERM save a
   checkpoint and end the run as "interrupted"; a NaN loss or an error keeps the last good weights.
5. `score()`: the same scoring as in setup, on the trained model.
6. `save()`: the HF checkpoint, the per-item records, the curves, metrics.json.

Only the main process writes (under `accelerate launch` every process trains, one writes).
"""

from __future__ import annotations

import json
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

from layerwise.errors import LayerwiseError
from layerwise.evaluation.generation import ensure_pad_token
from layerwise.fileio import atomic_write_text
from layerwise.evaluation.task_eval import TaskEvaluation, evaluate_task, write_records
from layerwise.inputs import check as check_inputs
from layerwise.inputs import read_record, write_record
from layerwise.inputs import record as inputs_record
from layerwise.models.loading import LoadedModel, load_model
from layerwise.training import run_dir
from layerwise.training.callbacks import (LiveProgress, NaNGuard, RunRecorder, SignalWatch,
                                          peak_memory_mb)
from layerwise.training.config import ModelConfig, TrainConfig
from layerwise.training.interrupt import CheckpointSeal, GracefulStop, RunInterrupted, checkpoint_history
from layerwise.training.methods import common_args, get_method
from layerwise.training.outputs import plot_curves, save_model_atomic, write_metrics
from layerwise.training.preference import load_pairs, self_sampled_pairs
from layerwise.training.result import (Forgetting, RunResult, Scores, TrainableSummary,
                                       latest_checkpoint, process_alive, read_run)
from layerwise.training.subnetwork import SubnetworkMask, build_masks, closeness
from layerwise.training.trainable import (build_optimizer, enable_checkpointing,
                                          optimizer_state_bytes, prepare_trainable)

log = logging.getLogger(__name__)
EVAL_SEED = 0  # every run, whatever its training seed, is scored on the same held-out items


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch."""
    return int(os.environ.get("RANK", "0")) == 0


def process_count() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Scored:
    """A scoring: the typed scores, and the per-item evaluation records behind them."""

    scores: Scores
    evaluation: TaskEvaluation | None = None


def scores_of(ev: TaskEvaluation, general_perplexity: float | None) -> Scores:
    return Scores(accuracy=ev.accuracy, mean_score=ev.mean_score,
                  general_perplexity=general_perplexity, loss=getattr(ev, "loss", None),
                  perplexity=getattr(ev, "perplexity", None),
                  preference_accuracy=getattr(ev, "preference_accuracy", None),
                  preference_margin=getattr(ev, "preference_margin", None),
                  primary=getattr(ev, "primary", None),
                  reward_means=getattr(ev, "reward_means", None))


def _general_windows(tokenizer, config: TrainConfig, max_context):
    from layerwise.data.corpus import load_corpus, token_windows

    corpus = load_corpus(config.general_data)
    return token_windows(tokenizer, corpus, config.general_seq_len, config.general_seqs, max_context)


def score_model(model, tokenizer, task, config: TrainConfig, windows) -> Scored:
    """Held-out task score (EVAL_SEED items) and general-text perplexity."""
    from layerwise.evaluation.perplexity import perplexity

    ev = evaluate_task(model, tokenizer, task, n=config.eval_n, seed=EVAL_SEED,
                       batch_size=config.eval_batch_size, max_length=config.max_length)
    ppl = perplexity(model, windows) if windows is not None else None
    return Scored(scores_of(ev, ppl), ev)


def eval_record(config: TrainConfig, n: int) -> dict:
    """Which items scored a run (metrics.json "eval"): a selection file's provenance."""
    if config.score_on == "validation":
        from layerwise.tasks.validation import VALIDATION_SEED

        return {"n": n, "split": "validation", "from": "train", "seed": VALIDATION_SEED}
    return {"n": n, "split": "eval", "seed": EVAL_SEED}


def score_base(config: TrainConfig, loaded: LoadedModel) -> Scored:
    """The base model's scores, exactly as a training run measures them (sweeps score once)."""
    task = config.make_task()
    ensure_pad_token(loaded.tokenizer)
    windows = _general_windows(loaded.tokenizer, config, loaded.context_length)
    scored = score_model(loaded.model, loaded.tokenizer, task, config, windows)
    scored.scores.lm_eval = harness_scores(loaded.model, loaded.tokenizer, config)
    return scored


def harness_scores(model, tokenizer, config: TrainConfig) -> dict | None:
    """--forgetting lm-eval:TASKS: lm-evaluation-harness on the model in memory (None: not asked)."""
    tasks = config.lm_eval_tasks()
    if not tasks:
        return None
    from layerwise.evaluation.harness import run_lm_eval

    log.info("lm-evaluation-harness: %s", ", ".join(tasks))
    return run_lm_eval(model, tokenizer, tasks, limit=config.lm_eval_limit,
                       include=config.lm_eval_include, batch_size=config.eval_batch_size,
                       seed=EVAL_SEED).to_dict()


@dataclass
class TrainRecipe:
    """One run. `loaded`/`base` let a sweep load the model and score the base once for many runs."""

    config: TrainConfig
    model_config: ModelConfig = field(default_factory=ModelConfig)
    loaded: LoadedModel | None = None
    base: Scores | None = None
    extra_callbacks: list = field(default_factory=list)
    resume: bool = False  # continue the interrupted run in config.out
    out_chosen: bool = True  # False: config.out is a default (runs/<time>), not the user's
    dry: bool = False  # check() only validates: nothing is written

    def __post_init__(self):
        self.method = get_method(self.config.method)
        self.out = Path(self.config.out) if self.config.out else None
        self.main = is_main_process()
        self.result = RunResult(task=self.config.task, task_options=self.config.task_options,
                                method=self.config.method, mode=self.config.mode,
                                seed=self.config.seed, config=self.config.to_dict(),
                                started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                                steps_planned=self.config.steps, processes=process_count())
        self._t0 = time.perf_counter()
        self.resume_checkpoint: Path | None = None
        self.pairs: list[dict] | None = None
        self.trainer = None
        self.tied = None  # --tying: the model's TiedBlocks
        self.tying_callback = None
        self.stop = GracefulStop()

    # ---- 1. check ------------------------------------------------------------------------
    def check(self) -> None:
        """Everything that can be refused without loading weights."""
        cfg = self.config
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":  # set by accelerate launch
            raise LayerwiseError("FSDP is not supported yet: transformers' Trainer refuses the "
                                 "blocks-only optimizer under FSDP; launch with DDP instead "
                                 "(docs/distributed.md)")
        if process_count() > 1 and cfg.tying.split(":")[0] in ("random", "dqn", "dqn-gain"):
            raise LayerwiseError(f"--tying {cfg.tying!r} changes which tensors exist during the run, "
                                 "which DDP cannot follow: run it in one process (static tying "
                                 "works under DDP)")
        self.task = cfg.make_task()
        if cfg.forgetting:
            from layerwise.evaluation.harness import check_lm_eval

            check_lm_eval(cfg.lm_eval_tasks(), cfg.lm_eval_include)
        if getattr(self.task, "kind", None) == "dataset":
            self._check_dataset()
        elif getattr(self.task, "kind", None) == "lm":
            from layerwise.data.corpus import load_corpus

            for split in ("train", "eval"):  # a missing field or a non-text value: refused now
                load_corpus(self.task.source(split), self.task.text_field)
        else:
            # Reads the task's data files now (one item of each split), not after the base
            # model has been scored: a missing or malformed file is refused before any loading.
            try:
                self.task.items("train", 1, cfg.seed)
                self.task.items("eval", 1, EVAL_SEED)
            except LayerwiseError:
                raise
            except Exception as exc:  # noqa: BLE001 - a user's task file: one line, not a traceback
                raise LayerwiseError(f"task {self.task.name!r}: items() failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
        if cfg.pairs:
            self.pairs = load_pairs(cfg.pairs)
        if self.method.is_rl or self.method.needs_pairs:
            if getattr(self.task, "kind", None) == "lm":
                raise LayerwiseError("the lm task has no prompts to sample: use --method sft")
        from layerwise.training.precheck import check_against_structure, check_tokenizer

        self.tokenizer_data = check_tokenizer(cfg, self.model_config, self.task)
        from layerwise.training.precheck import selection_overlap

        for line in selection_overlap(cfg):  # said once, and kept in metrics.json
            log.warning("%s", line)
            self.result.warnings.append(line)

        from layerwise.models.arch import discover_layers

        held = discover_layers(self.loaded.model) if self.loaded is not None else None
        check_against_structure(cfg, self.model_config, held)
        if self.dry:
            if self.out is not None and not self.resume:
                run_dir.check_writable(self.out)
            return
        if self.out is not None and self.resume:
            self._check_inputs()  # before anything is written: the same model, data, settings
            self._prepare_resume()  # every process: all must resume from the same checkpoint
        elif self.out is not None and self.main:
            inputs = self._inputs()
            run_dir.claim(self.out, cfg.overwrite)
            write_record(self.out, inputs)
            run_dir.write_config(self.out, self.model_config, cfg)
            write_metrics(self.out, self.result.to_dict())

    def _inputs(self, like: dict | None = None) -> dict:
        """What this run reads (layerwise/inputs.py): compared when it is resumed."""
        mc = self.model_config
        return inputs_record(model=mc.model, settings=run_dir.run_settings(mc, self.config),
                             seed=self.config.seed, task=self.task, tokenizer=mc.tokenizer,
                             tokenizer_data=self.tokenizer_data, like=like)

    def _check_inputs(self) -> None:
        before = read_record(self.out)
        check_inputs(before, self._inputs(like=before), f"--resume {self.out}", "the run started",
                     f"start afresh with `layerwise train --config {self.out}/{run_dir.CONFIG_FILE} "
                     f"--out {self.out} --overwrite`, or another --out")

    def _check_dataset(self) -> None:
        """A --dataset run: its type against the method, the chat template, the rows' length."""
        from layerwise.training.precheck import check_dataset_task

        cfg, mc = self.config, self.model_config
        self.result.data = check_dataset_task(
            self.task, cfg.method, mc.model, trust_remote_code=mc.trust_remote_code,
            tokenizer=mc.tokenizer, tokenizer_data=cfg.data, n_train=cfg.n_train, seed=cfg.seed,
            max_length=cfg.max_length, eval_n=cfg.eval_n)
        d = self.result.data
        log.info("data %s: %s; %d train / %d held-out rows; S = %s%s", self.task.path, d["type"],
                 d["train_rows"], d["eval_rows"], d["score"],
                 f"; {d['truncated']} of {d['rows']} rows longer than --max-length {cfg.max_length} "
                 "are truncated" if d.get("truncated") else "")

    def _prepare_resume(self) -> None:
        prev = read_run(self.out)
        if prev.status == "completed":
            raise LayerwiseError(f"{self.out}: the run already completed; nothing to resume")
        if self.main and prev.status == "running" and process_alive(prev.owner):
            raise LayerwiseError(f"{self.out}: the run is still in progress (process "
                                 f"{prev.owner.get('pid')}); stop it first (Ctrl-C saves a checkpoint)")
        found = latest_checkpoint(self.out)
        if found is None:
            raise LayerwiseError(f"{self.out}: no complete checkpoint to resume from (the run "
                                 f"stopped at step {prev.steps_completed} with status "
                                 f"{prev.status!r}; --save-every N writes them)")
        step, self.resume_checkpoint = found
        if prev.base.score is not None:
            self.base = prev.base
            self.result.eval = prev.eval
        self.result.resumed_from_step = step
        self.result.started = prev.started or self.result.started
        self.result.history = [h for h in checkpoint_history(self.resume_checkpoint)
                               if h.get("step", 0) <= step]
        pairs_file = self.out / "pairs.jsonl"
        if self.method.needs_pairs and self.pairs is None and pairs_file.is_file():
            self.pairs = load_pairs(str(pairs_file))
            self.result.pairs = prev.pairs
        self.result.status = "running"
        if self.main:
            write_metrics(self.out, self.result.to_dict())
        log.info("resuming %s from step %d (%s)", self.out, step, self.resume_checkpoint)

    # ---- 2. setup ------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, mc = self.config, self.model_config
        if self.loaded is None:
            if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda": this process's GPU
            self.loaded = load_model(mc.model, dtype=mc.dtype, device=mc.device, seed=cfg.seed,
                                     trust_remote_code=mc.trust_remote_code,
                                     **self._tokenizer_args())
        self.result.model, self.result.model_source = self.loaded.spec, self.loaded.source
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        ensure_pad_token(tokenizer)
        if getattr(self.task, "kind", None) == "dataset":
            self.task.bind(tokenizer)  # the chat template (--chat-template) on the real tokenizer
        self.device = next(model.parameters()).device
        self.windows = _general_windows(tokenizer, cfg, self.loaded.context_length)
        self.base_eval = None
        if self.base is None:
            log.info("scoring the base model on %d %s items", cfg.eval_n, self.task.name)
            scored = score_model(model, tokenizer, self.task, cfg, self.windows)
            self.base, self.base_eval = scored.scores, scored.evaluation
            self.base.lm_eval = harness_scores(model, tokenizer, cfg)
            self.result.eval = eval_record(cfg, scored.evaluation.n)
        self.result.base = self.base
        transformers.set_seed(cfg.seed)
        self.trainable = prepare_trainable(model, cfg)
        self.model = self.trainable.model
        log.info("training %s: %s trainable of %s parameters (%.2f%%)", self.trainable.description,
                 f"{self.trainable.trainable_params:,}", f"{self.trainable.total_params:,}",
                 100 * self.trainable.share)
        self.tied = self._tie() if cfg.tying != "none" else None
        self.tied_untrained = None
        if self.tied is not None and self.tying_spec.policy == "static" and self.resume_checkpoint is None:
            # what tying alone costs, before any training heals it (a pretrained model's question)
            self.tied_untrained = score_model(self.model, tokenizer, self.task, cfg, self.windows).scores
        self.optimizer = build_optimizer(self.model, cfg)
        if self.tied is not None:
            self._bind_tying()
        self.schedule = self._block_schedule() if cfg.schedule != "fixed" else None
        if cfg.gradient_checkpointing:
            enable_checkpointing(self.model)
        if self.method.needs_pairs and self.pairs is None and getattr(self.task, "kind", None) != "dataset":
            self.pairs, self.result.pairs = self_sampled_pairs(self.model, tokenizer, self.task, cfg)
            log.info("preference pairs from the model's own samples: %s", self.result.pairs)
            if self.out is not None and self.main:  # a resumed run trains on the same pairs
                atomic_write_text(self.out / "pairs.jsonl",
                                  "".join(json.dumps(p) + "\n" for p in self.pairs))

    def _block_schedule(self):
        """The --schedule callback over the blocks of --layers (the optimizer holds them all)."""
        from layerwise.models.arch import discover_layers
        from layerwise.training.precheck import plan_on
        from layerwise.training.schedules import BlockSchedule
        from layerwise.training.trainable import block_of

        cfg, layers = self.config, discover_layers(self.model)
        plan = plan_on(cfg, layers)  # the pool: the blocks of --layers, as self.trainable.blocks
        params: dict[int, list] = {b: [] for b in self.trainable.blocks}
        for name, p in self.model.named_parameters():
            b = block_of(name, layers)
            if p.requires_grad and b in params:
                params[b].append(p)
        self.plan = plan
        return BlockSchedule(plan, params, self.optimizer, cfg.park)

    def _tie(self):
        """Apply the run's starting tying map (or the checkpoint's, when resuming)."""
        from layerwise.models.arch import discover_layers
        from layerwise.models.tying import TiedBlocks, count_parameters, read_tying_file
        from layerwise.training.tying import check_tying, parse_tying

        cfg = self.config
        self.tying_spec = spec = parse_tying(cfg.tying)
        layers = discover_layers(self.model)
        from layerwise.models.identity import structure_fingerprint

        start = check_tying(spec, layers.num_blocks, cfg.tie_every, structure_fingerprint(layers))
        self.tying_untied_counts = count_parameters(self.model)
        alias = "alias" in spec.faults
        self.tying_frozen: set[int] = set()
        if self.resume_checkpoint is not None:
            if alias:
                raise LayerwiseError("a run with the 'alias' fault cannot resume: its storage "
                                     "aliasing is not a map that can be rebuilt (rerun it)")
            f = self.resume_checkpoint / "tying.json"
            if f.is_file():
                start = tuple(read_tying_file(f, layers.num_blocks)["sources"])
            agent = self.resume_checkpoint / "tying_agent.json"
            if agent.is_file():
                self.tying_frozen = set(json.loads(agent.read_text())["frozen"])
        elif "frozen-start" in spec.faults:
            self.tying_frozen = set(range(1, layers.num_blocks))
        tied = TiedBlocks(self.model, layers.blocks, alias=alias)
        tied.apply(start)
        self.tying_start = list(tied.sources)
        log.info("tying %s: %s", cfg.tying, describe_tying(tied.sources))
        return tied

    def _bind_tying(self) -> None:
        """The optimizer is built: hand it to the tying, freeze a frozen start, hook the saving."""
        self.tied.bind_optimizer(self.optimizer)
        self.tied.book.reorder(self.model)
        for b in self.tying_frozen:  # in the optimizer (as in the official code), without gradient
            for p in self.tied.blocks[b].parameters():
                p.requires_grad_(False)
        self.tying_counts_start = c = self.tied.counts()
        self.trainable.trainable_params, self.trainable.total_params = c.trainable, c.unique
        log.info("with tying: %s trainable of %s unique parameters (%s positions)",
                 f"{c.trainable:,}", f"{c.unique:,}", f"{c.total:,}")
        self.tying_callback = None
        model, recipe = self.model, self
        from layerwise.models.arch import discover_layers

        blocks_path = discover_layers(model).blocks_path

        def save_pretrained(save_directory, *args, state_dict=None, **kw):
            from layerwise.models.tying import TYING_FILE, full_state_dict, tying_document

            full = full_state_dict(model) if state_dict is None else _unshare(state_dict)
            type(model).save_pretrained(model, save_directory, *args, state_dict=full, **kw)
            d = Path(save_directory)
            doc = tying_document(recipe.tied.sources, recipe.tied.n, "full", blocks_path=blocks_path,
                                 policy=recipe.config.tying)
            (d / TYING_FILE).write_text(json.dumps(doc, indent=2) + "\n")
            if recipe.tying_callback is not None and d.name.startswith("checkpoint-"):
                recipe.tying_callback.save(d)  # a Trainer checkpoint: the agent resumes from it

        # Trainer checkpoints and our own save call model.save_pretrained; transformers refuses
        # tensors shared between blocks, so this model writes every position out in full, with
        # the map beside it (and restores the sharing when layerwise loads it).
        model.save_pretrained = save_pretrained

    def _tokenizer_args(self) -> dict:
        if not self.tokenizer_data:
            return {}
        return {"tokenizer": self.model_config.tokenizer, "tokenizer_data": self.tokenizer_data}

    # ---- 3. build trainer ----------------------------------------------------------------
    def build_trainer(self) -> None:
        cfg = self.config
        self.recorder, self.guard, self.signal = RunRecorder(), NaNGuard(self.model), SignalWatch()
        callbacks = [self.recorder, self.guard, self.signal, self.stop, CheckpointSeal(self.recorder),
                     LiveProgress(f"{cfg.method} {self.trainable.description}",
                                  enabled=cfg.progress and self.main), *self.extra_callbacks]
        if self.schedule is not None:
            callbacks.insert(0, self.schedule)
        if cfg.eval_every:  # before CheckpointSeal, so a checkpoint at that step holds the point
            from layerwise.training.callbacks import EvalCurve

            tok, task = self.loaded.tokenizer, self.task
            score = lambda model: score_model(  # noqa: E731  accuracy, or held-out loss (lm)
                model, tok, task, cfg, windows=None).scores.score
            callbacks.insert(3, EvalCurve(cfg.eval_every, score, self.recorder, self.model))
        self.subnetwork = None
        if cfg.mask_from:
            self.masks = build_masks(self.model, cfg.mask_from, cfg.mask_tol)
            self.subnetwork = SubnetworkMask(self.model, self.masks)
            callbacks.insert(0, self.subnetwork)  # restore masked entries before the guard snapshots
            log.info("subnetwork training: %.2f%% of the trainable entries may change",
                     100 * self.subnetwork.kept_share)
        if self.out is not None:
            trainer_dir = self.out / "checkpoints"
            self._scratch = None
        else:
            self._scratch = tempfile.mkdtemp(prefix="layerwise-trainer-")
            trainer_dir = Path(self._scratch)
        report_to = [cfg.report_to] if self.out is not None and cfg.report_to != "none" else []
        self.args = common_args(cfg, str(trainer_dir), report_to, self.device,
                                next(self.model.parameters()).dtype)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with _tensorboard_dir(self.out / "tensorboard" if "tensorboard" in report_to else None):
            self.trainer = self.method.build(self.model, self.loaded.tokenizer, self.task, cfg,
                                             self.args, callbacks, self.optimizer, pairs=self.pairs)
        if self.tied is not None and self.tying_spec.dynamic:
            self._dynamic_tying()
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        # Ours shows the running reward as well, and keeps stdout for results.
        self.trainer.remove_callback(ProgressCallback)
        self.trainer.remove_callback(PrinterCallback)

    def _dynamic_tying(self) -> None:
        from layerwise.training.tying import DEFAULT_EVERY, DynamicTying, LossProbe

        cfg = self.config
        probe = LossProbe(self.trainer.train_dataset, self.trainer.data_collator,
                          rows=cfg.batch_size, seed=cfg.seed, device=self.device)

        def changed():
            self.guard.track(self.model)

        cb = DynamicTying(self.tied, self.tying_spec, cfg.tie_every or DEFAULT_EVERY, probe,
                          cfg.steps, cfg.seed, on_change=changed)
        cb.frozen = set(self.tying_frozen)
        if self.resume_checkpoint is not None and (self.resume_checkpoint / "tying_agent.json").is_file():
            cb.load(self.resume_checkpoint)
        self.tying_callback = cb
        self.trainer.add_callback(cb)

    # ---- 4. fit --------------------------------------------------------------------------
    def fit(self) -> None:
        self.model.train()
        self.error = None
        resume = str(self.resume_checkpoint) if self.resume_checkpoint else None
        try:
            with _tensorboard_dir(self.out / "tensorboard" if self.out else None):
                self.trainer.train(resume_from_checkpoint=resume)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: keep the last good weights
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.guard.restore()
        finally:
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
        self.model = self.trainer.model
        self.model.eval()

    # ---- 5. score ------------------------------------------------------------------------
    def score(self) -> None:
        log.info("scoring the trained model")
        scored = score_model(self.model, self.loaded.tokenizer, self.task, self.config, self.windows)
        self.final, self.final_eval = scored.scores, scored.evaluation
        self.final.lm_eval = harness_scores(self.model, self.loaded.tokenizer, self.config)

    # ---- 6. save -------------------------------------------------------------------------
    def save(self) -> None:
        if self.out is None or not self.main:
            return
        tok = self.loaded.tokenizer
        self._save_model(tok)
        if self.config.merge:
            import copy

            save_model_atomic(copy.deepcopy(self.model).merge_and_unload(), tok, self.out / "merged")
        if self.base_eval is not None and self.base_eval.records:
            write_records(self.base_eval, self.out / "eval_base.jsonl")
        if self.final_eval.records:
            write_records(self.final_eval, self.out / "eval_final.jsonl")
        plot_curves(self.result.history, self.out / "curves.png",
                    f"{self.task.name} {self.config.method}: {self.trainable.description}")
        if self.schedule is not None:
            from layerwise.training.outputs import plot_schedule

            plot_schedule(self.result.schedule["phases"], self.trainable.blocks,
                          self.out / "schedule.png", f"--schedule {self.config.schedule}")

    def _save_model(self, tok) -> None:
        if self.tied is None:
            save_model_atomic(self.model, tok, self.out / "model")
            return
        from layerwise.models.tying import save_tied
        from layerwise.training.outputs import plot_tying, write_tying

        form = self.config.tied_save
        compact = lambda tmp: save_tied(self.model, None, tmp, self.tied.sources, compact=True,  # noqa: E731
                                        policy=self.config.tying)
        if form in ("full", "both"):
            save_model_atomic(self.model, tok, self.out / "model")
        if form in ("compact", "both"):
            save_model_atomic(self.model, tok, self.out / ("model" if form == "compact" else "model-compact"),
                              writer=compact)
        write_tying(self.out / "tying.json", self.result.tying)
        plot_tying(self.result.tying, self.out / "tying.png", f"--tying {self.config.tying}")

    # ---- the whole run -------------------------------------------------------------------
    def run(self) -> RunResult:
        """check -> setup -> build_trainer -> fit -> score -> save; the result is also on disk."""
        try:
            self.check()
        except LayerwiseError as exc:
            self._record_invalid(str(exc))
            raise
        try:
            with self.stop:
                self.setup()
                self.build_trainer()
                self.fit()
                if self.stop.requested is not None:
                    return self._interrupted()
                self.score()
                self._collect()
                self.save()
        except (RunInterrupted, KeyboardInterrupt):
            return self._interrupted()
        except BaseException as exc:
            self._record_failure(exc)
            raise
        self._write()
        return self.result

    def _collect(self) -> None:
        r, cfg, t = self.result, self.config, self.trainable
        state = self.trainer.state
        train_seconds = self.recorder.train_seconds or sum(self.recorder.step_seconds)
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        r.status = "failed" if (self.guard.failed_reason or self.error) else "completed"
        r.failure = self.guard.failed_reason or self.error
        r.trainable = TrainableSummary(
            description=t.description, params=t.trainable_params, total_params=t.total_params,
            share=t.share, blocks=list(t.blocks), lowest_block=t.lowest_block, lora=t.lora,
            lr_groups=[{"lr": g["lr"], "lr_scale": g.get("lr_scale", 1.0), "tensors": len(g["params"])}
                       for g in self.optimizer.param_groups])
        r.final = self.final
        r.accuracy_gain = (self.final.accuracy - self.base.accuracy
                           if self.final.accuracy is not None and self.base.accuracy is not None else None)
        before, after = self.base.general_perplexity, self.final.general_perplexity
        r.forgetting = Forgetting(general_data=cfg.general_data or "embedded",
                                  perplexity_before=before, perplexity_after=after,
                                  relative_change=(after / before - 1) if before and after else None)
        if not r.eval:
            r.eval = eval_record(self.config, self.final_eval.n)
        r.steps_completed = state.global_step
        r.last_good_step = self.guard.good_step if self.guard.failed_reason else state.global_step
        r.step_seconds_median = self.recorder.median_step_seconds()
        r.train_seconds = train_seconds
        r.tokens_seen = tokens
        r.tokens_per_second = tokens / train_seconds if train_seconds and tokens else None
        r.optimizer_state_bytes = optimizer_state_bytes(self.optimizer)
        r.peak_memory_mb = peak_memory_mb(self.device)
        r.precision = {"weights": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                       "bf16_autocast": bool(self.args["bf16"]), "device": str(self.device)}
        if self.subnetwork is not None:
            r.subnetwork = {"mask_from": cfg.mask_from, "tol": cfg.mask_tol,
                            "trainable_share_kept": self.subnetwork.kept_share,
                            **closeness(self.model, cfg.mask_from, self.masks)}
        if self.schedule is not None:
            r.schedule = {"policy": cfg.schedule, "park": cfg.park, "seed": cfg.seed,
                          "phases": self.plan.phases(), "steps_taken": len(self.schedule.history)}
        if self.tied is not None:
            r.tying = self._tying_record()
        r.learning_signal = self.signal.summary()
        if r.learning_signal and r.learning_signal["none_at_all"]:
            r.warnings.append(f"no learning signal: in all {r.learning_signal['logged_steps']} "
                              "logged steps every group's completions got equal rewards (zero "
                              "advantages, zero gradient); the model did not train")
        elif r.learning_signal and r.learning_signal["share_without_signal"] >= 0.5:
            r.warnings.append(f"weak learning signal: {r.learning_signal['steps_without_signal']} of "
                              f"{r.learning_signal['logged_steps']} logged steps had equal rewards "
                              "in every group")
        r.history = self.result.history + self.recorder.history
        r.first_step_seconds = self.recorder.first_step_at - self._t0 if self.recorder.first_step_at else None
        r.platform = {"python": platform.python_version(), "torch": torch.__version__,
                      "transformers": transformers.__version__, "threads": torch.get_num_threads()}

    def _tying_record(self) -> dict:
        from layerwise.training.tying import DEFAULT_EVERY, TyingRecord

        end = self.tied.counts()
        cb = self.tying_callback
        return TyingRecord(
            policy=self.config.tying,
            every=(self.config.tie_every or DEFAULT_EVERY) if self.tying_spec.dynamic else None,
            start=self.tying_start, final=list(self.tied.sources),
            final_description=describe_tying(self.tied.sources),
            counts_start=self.tying_counts_start.to_dict(), counts_end=end.to_dict(),
            untied_counts=self.tying_untied_counts.to_dict(),
            history=cb.history if cb is not None else []).to_dict() | {
                "scores_tied_untrained": (vars(self.tied_untrained) if self.tied_untrained is not None
                                          else None),
                "num_blocks": self.tied.n, "sources": list(self.tied.sources)}  # a map file too

    def _attach(self) -> None:
        self.result.model_object = getattr(self, "model", None)
        self.result.tokenizer = self.loaded.tokenizer if self.loaded is not None else None
        self.result.trainer = self.trainer

    def _write(self) -> None:
        self._attach()
        self.result.wall_seconds = time.perf_counter() - self._t0
        if self.out is not None and self.main:
            write_metrics(self.out, self.result.to_dict())

    def _interrupted(self) -> RunResult:
        r = self.result
        r.status = "interrupted"
        state = self.trainer.state if self.trainer is not None else None
        r.steps_completed = state.global_step if state is not None else (r.resumed_from_step or 0)
        found = latest_checkpoint(self.out) if self.out is not None else None
        r.checkpoint = str(found[1]) if found else None
        r.failure = (f"interrupted at step {r.steps_completed} of {self.config.steps}"
                     + ("" if found else " (no checkpoint: nothing was trained yet)"))
        if state is not None:
            r.history = self.result.history + self.recorder.history
            if self.recorder.first_step_at:
                r.first_step_seconds = self.recorder.first_step_at - self._t0
        self._write()
        return r

    def _record_invalid(self, message: str) -> None:
        """Invalid arguments are recorded only where no earlier run's results would be lost."""
        if self.main and not self.resume and self.out_chosen:
            self.result.wall_seconds = time.perf_counter() - self._t0
            run_dir.record_invalid(self.out, message, self.result)

    def _record_failure(self, exc: BaseException) -> None:
        if self.out is None or not self.main or not (self.out / "metrics.json").is_file():
            return
        first = str(exc).splitlines()[0] if str(exc) else ""
        self.result.status = "failed"
        self.result.failure = f"{type(exc).__name__}: {first}" if not isinstance(exc, LayerwiseError) else first
        self._write()


def describe_tying(sources) -> str:
    from layerwise.models.tying import describe_map

    return describe_map(sources)


def _unshare(state_dict: dict) -> dict:
    """A state dict whose tensors share no storage (transformers refuses shared ones)."""
    out, seen = {}, set()
    for k, t in state_dict.items():
        out[k] = t.detach().clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    return out


class _tensorboard_dir:
    """TRL/transformers read the TensorBoard directory from the environment at trainer init."""

    def __init__(self, path: Path | None):
        self.path = path

    def __enter__(self):
        self.old = os.environ.get("TENSORBOARD_LOGGING_DIR")
        if self.path is not None:
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.path)

    def __exit__(self, *exc):
        if self.path is not None:
            if self.old is None:
                os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
            else:
                os.environ["TENSORBOARD_LOGGING_DIR"] = self.old
        return False
