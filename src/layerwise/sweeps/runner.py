"""Running a sweep: skip what the store says is done, run the rest, record each result at once.

Backends: in this process (`--workers 1`, the model loaded once and copied per run), local worker
processes (`--workers N`, each loads the model once and keeps it), or an existing Ray cluster
(`--backend ray`, one run per Ray task with its CPU/GPU request). Whatever the backend, workers
only compute and return; the driver alone writes the store, one transaction per finished run, so
a crash or `kill -9` loses at most the runs in flight.
The base model is scored once per sweep and handed to every training run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import socket
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

from layerwise.errors import LayerwiseError
from layerwise.inputs import identity_key
from layerwise.procs import die_with_parent
from layerwise.models.arch import discover_layers
from layerwise.models.loading import LoadedModel, load_model
from layerwise.sweeps.spec import FULL_LABEL, RunSpec, SweepSpec, plan_runs
from layerwise.sweeps.store import SweepStore, open_store

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")
_MODELS: dict[tuple, LoadedModel] = {}  # per process: the pristine model of each (spec, dtype, device)


@dataclass
class Execution:
    dtype: str = "auto"
    device: str = "auto"
    threads: int | None = None


def _pristine(model: str | None, ex: Execution, inputs: str | None = None) -> LoadedModel:
    key = (model, ex.dtype, ex.device, inputs)  # a model dir changed on disk is another model
    if key not in _MODELS:
        _MODELS[key] = load_model(model, dtype=ex.dtype, device=ex.device)
    return _MODELS[key]


def execute_run(run: RunSpec, base_metrics: dict | None, ex: Execution,
                save_to: str | None = None) -> dict[str, Any]:
    """Do one run; never raises: a failure comes back as {"status": "failed", "error": ...}.

    `save_to`: a directory for the run's checkpoint and files (the sweep keeps its full runs there,
    for the `delta` estimator); it is not part of the run's identity.
    """
    from layerwise.training.result import Scores
    from layerwise.training.runner import score_base, train

    if ex.threads:
        import torch

        torch.set_num_threads(ex.threads)
    try:
        pristine = _pristine(run.model, ex, run.inputs)
        config = run.config()
        if save_to is not None:
            config.out = save_to
            config.overwrite = True  # a run that died mid-way in an earlier sitting is redone
        if run.kind == "base":
            scored = score_base(config, pristine)
            ev = scored.evaluation
            return {"status": "completed", "error": None,
                    "metrics": {"task": ev.task, "n": ev.n, **dataclasses.asdict(scored.scores),
                                "seconds": ev.seconds}}
        loaded = dataclasses.replace(pristine, model=copy.deepcopy(pristine.model))
        base = Scores.from_dict(base_metrics) if base_metrics else None
        result = train(config, run.model, loaded=loaded, base=base)
        return {"status": result.status, "error": result.failure, "metrics": result.to_dict()}
    except LayerwiseError as exc:
        return {"status": "failed", "error": str(exc), "metrics": None}
    except Exception as exc:  # noqa: BLE001 - one bad run (OOM, a library error) must not end a sweep
        first = str(exc).splitlines()[0] if str(exc) else ""
        return {"status": "failed", "error": f"{type(exc).__name__}: {first}", "metrics": None}


def _in_process(runs, base, ex, save):
    for run in runs:
        yield run, execute_run(run, base, ex, save(run))


def _local_pool(runs, base, ex, workers, save):
    threads = ex.threads or max(1, (os.cpu_count() or 1) // workers)
    ex = dataclasses.replace(ex, threads=threads)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        pending = {pool.submit(execute_run, run, base, ex, save(run)): run for run in runs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                run = pending.pop(fut)
                try:
                    yield run, fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker process died (OOM kill...)
                    yield run, {"status": "failed", "error": f"worker died: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}", "metrics": None}


def _address_reachable(address: str, timeout: float = 3.0) -> bool:
    """A TCP connect to host:port (Ray itself retries an unreachable address for minutes)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return True  # not host:port (e.g. "auto", "local"): let Ray interpret it
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def connect_ray(address: str | None) -> None:
    """Join an existing Ray cluster (or the one this process already started), or fail in one line."""
    try:
        import ray
    except ImportError:
        raise LayerwiseError("--backend ray needs Ray: pip install 'layerwise[ray]'") from None
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    hint = "start one with `ray start --head`, or set RAY_ADDRESS / --ray-address"
    if not _address_reachable(target):
        raise LayerwiseError(f"cannot reach the Ray cluster at {target}: connection refused or "
                             f"timed out ({hint})")
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LayerwiseError(f"cannot reach the Ray cluster at {target}: {first} ({hint})") from None


