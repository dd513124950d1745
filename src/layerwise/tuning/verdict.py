"""What a tune found, said as a verdict: the chosen blocks against every baseline run, with the
evaluation's noise, and what each costs per step.

Every run of a tune is scored on the same held-out items (the eval seed is fixed), so the
comparison is paired: per item, the chosen run's score minus the baseline's, and a 95% percentile
bootstrap interval of the mean difference (2,000 resamples of the items, seed 0). An accuracy
also gets its own Wilson 95% interval. The verdict of a pair:

- "beat": the interval of the difference lies above 0 (the other run's way: "lost to");
- "matched": it contains 0 — the evaluation cannot tell the two apart, whatever the means say.

Per-item scores come from each run's `eval_final.jsonl` (keyed by item id); a run without it is
compared by its means only, and says so.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

BOOTSTRAP = 2000
Z95 = 1.959964


def wilson(successes: float, n: int) -> tuple[float, float] | None:
    """Wilson 95% interval of a proportion (None without items)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def item_scores(run_dir: str | Path) -> dict[str, float] | None:
    """{item id: score} of a run's final evaluation, or None when it kept no per-item records."""
    path = Path(run_dir) / "eval_final.jsonl"
    if not path.is_file():
        return None
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("score") is not None:
                out[str(rec.get("id"))] = float(rec["score"])
    return out or None


def paired_interval(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, float, int]:
    """(mean of a - b, 2.5th and 97.5th percentile of its bootstrap, items) over shared items."""
    ids = sorted(set(a) & set(b))
    diffs = [a[i] - b[i] for i in ids]
    n = len(diffs)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    rng = random.Random(0)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOTSTRAP))
    return sum(diffs) / n, means[int(0.025 * BOOTSTRAP)], means[int(0.975 * BOOTSTRAP) - 1], n


@dataclass
class Comparison:
    baseline: str
    choice_score: float | None
    baseline_score: float | None
    difference: float | None  # choice - baseline
    low: float | None  # the difference's 95% interval
    high: float | None
    items: int
    outcome: str  # "beat" | "matched" | "lost to" | "not compared"
    choice_step_s: float | None
    baseline_step_s: float | None

    def sentence(self) -> str:
        if self.outcome == "not compared":
            return f"the choice was not compared with {self.baseline} (a run did not complete)"
        scores = f"{_r(self.choice_score)} against {_r(self.baseline_score)}"
        interval = (f", difference {self.difference:+.3f} (95% CI {self.low:+.3f} to "
                    f"{self.high:+.3f}, {self.items} paired items)"
                    if self.low is not None else " (means only: no per-item records)")
        step = ""
        if self.choice_step_s and self.baseline_step_s:
            step = (f"; step {self.choice_step_s:.2f} s against {self.baseline_step_s:.2f} s "
                    f"({self.choice_step_s / self.baseline_step_s:.2f}x)")
        verb = {"beat": f"the choice beat {self.baseline}",
                "lost to": f"{self.baseline} beat the choice",
                "matched": (f"{self.baseline} matched the choice" if (self.difference or 0) <= 0
                            else f"the choice matched {self.baseline}")}[self.outcome]
        return f"{verb}: {scores}{interval}{step}"


def _r(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def compare_runs(choice, baseline, choice_scores: dict[str, float] | None = None) -> Comparison:
    """`choice` and `baseline`: tune RunSummary objects (their directories hold the runs);
    `choice_scores`: the choice's per-item scores, when the caller has read them already."""
    if choice is None or baseline is None or choice.status != "completed" or \
            baseline.status != "completed":
        return Comparison(getattr(baseline, "label", "?"), None, None, None, None, None, 0,
                          "not compared", None, None)
    a = choice_scores if choice_scores is not None else item_scores(choice.directory)
    b = item_scores(baseline.directory)
    if a and b:
        diff, low, high, n = paired_interval(a, b)
        outcome = "beat" if low > 0 else "lost to" if high < 0 else "matched"
    else:
        diff = (choice.score_after - baseline.score_after
                if None not in (choice.score_after, baseline.score_after) else None)
        low = high = None
        n = 0
        outcome = "matched" if diff is None or diff == 0 else ("beat" if diff > 0 else "lost to")
    return Comparison(baseline.label, choice.score_after, baseline.score_after, diff, low, high,
                      n, outcome, choice.median_step_s, baseline.median_step_s)


def score_interval(scores: dict[str, float] | None) -> tuple[float, float] | None:
    """The Wilson interval of 0/1 per-item scores (None for graded scores or without records)."""
    if not scores or any(s not in (0.0, 1.0) for s in scores.values()):
        return None
    return wilson(sum(scores.values()), len(scores))


def verdict(result) -> dict:
    """{"headline": one sentence, "comparisons": [...], "choice_interval": [lo, hi] | None}."""
    run = result.run
    scores = item_scores(run.directory) if run is not None else None  # read once
    comparisons = [compare_runs(run, b, scores) for b in result.baselines.values()]
    interval = score_interval(scores)
    scored = (f"the choice scored {_r(run.score_after if run else None)}"
              + (f" (95% CI {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""))
    if run is None or run.status != "completed":
        headline = "the chosen run did not complete: no verdict"
    elif not comparisons:
        headline = (f"{scored}, from {_r(run.score_before)} before; no baseline was run to "
                    "compare with (--baseline mid,full,lora)")
    else:
        lost = [c.baseline for c in comparisons if c.outcome == "lost to"]
        tied = [c.baseline for c in comparisons if c.outcome == "matched"]
        won = [c.baseline for c in comparisons if c.outcome == "beat"]
        if lost:
            headline = (f"the choice LOST: {', '.join(lost)} beat it beyond the evaluation's "
                        f"noise; {scored}")
        elif won and not tied:
            headline = f"the choice beat every baseline ({', '.join(won)}) beyond the noise; {scored}"
        else:
            headline = ("the evaluation cannot tell the choice from " + ", ".join(tied)
                        + (f"; it beat {', '.join(won)}" if won else "") + f"; {scored}")
    return {"headline": headline, "choice_interval": list(interval) if interval else None,
            "comparisons": [c.__dict__ | {"sentence": c.sentence()} for c in comparisons],
            "cost": cost_sentence(result)}


def cost_sentence(result) -> str | None:
    """The estimate's seconds against the chosen run's training, said plainly when it cost more."""
    est = getattr(result, "estimate_seconds", None)
    run = result.run
    if not est or run is None or not run.train_seconds:
        return None
    ratio = est / run.train_seconds
    return (f"the estimate took {est:.0f} s, the chosen run's training {run.train_seconds:.0f} s"
            + (f": the estimate cost {ratio:.1f}x the training it served (fewer "
               "--estimate-batches or --estimate-prompts, or more --steps, change that)"
               if ratio > 1 else f" ({ratio:.2f}x)"))
