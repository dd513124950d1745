"""`layerwise tune` on tiny models: the choice policy, the budget, and the whole path end to end
(real estimates, real training, a real compare), for SFT and GRPO, resumed without retraining."""

from __future__ import annotations

import json
import re

import pytest

from layerwise.errors import LayerwiseError
from layerwise.tuning import choose, parse_budget
from tests.cli.test_cli import run


@pytest.mark.parametrize("text, k", [("1", 1), ("4", 4), ("50%", 2), ("10%", 1), ("100%", 4)])
def test_budget_in_blocks_or_percent(text, k):
    assert parse_budget(text, 4) == k


@pytest.mark.parametrize("text, message", [("0", "at least one"), ("5", "has 4 blocks"),
                                           ("0%", r"\(0, 100\]"), ("101%", r"\(0, 100\]"),
                                           ("-1", "expected a block count"), ("x", "expected")])
def test_bad_budgets(text, message):
    with pytest.raises(LayerwiseError, match=message):
        parse_budget(text, 4)


def test_flat_estimates_fall_back_to_the_middle():
    choice = choose({"adam-gain": [1.0] * 8}, 2, "adam-gain")
    assert choice.policy == "mid-K" and choice.blocks == [3, 4] and "flat" in choice.reason


def test_disagreeing_estimators_fall_back_to_the_middle():
    choice = choose({"a": [1, 2, 3, 4, 5, 6], "b": [6, 5, 4, 3, 2, 1]}, 2, "a")
    assert choice.policy == "mid-K" and choice.blocks == [2, 3]
    assert choice.agreement == pytest.approx(-1.0) and "disagree" in choice.reason


def test_contiguous_top_k_is_top_k():
    choice = choose({"a": [0, 1, 9, 8, 1, 0], "b": [0, 1, 8, 9, 1, 0]}, 2, "a")
    assert choice.policy == "top-K" and choice.blocks == [2, 3] and "contiguous" in choice.reason


def test_a_window_nearly_as_good_as_top_k_wins():
    # top-2 = blocks 0 and 4 (10 + 10); the window 3-4 keeps 9.5 + 10 = 19.5 of 20 (97.5%)
    scores = [10, 0.1, 0.1, 9.5, 10, 0.1]
    choice = choose({"a": scores, "b": scores}, 2, "a", max_step_cost=1)
    assert choice.policy == "window" and choice.blocks == [3, 4]
    assert "down to block 3" in choice.reason


def test_the_choice_says_how_much_of_the_estimate_is_depth():
    falling = choose({"a": [6, 5, 4, 3, 2, 1], "b": [6, 5, 4, 3, 2, 1]}, 2, "a")
    assert falling.depth_spearman == pytest.approx(1.0)  # the first block first: depth alone
    hump = choose({"a": [1, 3, 6, 5, 2, 0], "b": [1, 3, 6, 5, 2, 0]}, 2, "a")
    assert hump.blocks == [2, 3] and abs(hump.depth_spearman) < 0.9
    assert choose({"a": [1.0] * 4}, 1, "a").depth_spearman is None  # flat: no ranking at all


def test_scattered_importance_is_top_k():
    scores = [10, 0.1, 0.1, 0.1, 10, 0.1]
    choice = choose({"a": scores, "b": scores}, 2, "a", max_step_cost=1)
    assert choice.policy == "top-K" and choice.blocks == [0, 4]
    assert choice.candidates["window"]["share"] < 0.9 * choice.candidates["top-K"]["share"]


def test_tune_sft_end_to_end_and_resumed_without_retraining(capsys, tmp_path):
    out = tmp_path / "tune"
    argv = ("tune", "--model", "tiny:llama", "--task", "arithmetic", "--method", "sft",
            "--budget", "50%", "--steps", "3", "--n-train", "8", "--eval-n", "4",
            "--batch-size", "4", "--baseline", "mid", "--out", str(out), "-q")
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    doc = json.loads((out / "tune.json").read_text())
    assert doc["status"] == "completed" and doc["k"] == 2 and doc["num_blocks"] == 4
    assert set(doc["estimates"]) == {"adam-gain", "gradient"}
    assert all(v > 0 for v in doc["estimates"]["gradient"])  # a real backward pass
    blocks = doc["choice"]["blocks"]
    assert len(blocks) == 2 and doc["choice"]["policy"] in ("top-K", "window", "mid-K")
    assert doc["run"]["blocks"] == blocks and doc["run"]["status"] == "completed"
    verified = doc["verification"]
    assert verified["ok"] and verified["changed_outside"] == 0 and verified["changed_inside"] > 0
    assert doc["baselines"]["mid"]["blocks"] == [1, 2]
    assert "Chosen:" in (out / "report.html").read_text() and (out / "estimates.png").is_file()
    assert -1.0 <= doc["choice"]["depth_spearman"] <= 1.0
    assert "Spearman of the estimate with depth" in (out / "report.html").read_text()
    assert f"verified      nothing outside blocks {','.join(map(str, blocks))} changed" in stdout
    # the verdict: the choice against the mid baseline, paired over the same 4 held-out items
    (mid,) = doc["verdict"]["comparisons"]
    assert mid["baseline"] == "mid" and mid["items"] == 4 and mid["outcome"] in (
        "beat", "matched", "lost to") and mid["low"] <= mid["difference"] <= mid["high"]
    assert f"verdict       {doc['verdict']['headline']}" in stdout
    assert "Verdict:</b>" in (out / "report.html").read_text()
    assert all(0 < c["step_cost"] <= 1 for c in doc["choice"]["candidates"].values())
    assert doc["run"]["lr"] > 0 and doc["run"]["model_source"].startswith("tiny:llama")
    assert "lr used by tuned" in (out / "report.html").read_text()
    assert "0.31746031746031744" not in stdout and re.search(r"score \d\.\d{3} -> \d\.\d{3}", stdout)
    stamp = (out / "run" / "metrics.json").stat().st_mtime_ns
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert (out / "run" / "metrics.json").stat().st_mtime_ns == stamp  # not trained again