def _ray(runs, base, ex, num_cpus, num_gpus, save):
    import ray

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(execute_run)
    pending = {remote.remote(run, base, ex, save(run)): run for run in runs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            run = pending.pop(ref)
            try:
                yield run, ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the task's worker died
                yield run, {"status": "failed", "error": f"ray task failed: {type(exc).__name__}",
                            "metrics": None}


def run_sweep(sweep: SweepSpec, out: str | Path, *, workers: int = 1, backend: str = "local",
              force: bool = False, dtype: str = "auto", device: str = "auto",
              ray_address: str | None = None, ray_cpus: float = 1.0, ray_gpus: float = 0.0,
              keep_full: bool = True, on_result: Callable[[RunSpec, dict], None] | None = None) -> list[dict]:
    """Run every run of `sweep` not already completed in `out`'s store; return all its rows."""
    if backend not in BACKENDS:
        raise LayerwiseError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if workers < 1:
        raise LayerwiseError(f"--workers {workers}: must be >= 1")
    if backend == "ray":
        connect_ray(ray_address)  # before any work, so a bad address fails at once
    ex = Execution(dtype=dtype, device=device)
    with open_store(out) as store:
        # what the sweep reads, checked against what the store's runs read, before any loading
        inputs = check_sweep_inputs(sweep, store, out, force)
        key = identity_key(inputs)
        pristine = _pristine(sweep.model, ex, key)  # also resolves the selections on the structure
        runs = plan_runs(sweep, discover_layers(pristine.model), key)
        from layerwise.models.identity import model_identity

        identity = model_identity(discover_layers(pristine.model), sweep.model)
        store.claim(sweep.sweep_id(), {"summary": sweep.summary(), "identity": identity,
                                       "spec": dataclasses.asdict(sweep), "inputs": inputs,
                                       "inputs_key": key}, force=force)
        done = store.completed_ids()
        base_run, train_runs = runs[0], runs[1:]
        if base_run.run_id not in done:
            _record(store, base_run, execute_run(base_run, None, ex), on_result)
        base_row = next((r for r in store.runs() if r["run_id"] == base_run.run_id), None)
        if base_row is None or base_row["status"] != "completed":
            raise LayerwiseError(f"scoring the base model failed: {base_row and base_row['error']}")
        todo = [r for r in train_runs if r.run_id not in done]
        log.info("sweep %s: %d training runs (and the base model, scored once): %d done, %d to run",
                 sweep.sweep_id(), len(train_runs), len(train_runs) - len(todo), len(todo))
        def save(run: RunSpec) -> str | None:
            keep = keep_full and run.label == FULL_LABEL
            return str(Path(out).resolve() / f"full-seed{run.seed}") if keep else None

        if backend == "ray":
            results: Iterable = _ray(todo, base_row["metrics"], ex, ray_cpus, ray_gpus, save)
        elif workers > 1:
            results = _local_pool(todo, base_row["metrics"], ex, workers, save)
        else:
            results = _in_process(todo, base_row["metrics"], ex, save)
        for run, result in results:
            _record(store, run, result, on_result)
            if result["status"] == "interrupted":
                # Ctrl-C reached the run (it stopped cleanly): the sweep stops too, and the run,
                # not completed in the store, is redone when the sweep is run again.
                raise KeyboardInterrupt
        ids = {r.run_id for r in runs}
        return [r for r in store.runs() if r["run_id"] in ids]


def sweep_inputs(sweep: SweepSpec, like: dict | None = None) -> dict:
    """What every run of `sweep` reads (layerwise.inputs): its model (loaded with seed 0, as the
    workers load it), tokenizer, data files, the sweep's spec and the code."""
    from layerwise.inputs import record
    from layerwise.training.config import ModelConfig, TrainConfig
    from layerwise.training.run_dir import run_settings

    try:
        cfg = TrainConfig(**{**sweep.train, "task": sweep.task, "task_options": sweep.task_options,
                             "method": sweep.method, "full": True, "schedule": "fixed",
                             "out": None})
    except TypeError as exc:
        raise LayerwiseError(f"sweep training options: {exc}") from exc
    task = cfg.make_task()  # a task the sweep cannot score is refused here, before loading
    # the files the runs read: the shared options as given (a schedule's scores file too) and
    # those inside --layers (top:K@FILE)
    settings = {**run_settings(ModelConfig(model=sweep.model), cfg), **sweep.train,
                "layers": sweep.layers}
    rec = record(model=sweep.model, settings=settings, seed=0, task=task, like=like)
    rec["options"] = json.loads(json.dumps(dataclasses.asdict(sweep), default=str))
    return rec


def check_sweep_inputs(sweep: SweepSpec, store: SweepStore, out, force: bool) -> dict:
    """The sweep's inputs record; a store whose runs read other inputs is refused (its spec is
    checked by `SweepStore.claim`), unless --force: then this sweep's runs, whose ids carry the
    new inputs' key, sit beside the earlier ones and C(k) never mixes the two."""
    from layerwise.inputs import changes, check

    before = store.inputs()
    inputs = sweep_inputs(sweep, like=before)
    sections = ("model", "tokenizer", "data", "code")
    if not store.has_runs():
        return inputs
    if not force:
        check(before, inputs, f"--out {out}", "the store's runs were made",
              "use another --out, or --force to run this sweep beside them as a separate sweep "
              "(C(k) never mixes the two)", sections=sections)
        return inputs
    found = ["no record"] if before is None else changes(before, inputs, sections=sections)
    if found:
        log.warning("--force: the runs already in %s read other inputs (%s); this sweep's runs "
                    "are kept beside them as a separate sweep, and C(k) uses only this one's", out,
                    found[0])
    return inputs


def _record(store: SweepStore, run: RunSpec, result: dict, on_result) -> None:
    spec = {"label": run.label, "kind": run.kind, "blocks": list(run.blocks), "train": run.train,
            "model": run.model, "inputs": run.inputs}
    metrics = result["metrics"]
    if metrics is not None and "history" in metrics:
        metrics = {**metrics, "history": metrics["history"][-200:]}  # keep the store small
    store.record(run.run_id, run.label, run.seed, spec, result["status"], metrics, result["error"])
    if on_result is not None:
        on_result(run, result)
