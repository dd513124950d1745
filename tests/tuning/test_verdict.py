"""tune's verdict (tuning/verdict.py): paired intervals over the same held-out items, and what the
headline says when a baseline matched or beat the choice."""

from __future__ import annotations

import json
import math

import pytest

from layerwise.tuning.recipe import RunSummary
from layerwise.tuning.choose import step_cost
from layerwise.tuning.verdict import compare_runs, paired_interval, verdict, wilson


def _run(tmp_path, label, scores, step=1.0):
    d = tmp_path / label
    d.mkdir()
    (d / "eval_final.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "score": s}) + "\n" for i, s in enumerate(scores)))
    mean = sum(scores) / len(scores)
    return RunSummary(label=label, directory=str(d), status="completed", trains="", blocks=[1],
                      trainable_params=1, score_before=0.3, score_after=mean, gain=mean - 0.3,
                      forgetting=None, median_step_s=step, train_seconds=None,
                      optimizer_state_mib=0.0)


class _Result:
    def __init__(self, run, **baselines):
        self.run, self.baselines = run, baselines


def test_wilson_matches_its_formula_and_stays_in_0_1():
    lo, hi = wilson(45, 60)  # 0.75 on 60 items
    assert lo == pytest.approx(0.6277, abs=1e-4) and hi == pytest.approx(0.8422, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 0) is None


def test_the_paired_interval_is_over_shared_items_and_contains_the_mean():
    a = {f"q{i}": float(i % 2) for i in range(60)}
    b = {f"q{i}": 0.0 for i in range(50)}  # ten items the baseline never scored
    mean, lo, hi, n = paired_interval(a, b)
    assert n == 50 and mean == pytest.approx(0.5) and lo < mean < hi
    assert paired_interval(a, a)[1:3] == (0.0, 0.0)
    assert math.isnan(paired_interval(a, {})[0])


def test_a_baseline_that_beats_the_choice_is_said_first(tmp_path):
    choice = _run(tmp_path, "tuned", [1.0] * 30 + [0.0] * 30, step=1.37)  # 0.500
    mid = _run(tmp_path, "mid", [1.0] * 55 + [0.0] * 5, step=0.51)  # 0.917
    full = _run(tmp_path, "full", [0.0] * 5 + [1.0] * 31 + [0.0] * 24)  # 0.517: noise
    v = verdict(_Result(choice, mid=mid, full=full))
    assert v["headline"].startswith("the choice LOST: mid beat it beyond the evaluation's noise; "
                                    "the choice scored 0.500 (95% CI 0.377 to 0.623)")
    by = {c["baseline"]: c for c in v["comparisons"]}
    assert by["mid"]["outcome"] == "lost to" and by["mid"]["high"] < 0
    assert by["full"]["outcome"] == "matched" and by["full"]["low"] < 0 < by["full"]["high"]
    assert by["mid"]["sentence"].startswith("mid beat the choice: 0.500 against 0.917, "
                                            "difference -0.417 (95% CI")
    assert by["mid"]["sentence"].endswith("step 1.37 s against 0.51 s (2.69x)")


def test_a_choice_that_beats_every_baseline_and_a_run_without_records(tmp_path):
    choice = _run(tmp_path, "tuned", [1.0] * 50 + [0.0] * 10)
    mid = _run(tmp_path, "mid", [1.0] * 20 + [0.0] * 40)
    assert verdict(_Result(choice, mid=mid))["headline"].startswith(
        "the choice beat every baseline (mid) beyond the noise")
    (tmp_path / "mid" / "eval_final.jsonl").unlink()
    c = compare_runs(choice, mid)
    assert c.low is None and c.outcome == "beat" and "means only" in c.sentence()


def test_step_cost_follows_the_shallowest_trained_block():
    assert step_cost(list(range(30)), 30) == pytest.approx(1.0)
    assert step_cost([29], 30) == pytest.approx((30 + 2) / 90)
    assert step_cost([0, 1, 2], 30) == pytest.approx(1.0)
    assert step_cost([13, 14, 15], 30) == pytest.approx((30 + 34) / 90)


def test_the_estimate_is_sized_below_the_training_and_its_cost_is_said(tmp_path):
    from layerwise.tuning.recipe import TuneConfig

    def cfg(**kw):
        return TuneConfig(model=None, task="arithmetic", method="sft", budget="3", out="x", **kw)

    assert cfg(train={"steps": 10, "batch_size": 8}).batches() == 1  # 80 examples: 1 x 8
    assert cfg(train={"steps": 10, "batch_size": 16}).batches() == 3  # 160 // 48
    assert cfg(train={"steps": 400, "batch_size": 16}).batches() == 4  # never more than 4
    assert cfg(train={"steps": 3}, estimator="adam-snr").batches() == 2  # its minimum
    assert cfg(estimate_batches=4, train={"steps": 3}).batches() == 4  # as given

    choice = _run(tmp_path, "tuned", [1.0] * 6)
    choice.train_seconds = 14.0
    result = _Result(choice)
    result.estimate_seconds = 204.0
    assert verdict(result)["cost"] == (
        "the estimate took 204 s, the chosen run's training 14 s: the estimate cost 14.6x the "
        "training it served (fewer --estimate-batches or --estimate-prompts, or more --steps, "
        "change that)")
    result.estimate_seconds = 7.0
    assert verdict(result)["cost"].endswith("(0.50x)")
