"""`layerwise tune`: estimate -> choose -> train -> verify, for one model, task, method and budget.

One answer to "which K blocks should I train, and what do I give up against full training?"
without a sweep of L+1 runs:
1. **estimate** each block's value from one backward pass at the start of training (the
   `gradient` and `adam-gain` estimators of sweeps/estimators.py), or read it from a diagnostics
   or contribution file of the same model and task (`estimates=FILE[:FIELD]`);
2. **choose** K blocks (tuning/choose.py: top-K, the best contiguous window, or mid-K when the
   estimates cannot be trusted), saying which and why;
3. **train** them (`layerwise train --layers ...`, OUT/run);
4. **verify**: held-out score before and after, `compare` of the checkpoint against the base
   (nothing outside the choice may change), forgetting on general text;
5. optionally spend the same budget on **baselines** (mid-K, full, LoRA) side by side.
Everything lands in OUT/tune.json and OUT/report.html. It resumes: the estimate and the choice
are kept in tune.json, completed runs are not rerun and interrupted ones continue.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text, check_output_dir, json_safe, read_json
from layerwise.tuning.choose import MAX_STEP_COST, Choice, choose, mid_window, parse_budget, step_cost
from layerwise.tuning.verdict import verdict

BASELINES = ("mid", "full", "lora")
TUNE_FILE = "tune.json"
ESTIMATORS = ("adam-gain", "adam-snr", "probe", "profile")
# What a resumed tune must share with the tune in OUT (--baseline may differ: each baseline is a
# run of its own, and adding one to a finished tune is how it is meant to be used).
SETTINGS = ("model", "task", "task_options", "method", "budget", "estimates", "estimator",
            "estimate_prompts", "estimate_batches", "probe_steps", "profile_blocks",
            "profile_steps", "seed", "train", "full_lr", "max_step_cost")


@dataclass
class TuneConfig:
    model: str | None
    task: str
    method: str
    budget: str
    out: str
    task_options: dict = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    estimates: str | None = None  # FILE[:FIELD]; None: the gradient estimators
    estimate_prompts: int = 8
    estimator: str = "adam-gain"  # what ranks the blocks (ESTIMATORS), when no estimates file
    # batches of estimate_prompts: their mean gradient (adam-snr: >= 2); None: `batches()`
    estimate_batches: int | None = None
    probe_steps: int = 4  # the probe's AdamW steps per block
    profile_blocks: int = 5  # the profile's blocks, evenly spaced over depth
    profile_steps: int | None = None  # the profile's steps per block (None: steps // (blocks + 1))
    seed: int = 0
    train: dict = field(default_factory=dict)  # TrainConfig options (steps, lr, batch_size, ...)
    full_lr: float | None = None  # the full baseline's learning rate (default: train's)
    max_step_cost: float = MAX_STEP_COST  # choose among blocks at most this costly (choose.py)

    def batches(self) -> int:
        """The gradient estimate's batches: as given, or as many (1-4) as keep its examples at
        most a sixth of the training's (steps x batch size), so that the estimate — full-depth
        backward passes — costs less than the run it chooses blocks for (adam-snr: at least 2)."""
        if self.estimate_batches is not None:
            return self.estimate_batches
        from layerwise.training.config import TrainConfig

        examples = (int(self.train.get("steps") or TrainConfig.steps)
                    * int(self.train.get("batch_size") or TrainConfig.batch_size))
        auto = max(1, min(4, examples // (6 * max(1, self.estimate_prompts))))
        return max(auto, 2) if self.estimator == "adam-snr" else auto

    def settings(self) -> dict:
        return {k: getattr(self, k) for k in SETTINGS}


@dataclass
class RunSummary:
    """One training run as tune reports it (from its metrics.json)."""

    label: str
    directory: str
    status: str
    trains: str
    blocks: list[int]
    trainable_params: int
    score_before: float | None
    score_after: float | None
    gain: float | None
    forgetting: float | None  # relative change of general-text perplexity
    median_step_s: float | None
    train_seconds: float | None
    optimizer_state_mib: float
    failure: str | None = None
    lm_eval: dict | None = None  # --forgetting lm-eval:TASKS: {task: {metric, before, after}}
    lr: float | None = None  # the learning rate the run used (its blocks' group), resolved
    model_source: str | None = None  # what was loaded (the embedded model's name, a path, an id)


@dataclass
class TuneResult:
    out: str
    settings: dict
    num_blocks: int
    k: int
    estimator: str
    estimates: dict[str, list[float | None]]
    estimate_seconds: float | None
    choice: Choice
    run: RunSummary | None = None
    verification: dict = field(default_factory=dict)
    baselines: dict[str, RunSummary] = field(default_factory=dict)
    status: str = "running"
    inputs: dict | None = None  # what the tune read (layerwise.inputs), checked when it resumes
    verdict: dict = field(default_factory=dict)  # the choice against each baseline (verdict.py)

    def to_json(self) -> dict:
        return json_safe(dataclasses.asdict(self))


def _summary(label: str, run) -> RunSummary:
    before, after = run.base.score, run.final.score
    return RunSummary(label=label, directory=str(run.config.get("out") or ""), status=run.status,
                      trains=run.trainable.description, blocks=list(run.trainable.blocks),
                      trainable_params=run.trainable.params, score_before=before,
                      score_after=after,
                      gain=None if before is None or after is None else after - before,
                      forgetting=run.forgetting.relative_change,
                      median_step_s=run.step_seconds_median, train_seconds=run.train_seconds,
                      optimizer_state_mib=run.optimizer_state_bytes / 2**20, failure=run.failure,
                      lm_eval=_lm_eval_pairs(run),
                      lr=max((g.get("lr") or 0.0 for g in run.trainable.lr_groups), default=None)
                      or None, model_source=run.model_source)


def _lm_eval_pairs(run) -> dict | None:
    """Each lm-eval task's headline metric before and after the run (None: not measured)."""
    before = (run.base.lm_eval or {}).get("headline") or {}
    after = (run.final.lm_eval or {}).get("headline") or {}
    return {task: {"metric": h["metric"], "before": h["value"],
                   "after": (after.get(task) or {}).get("value")}
            for task, h in before.items()} or None


