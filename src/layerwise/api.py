"""The Python API: `train`, `resume`, `diagnose`, `sweep` and `compare`, one per `layerwise` command.

The CLI parses flags and prints; scripts and notebooks want the objects. Each function here takes
its command's flags as keyword arguments (the flag names with `_`: `batch_size=4` for
`--batch-size 4`), composes the same library functions the command calls, and returns a typed
result instead of printing: `RunResult` (training/result.py), `DiagnoseResult`, `SweepResult`
and `CompareResult` (below). Files are written exactly where the command would write them.

Every heavy import (torch, transformers, TRL) happens inside the functions, so `import layerwise`
stays fast. Examples that CI runs: docs/python.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from layerwise.errors import LayerwiseError

if TYPE_CHECKING:
    from layerwise.analysis.diff import Comparison
    from layerwise.sweeps.contribution import Contribution
    from layerwise.sweeps.spec import SweepSpec
    from layerwise.training.config import ModelConfig, TrainConfig
    from layerwise.training.result import RunResult

__all__ = ["CompareResult", "DiagnoseResult", "SweepResult", "compare", "diagnose", "resume",
           "sweep", "train"]


# ---- train / resume ---------------------------------------------------------------------------

def train(model: str | None = None, *, config: str | Path | None = None, resume: str | None = None,
          callbacks: list | None = None, **options: Any) -> RunResult:
    """Train as `layerwise train` does and return the run's `RunResult` (also in OUT/metrics.json).

    `options` are the fields of `TrainConfig` and `ModelConfig` (the flags of `layerwise train`
    with `_`); `config` is a YAML file as for `--config` (e.g. an earlier run's config.yaml), and
    keyword options override it. Without `out` the run goes to runs/<time>-<method>, as on the
    command line. `resume=OUT` continues an interrupted run instead (like `resume(OUT)`).
    `callbacks` are extra transformers `TrainerCallback`s. The result is returned whatever the run's
    status: check `.ok` (status "completed"), `.failure`, or `.checkpoint` when interrupted.

    Example::

        run = layerwise.train("tiny:llama", task="arithmetic", layers="2", steps=3, out="runs/x")
        run.base.score, run.final.score, run.trainable.params
    """
    if resume is not None:
        given = ([] if config is None else ["config"]) + ([] if model is None else ["model"]) + sorted(
            set(options) - {"progress"})
        if given:
            raise LayerwiseError(f"resume= continues a run with its own config.yaml; drop "
                                 f"{', '.join(given)} (to change it, start a new run with "
                                 f"config='{resume}/config.yaml')")
        return _resume(resume, callbacks, options.get("progress", True))
    from layerwise.training.run_dir import default_out, record_invalid
    from layerwise.training.runner import train as run_training

    _refuse_unknown(options, _option_fields(), "option")  # as argparse would: nothing recorded
    try:
        model_config, train_config = train_configs(model, config, options)
    except LayerwiseError as exc:
        record_invalid(options.get("out"), str(exc))
        raise
    chosen = train_config.out is not None
    if not chosen:
        train_config.out = default_out(train_config.method)
    return run_training(train_config, model_config, extra_callbacks=callbacks, out_chosen=chosen)


def resume(out: str | Path, *, callbacks: list | None = None, progress: bool = True) -> RunResult:
    """Continue the interrupted (or killed) run in `out` from its newest complete checkpoint, with
    the configuration in OUT/config.yaml (`layerwise train --resume OUT`).

    Example::

        run = layerwise.resume("runs/x")
        run.status, run.resumed_from_step, run.steps_completed
    """
    return _resume(out, callbacks, progress)


def _resume(out, callbacks, progress) -> RunResult:
    from layerwise.training.runner import resume as resume_run

    return resume_run(str(out), extra_callbacks=callbacks, quiet=not progress)


def train_configs(model: str | None, config: str | Path | None,
                  options: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The two config dataclasses from a config file and keyword options (the options win)."""
    from layerwise.training.configfile import configs_from_document
    from layerwise.training.run_dir import read_config_file

    valid = _option_fields()
    _refuse_unknown(options, valid, "option")
    # Keys of a config file may be spelled as flags (batch-size); key them by field name, so that
    # a keyword option replaces the file's value however the file spells it.
    alias = {key: f.name for f in valid.values()
             for key in (f.name, _flag(f), _flag(f).replace("-", "_"))}
    doc = {alias.get(str(k), k): v for k, v in (read_config_file(config) if config else {}).items()}
    if model is not None:
        doc["model"] = model
    later = {}  # fields that are no flag (e.g. progress) are no config key either
    for name, value in options.items():
        target = later if valid[name].metadata.get("cli", True) is False else doc
        target[name] = _as_field_type(valid[name], value)
    model_config, train_config = configs_from_document(doc, str(config) if config else "train()")
    for name, value in later.items():
        setattr(train_config if hasattr(train_config, name) else model_config, name, value)
    return model_config, train_config


def _option_fields() -> dict:
    from dataclasses import fields

    from layerwise.training.config import ModelConfig, TrainConfig

    return {f.name: f for cls in (ModelConfig, TrainConfig) for f in fields(cls)}


def _flag(f) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def _refuse_unknown(given: Iterable[str], valid: Iterable[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise LayerwiseError(f"unknown {what}{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(unknown)}; valid: {', '.join(sorted(valid))}")


def _as_field_type(f, value: Any) -> Any:
    """What a flag would have given: `layers=2` as "2", `lr_scale="8-9=3"` as ["8-9=3"]."""
    kind = str(f.type).replace(" ", "")
    if kind.startswith("str") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind.startswith("list") and isinstance(value, str):
        return [value]
    return value


# ---- diagnose ---------------------------------------------------------------------------------

@dataclass
class DiagnoseResult:
    """A per-block profile: one row per block (`layers`), the metrics that filled it, the files.

    `document` is diagnostics.json in full (schema in docs/diagnostics.md); `paths` the files
    written to `out` (none without it); `pruned` the checkpoint written by `save=`.
    """

    metrics: list[str]
    layers: list[dict]
    baseline_perplexity: float
    document: dict = field(repr=False)
    paths: list[Path] = field(default_factory=list)
    pruned: Path | None = None

    def column(self, name: str) -> list:
        """One per-block field, block by block (e.g. "removal_delta_pct")."""
        names = sorted({k for row in self.layers for k in row})
        if name not in names:
            raise LayerwiseError(f"no per-block field {name!r}; valid: {', '.join(names)}")
        return [row.get(name) for row in self.layers]


def diagnose(model: str | None = None, *, data: str | None = None, metrics: str | list[str] | None = None,
             out: str | Path | None = None, text_field: str = "text", seq_len: int = 256,
             num_seqs: int = 4, batch_size: int = 4, seed: int = 0, dtype: str = "auto",
             device: str = "auto", trust_remote_code: bool = False, alpha: Iterable[float] = (0.9,),
             noise_fraction: float = 0.5, max_run: int = 4, ridge: float = 1e-3,
             recovery_blocks: str | None = None, recovery_tolerance: float = 5.0,
             recovery_max_steps: int = 200, recovery_lr: float = 1e-4, recovery_eval_every: int = 5,
             prune_blocks: int | None = None, save: str | Path | None = None,
             progress: bool = True) -> DiagnoseResult:
    """Profile every block of `model` on a text by each metric, as `layerwise diagnose` does.

    `metrics`: a comma list or a list of names, "default" (None) or "all"; the other arguments
    are the command's flags. With `out`, diagnostics.json/.csv, plots and report.html go there.

    Example::

        diag = layerwise.diagnose("tiny:llama", metrics="removal,angular", seq_len=32, num_seqs=2)
        diag.column("removal_delta_pct")
    """
    from layerwise.diagnostics.context import DiagnosticOptions
    from layerwise.diagnostics.diagnose import diagnose_model
    from layerwise.diagnostics.registry import resolve_metrics

    specs = resolve_metrics(metrics)
    if save and "prune" not in [m.name for m in specs]:
        raise LayerwiseError("save= writes the pruned model: add 'prune' to metrics")
    options = DiagnosticOptions(  # refuse bad knobs before loading anything
        alphas=tuple(alpha), noise_fraction=noise_fraction, max_run=max_run, ridge=ridge,
        recovery_tolerance_pct=recovery_tolerance, recovery_max_steps=recovery_max_steps,
        recovery_lr=recovery_lr, recovery_eval_every=recovery_eval_every,
        prune_blocks=prune_blocks, batch_size=batch_size, seed=seed)
    if save and Path(save).exists() and any(Path(save).iterdir()):
        raise LayerwiseError(f"save={save} already exists and is not empty; choose a new directory")
    diagnosis = diagnose_model(model, specs, options, data=data, text_field=text_field,
                               seq_len=seq_len, num_seqs=num_seqs, dtype=dtype, device=device,
                               trust_remote_code=trust_remote_code, recovery_blocks=recovery_blocks,
                               out=out, save=save, progress=progress)
    doc = diagnosis.document
    return DiagnoseResult(metrics=list(doc["metrics"]), layers=doc["layers"],
                          baseline_perplexity=doc["baseline_perplexity"], document=doc,
                          paths=diagnosis.paths, pruned=diagnosis.pruned)


# ---- sweep ------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    """C(k) for every selection: S_base, S_full per seed, one `Contribution` per selection (full
    training first), and the directory holding the store, contribution.* and report.html."""

    base_score: float
    full_scores: dict[int, float]
    contributions: list[Contribution]
    out: Path
    spec: SweepSpec = field(repr=False)

    def contribution(self, label: str) -> Contribution:
        """The row of one selection, by its label ("full", "block 3", "mid:2", ...)."""
        for row in self.contributions:
            if row.label == label:
                return row
        raise LayerwiseError(f"no selection {label!r} in this sweep; valid: "
                             f"{', '.join(r.label for r in self.contributions)}")


def sweep(model: str | None = None, *, task: str | None = None, method: str = "sft",
          layers: str = "each",
          seeds: int | str | Iterable[int] = (0,), out: str | Path, workers: int = 1,
          full_lr: float | None = None, backend: str = "local", dtype: str = "auto",
          device: str = "auto", force: bool = False, keep_full: bool = True,
          ray_address: str | None = None, ray_cpus: float = 1.0, ray_gpus: float = 0.0,
          on_result=None, **train_options: Any) -> SweepResult:
    """Train each selection of `layers` and full training, per seed, as `layerwise sweep` does.

    `train_options` are the training flags a sweep takes (steps, lr, batch_size, task_options,
    ...); what trains, the seed and each run's directory are the sweep's to decide. The same
    arguments give the same run ids as the command, so either one resumes the other's sweep in
    `out`. `on_result(run, result)` is called after each run.

    Example::

        sw = layerwise.sweep("tiny:llama", task="arithmetic", layers="1;2", out="sweep", steps=3)
        sw = layerwise.sweep("tiny:llama", dataset="chats.jsonl", layers="1;2", out="s2")
        sw.base_score, sw.full_scores, [(c.label, c.contribution_mean) for c in sw.contributions]
    """
    from dataclasses import fields

    from layerwise.sweeps.outputs import write_sweep_outputs
    from layerwise.sweeps.runner import run_sweep
    from layerwise.sweeps.spec import SweepSpec
    from layerwise.sweeps.spec import train_options as sweep_train_options  # the command's run ids
    from layerwise.tasks.registry import parse_task_options
    from layerwise.training.config import TrainConfig, fold_dataset

    allowed = {f.name: f for f in fields(TrainConfig)
               if f.metadata.get("cli", True) and f.metadata.get("sweep", True)
               and f.name not in ("task", "method")}  # those two are arguments
    _refuse_unknown(train_options, allowed, "sweep training option")
    values = {name: _default(f) for name, f in allowed.items()}
    values.update({k: _as_field_type(allowed[k], v) for k, v in train_options.items()})
    task_options = values.pop("task_options")
    if not isinstance(task_options, dict):
        task_options = parse_task_options([str(o) for o in task_options])
    # dataset=... and its options become the dataset task, as on the command line
    folded = fold_dataset({**values, "task": task or "arithmetic", "task_options": task_options})
    task, task_options = folded.pop("task"), folded.pop("task_options")
    values = folded
    spec = SweepSpec(model=model, task=task, method=method, layers=layers, seeds=_seeds(seeds),
                     task_options=task_options,
                     train=sweep_train_options({**values, "task": task, "method": method,
                                                "task_options": task_options}),
                     full_lr=full_lr)
    rows = run_sweep(spec, out, workers=workers, backend=backend, force=force, dtype=dtype,
                     device=device, ray_address=ray_address, ray_cpus=ray_cpus, ray_gpus=ray_gpus,
                     keep_full=keep_full, on_result=on_result)
    s_base, full, table = write_sweep_outputs(spec, rows, out)
    return SweepResult(base_score=s_base, full_scores=full, contributions=table, out=Path(out),
                       spec=spec)


def _default(f) -> Any:
    from dataclasses import MISSING

    return f.default if f.default is not MISSING else f.default_factory()


def _seeds(seeds: int | str | Iterable[int]) -> tuple[int, ...]:
    items = (seeds.split(",") if isinstance(seeds, str) else [seeds] if isinstance(seeds, int)
             else list(seeds))
    try:
        out = tuple(dict.fromkeys(int(s) for s in items if str(s).strip()))
    except (TypeError, ValueError):
        raise LayerwiseError(f"seeds={seeds!r}: expected integers, e.g. (0, 1) or '0,1'") from None
    if not out:
        raise LayerwiseError("seeds is empty")
    return out


# ---- compare ----------------------------------------------------------------------------------

@dataclass
class CompareResult:
    """What fine-tuning changed in each tuned checkpoint against the base.

    `comparison` is the library's typed result (`analysis.diff.Comparison`: per run a
    `CheckpointDiff` with `.sparsity(tol)` and per-tensor `TensorDiff`s, overlaps per pair);
    `document` is compare.json (per run its block, module and tensor rows, the selection check);
    `failed_checks` the labels whose changes left `expect_layers`; `report` the report.html.
    """

    labels: list[str]
    tuned: list[str]
    tols: list[float]
    comparison: Comparison = field(repr=False)
    document: dict = field(repr=False)
    failed_checks: list[str] = field(default_factory=list)
    report: Path | None = None

    @property
    def ok(self) -> bool:
        """Every selection check passed (`layerwise compare` exits 1 otherwise)."""
        return not self.failed_checks

    def sparsity(self, label: str, tol: float | None = None) -> float:
        """Update sparsity of one run, at `tol` (default: the first tolerance)."""
        if label not in self.labels:
            raise LayerwiseError(f"no tuned run {label!r}; valid: {', '.join(self.labels)}")
        return self.comparison.diffs[self.labels.index(label)].sparsity(
            self.tols[0] if tol is None else float(tol))


def compare(base: str | Path, *tuned: str | Path, tol: float | str | Iterable[float] = 1e-5,
            rounding: str = "auto", ranks: bool = True, expect_layers: str | None = None,
            labels: Iterable[str] | None = None, out: str | Path | None = None) -> CompareResult:
    """Update sparsity, rank and overlap of tuned checkpoints against `base`, as `layerwise compare`.

    `tuned` are checkpoints or `layerwise train` run directories; `tol` one tolerance or several
    (the first is used for overlap and the selection check). Runs trained with `layers=` are
    checked against their own selection, or every run against `expect_layers`. With `out`,
    compare.json, CSVs, plots and report.html go there.

    Example::

        cmp = layerwise.compare("base", "runs/x", "runs/y", tol=(1e-5, 0))
        cmp.sparsity("x"), cmp.document["runs"][0]["blocks"]
    """
    from layerwise.analysis.checkpoints import resolve_checkpoint
    from layerwise.analysis.compare_doc import compare_document, run_labels, write_compare
    from layerwise.analysis.diff import compare_many

    if not tuned:
        raise LayerwiseError("compare needs at least one tuned checkpoint after the base")
    tols = _tols(tol)
    paths = [str(resolve_checkpoint(t)) for t in tuned]  # run dirs -> RUN/merged or RUN/model
    names = run_labels(paths, labels)
    comparison = compare_many(str(base), paths, tols, ranks=ranks, rounding=rounding)
    doc, failed = compare_document(str(base), paths, names, comparison, rounding, expect_layers)
    report = write_compare(doc, Path(out)) if out is not None else None
    return CompareResult(labels=names, tuned=paths, tols=list(comparison.diffs[0].tols),
                         comparison=comparison, document=doc, failed_checks=failed, report=report)


def _tols(tol) -> list[float]:
    items = tol.split(",") if isinstance(tol, str) else [tol] if isinstance(tol, (int, float)) else tol
    try:
        return [float(t) for t in items if str(t).strip()]
    except (TypeError, ValueError):
        raise LayerwiseError(f"tol={tol!r}: expected a number or several, e.g. (1e-5, 0)") from None

