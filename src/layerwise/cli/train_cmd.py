"""`layerwise train`: fine-tune only the selected blocks (or all, or LoRA) with SFT, RL or preferences.

Flags come from the config dataclasses (training/config.py); `--config FILE.yaml` supplies them
from a file (command-line flags win); `--resume OUT` continues an interrupted run as its own
config.yaml says. Exit codes: 0 completed, 2 bad input or a failed run, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from layerwise.cli.args import add_config_arguments, add_task_args, config_values
from layerwise.errors import LayerwiseError
from layerwise.training.config import ModelConfig, TrainConfig
from layerwise.training.result import RunResult

NAME = "train"
HELP = "train only the selected blocks (or --full, or --lora) on a task, then compare with the base"
INTERRUPTED = 130
__all__ = ["add_arguments", "add_task_args", "configs_from_args", "run", "summary_lines"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="read flags from a YAML file (keys: long flag names, e.g. batch-size: 8); "
                        "flags given here override it; every run writes its own OUT/config.yaml")
    p.add_argument("--resume", default=None, metavar="OUT",
                   help="continue the interrupted run in OUT from its newest checkpoint, with the "
                        "configuration in OUT/config.yaml (no other flags)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything that needs no weights (task, data files, selections on "
                        "the model's structure, --out), print the resolved config.yaml and what "
                        "would train, and stop (default: off)")
    add_config_arguments(p, (ModelConfig, TrainConfig))


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    train_kw = config_values(args, TrainConfig)
    train_kw["progress"] = not args.quiet
    return ModelConfig(**config_values(args, ModelConfig)), TrainConfig(**train_kw)


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def _dataset_lines(r: RunResult) -> list[str]:
    """--dataset: S by name, then every other held-out figure the data gave."""
    from layerwise.tasks.dataset import S_NAMES

    b, f, n = r.base, r.final, r.eval.get("n")
    lines = [f"S = {S_NAMES[b.primary]:<19} base {_fmt(b.score, '.4f')} -> final "
             f"{_fmt(f.score, '.4f')} on {n} held-out rows"]
    for key, label in (("accuracy", "accuracy"), ("loss", "held-out loss"),
                       ("preference_margin", "preference margin")):
        if key != b.primary and getattr(b, key) is not None:
            lines.append(f"  {label:<23} base {_fmt(getattr(b, key), '.4f')} -> final "
                         f"{_fmt(getattr(f, key), '.4f')}")
    for name, value in (b.reward_means or {}).items():
        lines.append(f"  {'reward ' + name:<23} base {_fmt(value, '.4f')} -> final "
                     f"{_fmt((f.reward_means or {}).get(name), '.4f')}")
    return lines


def _score_line(r: RunResult) -> str:
    if r.base.primary:
        return "\n".join(_dataset_lines(r))
    if r.base.accuracy is None and r.base.loss is not None:
        return (f"lm loss       base {_fmt(r.base.loss, '.4f')} -> final {_fmt(r.final.loss, '.4f')} "
                f"(perplexity {_fmt(r.base.perplexity, '.2f')} -> {_fmt(r.final.perplexity, '.2f')}) "
                f"on {r.eval.get('n')} windows")
    gain = "" if r.accuracy_gain is None else f" ({r.accuracy_gain:+.3f})"
    graded = ("" if r.base.mean_score is None or r.base.mean_score == r.base.accuracy and
              r.final.mean_score == r.final.accuracy else
              f"; mean score {_fmt(r.base.mean_score)} -> {_fmt(r.final.mean_score)}")
    return (f"accuracy      base {_fmt(r.base.accuracy)} -> final {_fmt(r.final.accuracy)}{gain} "
            f"on {r.eval.get('n')} held-out items{graded}")


def summary_lines(r: RunResult) -> list[str]:
    t, f = r.trainable, r.forgetting
    return [
        f"task          {r.task}  method {r.method}  seed {r.seed}",
        f"trains        {t.description}: {t.params:,} of {t.total_params:,} parameters "
        f"({100 * t.share:.2f}%)",
        _score_line(r),
        f"forgetting    perplexity {_fmt(f.perplexity_before)} -> {_fmt(f.perplexity_after)} on "
        f"{f.general_data}",
        *_lm_eval_lines(r),
        f"cost          {r.steps_completed} steps"
        + (f" (resumed at {r.resumed_from_step})" if r.resumed_from_step is not None else "")
        + f", median step {_fmt(r.step_seconds_median)} s, optimizer state "
        f"{r.optimizer_state_bytes / 2**20:.1f} MiB, peak memory {_fmt(r.peak_memory_mb, '.0f')} MiB, "
        f"wall {_fmt(r.wall_seconds, '.1f')} s",
        *_subnetwork_lines(r.subnetwork),
        *_tying_lines(r.tying),
        *[f"warning       {w}" for w in r.warnings],
        f"status        {r.status}" + (f": {r.failure}" if r.failure else ""),
    ]


def _lm_eval_lines(r: RunResult) -> list[str]:
    """--forgetting lm-eval:TASKS: each task's headline metric before and after."""
    before, after = r.base.lm_eval or {}, r.final.lm_eval or {}
    lines = []
    for task, head in (before.get("headline") or {}).items():
        end = (after.get("headline") or {}).get(task, {})
        lines.append(f"  lm-eval {task}: {head['metric']} {_fmt(head['value'], '.4f')} -> "
                     f"{_fmt(end.get('value'), '.4f')} on {before.get('n_samples', {}).get(task)} items")
    return lines


