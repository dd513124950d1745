"""lm-evaluation-harness on the model in memory: check the task names early, run, typed results.

A forgetting measure after layer-wise training is best taken with the community's own tasks
(hellaswag, arc, wikitext, ...) on the very model object the recipe holds, without saving and
re-loading weights. `check_lm_eval` runs before any weights load, so a misspelt task fails in a
second rather than after training; `run_lm_eval` wraps the model in lm-eval's `HFLM` and leaves
the model (weights, train/eval modes), the tokenizer and the global RNG states as it found them.

The local tasks in `lm_eval_tasks/` are always on the include path and run offline:
`layerwise_arith_mc` (multiple choice, headline `acc`), `layerwise_arith_gen` (generate_until,
`exact_match`) and `layerwise_wikitext_local` (loglikelihood_rolling, `word_perplexity`; see
`wikitext_task` to point it at any raw WikiText file).

Metric names: lm-eval reports `"metric,filter"` keys (`"acc,none"`). `HarnessResult.metrics` names
a value by its bare metric (`"acc"`) when the task reports that metric under one filter only, and
by lm-eval's key otherwise; `HarnessResult.keys` maps every name back to lm-eval's key.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from layerwise.errors import LayerwiseError

LOCAL_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
WIKITEXT_TASK = "layerwise_wikitext_local"
# TaskManager per include folder: indexing lm-eval's ~15k task YAMLs takes seconds.
_TASK_MANAGERS: dict[str | None, object] = {}


@dataclass
class HarnessResult:
    """What lm-eval measured, per task (and per group that aggregates its tasks).

    metrics / stderr: task -> metric name -> value (stderr only where lm-eval computes one);
    keys: task -> metric name -> lm-eval's `"metric,filter"` key; higher_is_better: task -> bare
    metric name -> lm-eval's direction; n_samples: items scored per task (after `limit`).
    """

    tasks: list[str]
    limit: int | None
    metrics: dict[str, dict[str, float]]
    stderr: dict[str, dict[str, float]]
    keys: dict[str, dict[str, str]]
    higher_is_better: dict[str, dict[str, bool | None]]
    n_samples: dict[str, int]
    seconds: float

    def headline(self) -> dict[str, tuple[str, float, bool | None]]:
        """Per task, (name, value, higher_is_better) of its first metric in the task's config."""
        out = {}
        for task, values in self.metrics.items():
            if values:
                name = next(iter(values))
                bare = self.keys[task][name].split(",")[0]
                out[task] = (name, values[name], self.higher_is_better.get(task, {}).get(bare))
        return out

    def to_dict(self) -> dict:
        """JSON-safe: NaN and infinities become None; the headline is included."""
        data = asdict(self)
        data["headline"] = {task: {"metric": name, "value": value, "higher_is_better": hib}
                            for task, (name, value, hib) in self.headline().items()}
        return _finite_or_none(data)