def check(cfg: TuneConfig) -> tuple[Any, dict | None]:
    """Everything that can be refused before a model loads: the output, the baselines, the
    budget against the model's block count (from a meta-device build), the estimate file, an
    earlier tune of other settings in OUT. Returns the task and the earlier tune.json, if any."""
    from layerwise.tasks.registry import get_task
    from layerwise.training.precheck import meta_layers

    check_output_dir(cfg.out)
    if cfg.estimator not in ESTIMATORS:
        raise LayerwiseError(f"--estimator {cfg.estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if cfg.estimate_prompts < 1 or cfg.batches() < 1 or cfg.probe_steps < 1:
        raise LayerwiseError(f"--estimate-prompts {cfg.estimate_prompts}, --estimate-batches "
                             f"{cfg.estimate_batches} and --probe-steps {cfg.probe_steps}: each "
                             "must be >= 1")
    if cfg.estimator == "profile" and cfg.profile_blocks < 2:
        raise LayerwiseError(f"--profile-blocks {cfg.profile_blocks}: the profile needs at least "
                             "2 blocks to interpolate between")
    if cfg.estimator == "profile" and cfg.profile_steps is not None and cfg.profile_steps < 2:
        raise LayerwiseError(f"--profile-steps {cfg.profile_steps}: the profile needs at least 2 "
                             "steps per block (it scores steps s/2..s)")
    if cfg.estimator == "adam-snr" and cfg.batches() < 2:
        raise LayerwiseError(f"--estimator adam-snr needs --estimate-batches >= 2 (got "
                             f"{cfg.estimate_batches}): it weighs the mean gradient by its "
                             "batch-to-batch spread")
    if not 0 < cfg.max_step_cost <= 1:
        raise LayerwiseError(f"--max-step-cost {cfg.max_step_cost:g}: a share of a full backward "
                             "pass, in (0, 1] (1: any block)")
    unknown = [b for b in cfg.baselines if b not in BASELINES]
    if unknown:
        raise LayerwiseError(f"--baseline {unknown[0]!r}; valid: {', '.join(BASELINES)}")
    task = get_task(cfg.task, **cfg.task_options)
    if getattr(task, "kind", None) == "dataset":
        from layerwise.training.precheck import check_dataset_task

        check_dataset_task(task, cfg.method, cfg.model, n_train=int(cfg.train.get("n_train", 1000)),
                           seed=cfg.seed, max_length=int(cfg.train.get("max_length", 256)),
                           eval_n=int(cfg.train.get("eval_n", 100)))
    layers = meta_layers(cfg.model)
    num_blocks = layers.num_blocks if layers is not None else None
    if num_blocks is not None:
        parse_budget(cfg.budget, num_blocks)
        if cfg.estimates:
            _read_estimates(cfg, num_blocks, layers)
    return task, _check_resume(cfg, task)


def _read_estimates(cfg: TuneConfig, num_blocks: int, layers) -> tuple[str, list[float | None]]:
    """Per-block scores from FILE[:FIELD] of this model (and, for a sweep, this task/method)."""
    from layerwise.models.identity import structure_fingerprint
    from layerwise.selection.scores import read_block_scores

    path, _, name = cfg.estimates.partition(":")
    doc = read_json(path)
    sweep = doc.get("sweep") if isinstance(doc, dict) else None
    if isinstance(sweep, dict):
        for key, ours in (("task", cfg.task), ("method", cfg.method)):
            theirs = sweep.get(key)
            if theirs is not None and ours is not None and Path(str(theirs)).name != Path(str(ours)).name:
                raise LayerwiseError(f"--estimates {path} is a sweep of {key} {theirs!r}; this "
                                     f"tune is of {ours!r}: an estimate from another {key}")
    metric, scores = read_block_scores(path, name or None, num_blocks,
                                       structure_fingerprint(layers))
    return f"file:{metric}", [scores.get(b) for b in range(num_blocks)]


def tune_inputs(cfg: TuneConfig, task, like: dict | None = None) -> dict:
    """What the tune reads (layerwise.inputs): the model, its tokenizer, the data files of the
    task and of its training options, an --estimates file, the settings, the code."""
    from layerwise.inputs import record

    settings = {**cfg.train, "task": cfg.task, "task_options": cfg.task_options,
                "estimates": cfg.estimates}
    rec = record(model=cfg.model, settings=settings, seed=cfg.seed, task=task, like=like)
    rec["options"] = json_safe(cfg.settings())
    return rec


def _check_resume(cfg: TuneConfig, task) -> dict | None:
    """The tune.json already in OUT (None: a new tune), refused if it is of other settings or
    read other inputs; its `inputs` is then the record made now, the one to keep."""
    from layerwise.inputs import changes, check

    path = Path(cfg.out) / TUNE_FILE
    if not path.is_file():
        return None
    doc = read_json(path)
    theirs = dict(doc.get("settings") or {}) if isinstance(doc.get("settings"), dict) else None
    if theirs is not None:  # a tune written before a setting existed ran at its default
        defaults = {f.name: f.default for f in dataclasses.fields(TuneConfig)}
        theirs = {k: theirs.get(k, defaults.get(k)) for k in SETTINGS}
    ours = json_safe(cfg.settings())
    fresh = "use another --out (a tune resumes only with the settings and inputs it started with)"
    if json_safe(theirs) != ours:
        diff = changes({"options": json_safe(theirs or {})}, {"options": ours},
                       sections=("options",))
        raise LayerwiseError(f"--out {cfg.out} holds a tune of other settings ({TUNE_FILE}): "
                             f"{diff[0] if diff else 'its settings are unreadable'}; {fresh}")
    before = doc.get("inputs")
    now = tune_inputs(cfg, task, like=before)
    check(before, now, f"--out {cfg.out}", "the tune started", fresh,
          sections=("model", "tokenizer", "data", "code"))
    return {**doc, "inputs": now}


def run_tune(cfg: TuneConfig, say: Callable[[str], None] = lambda _: None) -> TuneResult:
    """The whole tune; resumes from OUT/tune.json and the runs already in OUT."""
    from layerwise.models import discover_layers, load_model
    from layerwise.tasks.registry import prepare_task

    task, previous = check(cfg)
    inputs = previous["inputs"] if previous is not None else tune_inputs(cfg, task)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(cfg.model, seed=cfg.seed)
    prepare_task(task, loaded.tokenizer)
    layers = discover_layers(loaded.model)
    k = parse_budget(cfg.budget, layers.num_blocks)
    if previous is not None and previous.get("estimates"):
        estimates, seconds = previous["estimates"], previous.get("estimate_seconds")
        say(f"estimate: kept from {out / TUNE_FILE}")
    else:
        estimates, seconds = _estimate(cfg, task, loaded, layers)
    primary = next(iter(estimates))
    # the profile measures training itself (short real runs): adam-gain is shown beside it, not
    # a veto that sends the choice to the middle when the two disagree
    choice = choose(estimates, k, primary, veto=primary != "profile",
                    max_step_cost=cfg.max_step_cost)
    for candidate in choice.candidates.values():  # what each would cost per step, beside its gain
        candidate["step_cost"] = step_cost(candidate["blocks"], layers.num_blocks)
    result = TuneResult(out=str(out), settings=cfg.settings(), num_blocks=layers.num_blocks, k=k,
                        estimator=primary, estimates=estimates, estimate_seconds=seconds,
                        choice=choice, inputs=inputs)
    _save(result)
    say(f"choice: {choice.policy} blocks {', '.join(map(str, choice.blocks))} ({choice.reason})")
    if choice.depth_spearman is not None and abs(choice.depth_spearman) >= 0.9:
        say(f"note: the {primary} estimate ranks blocks by depth almost alone (Spearman "
            f"{choice.depth_spearman:.2f} with the first block first)")
    base = _base_checkpoint(cfg, loaded, out)
    del loaded
    spec = ",".join(map(str, choice.blocks))
    run = _train(cfg, out / "run", {"layers": spec}, say, "tuned")
    result.run = _summary("tuned", run)
    result.verification = _verify(base, out / "run", spec, run)
    _save(result)
    for name in cfg.baselines:
        options = {"mid": {"layers": ",".join(map(str, mid_window(layers.num_blocks, k)))},
                   "full": {"full": True, **({"lr": cfg.full_lr} if cfg.full_lr else {})},
                   "lora": {"lora": True}}[name]
        result.baselines[name] = _summary(name, _train(cfg, out / f"baseline-{name}", options,
                                                       say, name))
        _save(result)
    result.verdict = verdict(result)
    result.status = "completed" if result.run.status == "completed" and all(
        b.status == "completed" for b in result.baselines.values()) else "failed"
    _save(result)
    from layerwise.reporting.tune_report import write_tune_report

    write_tune_report(result, out)
    return result


def _estimate(cfg: TuneConfig, task, loaded, layers) -> tuple[dict, float | None]:
    """{primary estimator: per-block scores, second opinion: ...} and the seconds it took. The
    primary is cfg.estimator; the second opinion, whose disagreement sends the choice to mid-K,
    is `gradient` (for adam-gain) or adam-gain (for adam-snr and probe; for the profile it is only
    shown)."""
    from layerwise.sweeps.estimators import gradient_norms, probe_gains
    from layerwise.training.methods import get_method

    if cfg.estimates:
        name, values = _read_estimates(cfg, layers.num_blocks, layers)
        return {name: values}, None
    train = cfg.train
    start = time.perf_counter()
    norms = gradient_norms(loaded.model, loaded.tokenizer, task, cfg.method,
                           n_prompts=cfg.estimate_prompts, batches=cfg.batches(),
                           num_generations=int(train.get("num_generations") or 8),
                           max_new_tokens=train.get("max_completion_length"), seed=cfg.seed)
    if cfg.estimator == "probe":
        lr = train.get("lr") or get_method(cfg.method).default_lr("blocks")
        probe = probe_gains(loaded.model, loaded.tokenizer, task, cfg.method, lr=float(lr),
                            steps=cfg.probe_steps, n_prompts=cfg.estimate_prompts,
                            num_generations=int(train.get("num_generations") or 8),
                            max_new_tokens=train.get("max_completion_length"), seed=cfg.seed,
                            weight_decay=float(train.get("weight_decay") or 0.0))
        estimates = {"probe": probe, "adam-gain": norms["adam-gain"]}
    elif cfg.estimator == "profile":
        from layerwise.sweeps.estimators import profile_estimates
        from layerwise.training.config import TrainConfig

        steps = int(train.get("steps") or TrainConfig.steps)
        template = {**train, "task": cfg.task, "task_options": cfg.task_options,
                    "method": cfg.method}
        profile = profile_estimates(
            loaded, template, probes=cfg.profile_blocks, model=cfg.model, seed=cfg.seed,
            steps=cfg.profile_steps or max(2, steps // (cfg.profile_blocks + 1)),
            answer_prompts=0)["profile"]
        estimates = {"profile": profile, "adam-gain": norms["adam-gain"]}
    elif cfg.estimator == "adam-snr":
        estimates = {"adam-snr": norms["adam-snr"], "adam-gain": norms["adam-gain"]}
    else:
        # AdamW is what trains, and its first step is lr * sign(g)
        estimates = {"adam-gain": norms["adam-gain"], "gradient": norms["gradient"]}
    return estimates, time.perf_counter() - start


def _base_checkpoint(cfg: TuneConfig, loaded, out: Path) -> Path:
    """A safetensors checkpoint of the base to compare against (the model's own files where it
    has them; a random-init tiny model is written once to OUT/base-model)."""
    from layerwise.analysis.checkpoints import resolve_checkpoint

    try:
        path = resolve_checkpoint(cfg.model or "embedded")
        if path.is_dir() and any(path.glob("*.safetensors")):
            return path
    except LayerwiseError:
        pass
    path = out / "base-model"
    if not any(path.glob("*.safetensors")):
        loaded.model.save_pretrained(path)
    return path


def _train(cfg: TuneConfig, run_dir: Path, what: dict, say, label: str):
    from layerwise import api
    from layerwise.training.result import read_run

    if (run_dir / "metrics.json").is_file():
        done = read_run(run_dir)
        differs = {k: (done.config.get(k), v) for k, v in what.items() if done.config.get(k) != v}
        if differs:
            key, (was, now) = next(iter(differs.items()))
            raise LayerwiseError(f"{run_dir} holds a run with {key}={was!r}; this tune now trains "
                                 f"{key}={now!r}: use another --out")
        if done.status == "completed":
            say(f"{label}: completed earlier in {run_dir}")
            return done
        if done.checkpoint:
            say(f"{label}: resuming {run_dir}")
            return api.resume(run_dir, progress=False)
    say(f"{label}: training {', '.join(f'{k}={v}' for k, v in what.items())}")
    options = {**cfg.train, **what, "task": cfg.task, "task_options": cfg.task_options,
               "method": cfg.method, "seed": cfg.seed, "out": str(run_dir), "overwrite": True,
               "progress": False}
    return api.train(cfg.model, **options)


def _verify(base: Path, run_dir: Path, spec: str, run) -> dict:
    """What changed outside the chosen blocks (must be nothing), and the run's own scores."""
    from layerwise import api

    if run.status != "completed":
        return {"ok": False, "why": f"the run did not complete ({run.failure or run.status})"}
    compared = api.compare(base, run_dir, expect_layers=spec, ranks=False)
    check = compared.document["runs"][0].get("selection_check") or {}
    return {"ok": bool(check.get("ok")), "selection": spec,
            "changed_inside": check.get("changed_inside"),
            "changed_outside": check.get("changed_outside"),
            "tensors_outside": check.get("tensors_outside", []),
            "sparsity": compared.sparsity(compared.labels[0]),
            "base_checkpoint": str(base)}


def _save(result: TuneResult) -> None:
    import json

    atomic_write_text(Path(result.out) / TUNE_FILE, json.dumps(result.to_json(), indent=2) + "\n")