def test_tune_grpo_end_to_end(capsys, tmp_path, toy_task):
    out = tmp_path / "tune"
    code, _, err = run(capsys, "tune", "--model", "tiny:llama", "--task", toy_task, "--method",
                       "grpo", "--budget", "1", "--steps", "2", "--batch-size", "4",
                       "--num-generations", "2", "--n-train", "8", "--eval-n", "4",
                       "--estimate-prompts", "2", "--estimator", "probe", "--probe-steps", "2",
                       "--out", str(out), "-q")
    doc = json.loads((out / "tune.json").read_text())
    assert doc["run"]["status"] == "completed", err
    assert doc["estimator"] == "probe" and list(doc["estimates"]) == ["probe", "adam-gain"]
    assert len(doc["estimates"]["probe"]) == 4 and doc["settings"]["probe_steps"] == 2
    assert len(doc["choice"]["blocks"]) == 1 and doc["verification"]["changed_outside"] == 0
    assert code == (0 if doc["verification"]["ok"] else 1)


def test_tune_ranks_by_adam_snr_over_several_batches(capsys, tmp_path):
    out = tmp_path / "tune"
    code, _, err = run(capsys, "tune", "--model", "tiny:llama", "--task", "arithmetic",
                       "--budget", "1", "--steps", "1", "--n-train", "4", "--eval-n", "2",
                       "--batch-size", "4", "--estimator", "adam-snr", "--estimate-batches", "3",
                       "--estimate-prompts", "2", "--out", str(out), "-q")
    assert code == 0, err
    doc = json.loads((out / "tune.json").read_text())
    assert doc["estimator"] == "adam-snr" and list(doc["estimates"]) == ["adam-snr", "adam-gain"]
    # sum mu^2/sqrt(mean g^2) <= sum |mu| entrywise (|mu| <= sqrt(mean g^2)), so snr <= gain
    assert all(0 < s <= g * (1 + 1e-6) for s, g in zip(doc["estimates"]["adam-snr"],
                                                      doc["estimates"]["adam-gain"]))


def test_tune_ranks_by_the_profile_of_short_real_runs(capsys, tmp_path):
    out = tmp_path / "tune"
    argv = ("tune", "--model", "tiny:llama", "--task", "arithmetic", "--budget", "1",
            "--steps", "6", "--n-train", "8", "--eval-n", "2", "--batch-size", "4",
            "--estimator", "profile", "--profile-blocks", "2", "--estimate-prompts", "2",
            "--estimate-batches", "1", "--max-step-cost", "1", "--out", str(out), "-q")
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    doc = json.loads((out / "tune.json").read_text())
    assert doc["estimator"] == "profile" and list(doc["estimates"]) == ["profile", "adam-gain"]
    prof = doc["estimates"]["profile"]  # blocks 0 and 3 trained 6 // 3 = 2 steps, in between linear
    assert prof[1] == pytest.approx(prof[0] + (prof[3] - prof[0]) / 3) and prof[0] < 0
    # the choice follows the profile alone: adam-gain is shown, not a veto
    assert doc["choice"]["blocks"] == [0 if prof[0] >= prof[3] else 3]
    assert doc["choice"]["policy"] != "mid-K" and doc["choice"]["agreement"] is not None
    assert doc["settings"]["profile_blocks"] == 2 and doc["settings"]["profile_steps"] is None
    # the same settings resume; another profile size is another tune
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    code, _, err = run(capsys, *argv[:-3], "--profile-blocks", "3", "--out", str(out), "-q")
    assert code == 2 and "holds a tune of other settings" in err and "profile_blocks was 2, now 3" in err


