"""`layerwise tune`: pick the blocks to train from cheap estimates, train them, verify."""

from layerwise.tuning.choose import Choice, choose, parse_budget
from layerwise.tuning.recipe import BASELINES, TuneConfig, TuneResult, run_tune

__all__ = ["BASELINES", "Choice", "TuneConfig", "TuneResult", "choose", "parse_budget", "run_tune"]