def parse_lm_eval_tasks(text: str) -> list[str]:
    """Comma-separated lm-eval task or group names, stripped, in order, without repeats."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise LayerwiseError(f"no lm-eval task names in {text!r}; give comma-separated names, "
                             "e.g. layerwise_arith_mc,hellaswag")
    return names


def check_lm_eval(tasks: list[str], include: str | None = None) -> None:
    """Refuse, before any weights load, what `run_lm_eval` would fail on: no lm-eval, an include
    that is not a folder, an unknown task or group name, a local WikiText file that is missing."""
    _import_lm_eval()
    if include is not None and not Path(include).is_dir():
        raise LayerwiseError(f"lm-eval include {include!r} is not a directory; give a folder of "
                             "lm-eval task YAML files")
    if not tasks:
        raise LayerwiseError("no lm-eval tasks given; e.g. layerwise_arith_mc,hellaswag")
    manager = _task_manager(include)
    for name in tasks:
        if name not in manager.task_index:
            near = difflib.get_close_matches(name, manager.all_tasks, n=5)
            where = f" (with include {include})" if include else ""
            hint = f"near names: {', '.join(near)}" if near else "`lm-eval ls tasks` lists them"
            raise LayerwiseError(f"unknown lm-eval task {name!r}{where}; {hint}")
        _check_wikitext_file(manager.task_index[name])


def run_lm_eval(model, tokenizer, tasks: list[str], limit: int | None = None,
                include: str | None = None, batch_size: int = 8, max_length: int | None = None,
                seed: int = 0) -> HarnessResult:
    """Score `model` (in memory) on lm-eval `tasks`: the first `limit` items of each, greedy,
    seeded with `seed`, nothing logged per sample and nothing cached on disk."""
    check_lm_eval(tasks, include)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    _refuse_untied_head(model)
    start = time.perf_counter()
    with _left_as_found(model):
        lm = HFLM(pretrained=model, tokenizer=_with_pad_token(tokenizer), batch_size=batch_size,
                  max_length=max_length)
        out = simple_evaluate(
            model=lm, tasks=list(tasks), limit=limit, task_manager=_task_manager(include),
            log_samples=False, use_cache=None, cache_requests=False, random_seed=seed,
            numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    return _harness_result(out, list(tasks), limit, time.perf_counter() - start)


def wikitext_task(text_file: str | Path, out_dir: str | Path,
                  name: str = WIKITEXT_TASK) -> Path:
    """Write `layerwise_wikitext_local` over `text_file` (absolute path) into `out_dir` and return
    `out_dir`, an include folder that works from any working directory.

    lm-eval reads relative data paths against the working directory, so the shipped task finds
    `../shared/data/wikitext2_test.txt` from the checkout root only. With the default `name` the
    written task replaces the shipped one (an include is indexed after the local tasks).
    """
    text = Path(text_file).expanduser().resolve()
    if not text.is_file():
        raise LayerwiseError(f"WikiText file {str(text_file)!r} not found; give a raw text file "
                             "such as wikitext2_test.txt")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    task = {"include": str(LOCAL_TASKS / f"{WIKITEXT_TASK}.yaml"), "task": name,
            "dataset_kwargs": {"path": str(text)}}
    (out / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    _TASK_MANAGERS.pop(str(out), None)  # its index predates the new task
    return out


# --- helpers ----------------------------------------------------------------------------------

def _import_lm_eval():
    try:
        import lm_eval
    except ImportError as err:
        raise LayerwiseError(f"lm-eval is not installed ({err}); pip install lm-eval") from None
    return lm_eval


def _task_manager(include: str | None):
    key = None if include is None else str(Path(include).expanduser().resolve())
    if key not in _TASK_MANAGERS:
        from lm_eval.tasks import TaskManager

        paths = list(dict.fromkeys([str(LOCAL_TASKS)] + ([key] if key else [])))
        _TASK_MANAGERS[key] = TaskManager(include_path=paths)
    return _TASK_MANAGERS[key]


def _check_wikitext_file(entry) -> None:
    """A WikiText task whose file is missing would fail only once the model is loaded."""
    cfg = entry.cfg or {}
    if str(cfg.get("custom_dataset", "")).endswith("loaders.wikitext_articles"):
        path = (cfg.get("dataset_kwargs") or {}).get("path", "")
        if not Path(path).is_file():
            raise LayerwiseError(
                f"lm-eval task {entry.name!r} reads {path!r}, not found from {Path.cwd()}; write "
                "it with an absolute path: layerwise.evaluation.harness.wikitext_task(FILE, DIR) "
                "and pass DIR as the include"
            )


def _refuse_untied_head(model) -> None:
    """HFLM calls `model.tie_weights()`, which re-ties (overwrites) an output head that the config
    says is tied but that training has untied; refuse rather than change the model. Read through
    the input/output embedding accessors, which a PEFT-wrapped model forwards to its base."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not getattr(text, "tie_word_embeddings", False):
        return
    try:
        source, target = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return
    if source is None or target is None:
        return
    if target.weight is not source.weight and target.weight.data_ptr() != source.weight.data_ptr():
        raise LayerwiseError(
            "the model's config ties the output head to the input embeddings but they are "
            "separate tensors, and lm-eval would overwrite the head; set "
            "model.config.tie_word_embeddings = False first"
        )


def _with_pad_token(tokenizer):
    """lm-eval pads batches and sets a missing pad token on the tokenizer it is given (or adds a
    new token the model has no embedding for); give it a copy with eos (or unk) as pad."""
    if tokenizer.pad_token_id is not None:
        return tokenizer
    token = tokenizer.eos_token or tokenizer.unk_token
    if token is None:
        raise LayerwiseError("the tokenizer has no pad, eos or unk token; lm-eval needs one to "
                             "pad batches")
    padded = copy.deepcopy(tokenizer)
    padded.pad_token = token
    return padded


@contextlib.contextmanager
def _left_as_found(model):
    """Undo what HFLM and simple_evaluate change in place: every module's train/eval mode (HFLM
    calls `.eval()`) and the global RNG states (simple_evaluate seeds random, numpy and torch)."""
    modes = [(module, module.training) for module in model.modules()]
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _harness_result(out: dict, tasks: list[str], limit: int | None,
                    seconds: float) -> HarnessResult:
    metrics, stderr, keys = {}, {}, {}
    for task, row in out["results"].items():
        pairs = [(key, *key.split(",", 1)) for key in row if "," in key]  # skips "alias"
        bare = [metric for _, metric, _ in pairs if not metric.endswith("_stderr")]
        metrics[task], stderr[task], keys[task] = {}, {}, {}
        for key, metric, filt in pairs:
            if metric.endswith("_stderr") or not isinstance(row[key], (int, float)):
                continue
            name = metric if bare.count(metric) == 1 else key
            metrics[task][name], keys[task][name] = float(row[key]), key
            err = row.get(f"{metric}_stderr,{filt}")
            if isinstance(err, (int, float)):
                stderr[task][name] = float(err)
    return HarnessResult(
        tasks=tasks, limit=limit, metrics=metrics, stderr=stderr, keys=keys,
        higher_is_better={task: dict(hib) for task, hib in out["higher_is_better"].items()},
        n_samples={task: int(n["effective"]) for task, n in out["n-samples"].items()},
        seconds=seconds,
    )


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