@pytest.mark.parametrize("flags, message", [
    (("--profile-blocks", "1"), "at least 2 blocks"), (("--profile-steps", "1"), "at least 2 steps")])
def test_an_impossible_profile_is_refused_before_loading(capsys, tmp_path, flags, message):
    code, out, err = run(capsys, "tune", "--model", "tiny:llama", "--task", "arithmetic",
                         "--budget", "1", "--estimator", "profile", *flags,
                         "--out", str(tmp_path / "t"), "-q")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t" / "tune.json").exists()


def test_an_estimate_file_ranks_the_blocks(capsys, tmp_path):
    scores = {"layers": [{"index": i, "score": s} for i, s in enumerate([0.1, 0.2, 5.0, 0.3])],
              "num_blocks": 4}
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(scores))
    out = tmp_path / "tune"
    code, _, err = run(capsys, "tune", "--model", "tiny:llama", "--task", "arithmetic",
                       "--budget", "1", "--steps", "1", "--n-train", "4", "--eval-n", "2",
                       "--batch-size", "4", "--estimates", f"{path}:score", "--out", str(out),
                       "-q")
    assert code == 0, err
    doc = json.loads((out / "tune.json").read_text())
    assert doc["estimator"] == "file:score" and doc["choice"]["blocks"] == [2]
    assert doc["estimate_seconds"] is None


def test_a_tune_written_before_a_setting_existed_resumes_at_its_default(tmp_path):
    from layerwise.tasks.registry import get_task
    from layerwise.tuning.recipe import TUNE_FILE, TuneConfig, _check_resume, tune_inputs

    cfg = TuneConfig(model="tiny:llama", task="arithmetic", method="sft", budget="1",
                     out=str(tmp_path))
    task = get_task("arithmetic")
    old = {k: v for k, v in cfg.settings().items() if not k.startswith("profile_")}
    (tmp_path / TUNE_FILE).write_text(json.dumps({"settings": old,
                                                  "inputs": tune_inputs(cfg, task)}))
    assert _check_resume(cfg, task)["settings"] == old  # the missing profile settings: defaults
    changed = TuneConfig(model="tiny:llama", task="arithmetic", method="sft", budget="1",
                         out=str(tmp_path), profile_blocks=3)
    with pytest.raises(LayerwiseError, match="other settings.*profile_blocks was 5, now 3"):
        _check_resume(changed, task)
    # a tune from before inputs were recorded cannot be checked: refused, not trusted
    (tmp_path / TUNE_FILE).write_text(json.dumps({"settings": old}))
    with pytest.raises(LayerwiseError, match="no record of what it read"):
        _check_resume(cfg, task)


def test_a_kept_run_of_another_selection_is_refused(tmp_path):
    """A tune rerun keeps OUT/run only if it trained what the tune trains now."""
    from layerwise import api
    from layerwise.tuning.recipe import TuneConfig, _train

    small = dict(steps=2, n_train=8, eval_n=2, batch_size=4, general_seqs=1, general_seq_len=32)
    run = api.train("tiny:llama", task="arithmetic", layers="1", out=str(tmp_path / "run"),
                    progress=False, **small)
    assert run.status == "completed"
    cfg = TuneConfig(model="tiny:llama", task="arithmetic", method="sft", budget="1",
                     out=str(tmp_path), train=small)
    kept = _train(cfg, tmp_path / "run", {"layers": "1"}, lambda _: None, "tuned")
    assert kept.status == "completed" and kept.trainable.blocks == [1]
    with pytest.raises(LayerwiseError, match=r"run holds a run with layers='1'; this tune now "
                                             r"trains layers='2': use another --out"):
        _train(cfg, tmp_path / "run", {"layers": "2"}, lambda _: None, "tuned")


def test_the_step_cost_bound_keeps_the_choice_off_the_first_blocks():
    from layerwise.tuning.choose import first_eligible, step_cost

    by_depth = [30.0 - b for b in range(30)]  # an estimate that ranks by depth alone
    free = choose({"a": by_depth, "b": by_depth}, 3, "a", max_step_cost=1)
    assert free.blocks == [0, 1, 2]
    bounded = choose({"a": by_depth, "b": by_depth}, 3, "a")  # the default, 0.8
    assert first_eligible(30, 3, 0.8) == 9 and step_cost([9], 30) <= 0.8 < step_cost([8], 30)
    assert bounded.policy == "top-K" and bounded.blocks == [9, 10, 11]
    assert bounded.candidates["top-K, any depth"] == {
        "blocks": [0, 1, 2], "share": free.candidates["top-K"]["share"],
        "excluded_by": "--max-step-cost 0.8"}
    # a bound that leaves fewer than K blocks still leaves K: the deepest ones
    assert choose({"a": by_depth, "b": by_depth}, 3, "a", max_step_cost=0.35).blocks == [27, 28, 29]