def _tying_lines(t: dict | None) -> list[str]:
    if not t:
        return []
    c, u = t["counts_end"], t["untied_counts"]
    decided = f", {len(t['history'])} decisions" if t["history"] else ""
    return [f"tying         {t['policy']}: {t['final_description']}{decided}; unique parameters "
            f"{c['unique']:,} of {u['unique']:,} untied ({c['unique'] / u['unique']:.1%}), "
            f"trainable {c['trainable']:,}"]


def _subnetwork_lines(sub: dict | None) -> list[str]:
    if not sub:
        return []
    same = ", ".join(f"{_fmt(v, '.2%')} at {t}" for t, v in sub["identical_share"].items())
    inside = ", ".join(f"{_fmt(v, '.2%')} at {t}" for t, v in sub["identical_share_in_mask"].items())
    ref = sub.get("reference_accuracy")
    return [f"subnetwork    {sub['trainable_share_kept']:.2%} of the trainable entries could move; "
            f"entries identical to {sub['reference']}: {same} (within the mask: {inside})"
            + (f"; its accuracy {_fmt(ref)}" if ref is not None else "")]


def _check_resume_alone(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.config:
        raise LayerwiseError("--resume continues a run with its own config.yaml: drop --config")
    from dataclasses import fields

    changed = [f.name.replace("_", "-") for cls in (ModelConfig, TrainConfig) for f in fields(cls)
               if hasattr(args, f.name) and getattr(args, f.name) != parser.get_default(f.name)]
    if changed:
        raise LayerwiseError(f"--resume continues a run with its own config.yaml; drop "
                             f"{', '.join('--' + c for c in changed)} (to change it, start a new "
                             f"run with --config OUT/config.yaml)")


def _dry_run(model_config: ModelConfig, config: TrainConfig) -> int:
    """The resolved configuration and what would train; no weights loaded, nothing written."""
    import yaml

    from layerwise.training.precheck import dry_run, schedule_plan
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.run_dir import config_document

    recipe = TrainRecipe(config, model_config, dry=True)
    recipe.check()
    sys.stdout.write(yaml.safe_dump(config_document(model_config, config), sort_keys=False))
    if getattr(recipe.task, "kind", None) == "dataset":
        _dry_dataset(recipe)
    t = dry_run(config, model_config)
    if t is None:
        sys.stdout.write("# trains: known once the model loads (no meta-device build for it)\n")
    else:
        blocks = "" if config.layers else f", blocks {', '.join(map(str, t.blocks)) or 'none'}"
        sys.stdout.write(f"# trains {t.description}: {t.trainable_params:,} of {t.total_params:,} "
                         f"parameters ({100 * t.share:.2f}%){blocks}\n")
    _dry_tying(config, model_config)
    if config.task == "code":
        from layerwise.tasks.sandbox import jail_status
        sys.stdout.write(f"# untrusted code runs in: {jail_status()}\n")
    plan = schedule_plan(config, model_config)
    if plan is not None:
        phases = plan.phases()
        sys.stdout.write(f"# schedule {config.schedule}: {len(phases)} phase"
                         f"{'s' if len(phases) > 1 else ''} (--park {config.park})\n")
        for ph in phases[:12]:
            sys.stdout.write(f"#   steps {ph['from']}-{ph['to']}: blocks "
                             f"{', '.join(map(str, ph['blocks']))}\n")
        if len(phases) > 12:
            sys.stdout.write(f"#   ... {len(phases) - 12} more (all in metrics.json once it runs)\n")
    return 0


def _dry_dataset(recipe) -> None:
    """--dataset: its type, splits, S, truncation, and the first example as the model sees it."""
    task, data = recipe.task, recipe.result.data or {}
    sys.stdout.write(f"# data {task.path}: {task.detected.describe()}; {data.get('train_rows')} "
                     f"train / {data.get('eval_rows')} held-out rows; S = {task.primary}\n")
    if data.get("truncated"):
        sys.stdout.write(f"# {data['truncated']} of {data['rows']} training rows are longer than "
                         f"--max-length {recipe.config.max_length} and will be truncated\n")
    for line in task.first_example(recipe.method.name == "sft", recipe.config.seed):
        sys.stdout.write(f"# | {line}\n")


def _dry_tying(config: TrainConfig, model_config: ModelConfig) -> None:
    """The starting tying map and what it saves, on the meta-device model."""
    if config.tying == "none":
        return
    from layerwise.models.arch import discover_layers
    from layerwise.models.tying import describe_map
    from layerwise.training.precheck import meta_model
    from layerwise.training.tying import initial_sources, parse_tying

    model = meta_model(model_config.model, model_config.trust_remote_code, model_config.tokenizer)
    if model is None:
        return
    layers = discover_layers(model)
    start = initial_sources(parse_tying(config.tying), layers.num_blocks)
    per_block = [sum(p.numel() for p in b.parameters()) for b in layers.blocks]
    untied = sum(p.numel() for p in model.parameters())  # meta tensors: no storage to compare
    saved = sum(per_block[i] for i, j in enumerate(start) if i != j)
    sys.stdout.write(f"# tying {config.tying}: starts {describe_map(start)}; "
                     f"{untied - saved:,} of {untied:,} unique parameters\n")


def run(args: argparse.Namespace) -> int:
    from layerwise.training.recipe import TrainRecipe
    from layerwise.training.run_dir import default_out, record_invalid

    if args.resume:
        _check_resume_alone(args, args._parser)
        from layerwise.training.runner import resume

        result = resume(args.resume, quiet=args.quiet)
        out = args.resume
    else:
        try:
            model_config, config = configs_from_args(args)
        except LayerwiseError as exc:
            record_invalid(args.out, str(exc))
            raise
        if args.dry_run:
            return _dry_run(model_config, config)
        chosen = config.out is not None
        if not chosen:
            config.out = default_out(config.method)
        out = config.out
        result = TrainRecipe(config, model_config, out_chosen=chosen).run()
    from layerwise.training.recipe import is_main_process

    if not is_main_process():  # under a multi-process launch the main process reports
        return INTERRUPTED if result.status == "interrupted" else 0 if result.ok else 2
    if result.status == "interrupted":
        print(f"layerwise: {result.failure}; "
              + (f"checkpoint {result.checkpoint}; resume with: layerwise train --resume {out}"
                 if result.checkpoint else "nothing to resume"), file=sys.stderr)
        return INTERRUPTED
    sys.stdout.write("\n".join(summary_lines(result)) + "\n")
    sys.stdout.write(f"run directory {out}\n")
    if result.status != "completed":
        raise LayerwiseError(f"training failed: {result.failure}; the last good weights are in "
                             f"{out}/model")
    return 0
