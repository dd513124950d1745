"""`train()`: one training run through the recipe (training/recipe.py), as a single call.

Kept as the library's one-call entry point (the CLI, sweeps and the Python facade call it):
`train(config, "tiny:llama")` loads the model, runs setup -> build trainer -> fit -> score ->
save, and returns the typed `RunResult` (also written to `config.out/metrics.json`).
"""

from __future__ import annotations

from layerwise.models.loading import LoadedModel
from layerwise.training.config import ModelConfig, TrainConfig
from layerwise.training.recipe import EVAL_SEED, Scored, TrainRecipe, score_base, score_model
from layerwise.training.result import RunResult, Scores

__all__ = ["EVAL_SEED", "Scored", "TrainRecipe", "score_base", "score_model", "train", "resume"]


def train(config: TrainConfig, model: str | ModelConfig | None = None, *,
          extra_callbacks: list | None = None, loaded: LoadedModel | None = None,
          base: Scores | None = None, out_chosen: bool = True) -> RunResult:
    """Train as `config` says, on `model` (a --model spec or a ModelConfig), scored before and after.

    `loaded` (a model the caller already holds, trained in place) and `base` (the base model's
    scores from `score_base`) let a sweep load once and score the base once for many runs.
    """
    model_config = model if isinstance(model, ModelConfig) else ModelConfig(model=model)
    recipe = TrainRecipe(config, model_config, loaded=loaded, base=base,
                         extra_callbacks=list(extra_callbacks or []), out_chosen=out_chosen)
    return recipe.run()


def resume(out: str, *, extra_callbacks: list | None = None, quiet: bool = False) -> RunResult:
    """Continue the interrupted (or killed) run in `out` from its newest complete checkpoint."""
    from layerwise.training.run_dir import CONFIG_FILE, read_config_file
    from layerwise.training.configfile import configs_from_document

    from pathlib import Path

    from layerwise.errors import LayerwiseError

    if not Path(out).exists():
        raise LayerwiseError(f"--resume {out} does not exist (give the --out of the run to resume)")
    if not (Path(out) / CONFIG_FILE).is_file():
        raise LayerwiseError(f"--resume {out}: no {CONFIG_FILE} there (not a `layerwise train` "
                             "run directory)")
    model_config, config = configs_from_document(read_config_file(Path(out) / CONFIG_FILE),
                                                 f"{out}/{CONFIG_FILE}")
    config.out = out
    config.progress = not quiet
    recipe = TrainRecipe(config, model_config, extra_callbacks=list(extra_callbacks or []),
                         resume=True)
    return recipe.run()
