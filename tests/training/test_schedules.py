"""Block schedules (--schedule, --park): real tiny models, real optimizers, real TRL trainers."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from layerwise.errors import LayerwiseError
from layerwise.models import load_model
from layerwise.training.config import TrainConfig
from layerwise.training.runner import train
from layerwise.training.schedules import make_plan
from tests.cli.test_cli import _one_line_error, run

QUICK = dict(batch_size=4, num_generations=2, n_train=16, eval_n=2, eval_batch_size=8,
             general_seqs=1, general_seq_len=32, progress=False, lr=1e-2)


def _block(model, i):
    return {n: p for n, p in model.named_parameters() if n.startswith(f"model.layers.{i}.")}


class StateProbe(TrainerCallback):
    """The optimizer state of one tensor of block 1 at the end of every step."""

    def __init__(self, optimizer_of, name="model.layers.1.mlp.down_proj.weight"):
        self.optimizer_of, self.name, self.seen = optimizer_of, name, []

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        p = dict(model.named_parameters())[self.name]
        st = self.optimizer_of().state.get(p)
        self.seen.append(None if st is None else {k: v.detach().clone() for k, v in st.items()})


def _run(schedule, park="keep", method="sft", steps=6, layers="1-3", task="arithmetic", **kw):
    holder = {}
    probe = StateProbe(lambda: holder["opt"])

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **k):
            holder["opt"] = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer

    config = TrainConfig(task=task, method=method, layers=layers, steps=steps, schedule=schedule,
                         park=park, **{**QUICK, **kw})
    return train(config, "tiny:llama", extra_callbacks=[Grab(), probe]), probe


def test_a_block_never_active_stays_bit_identical():
    before = load_model("tiny:llama", seed=0).model
    result, _ = _run("phases:1@3;2@3")
    after = result.model_object
    for i, changed in ((0, False), (1, True), (2, True), (3, False)):
        b0, b1 = _block(before, i), _block(after, i)
        same = all(torch.equal(b0[n], b1[n]) for n in b0)
        assert same != changed, i
    assert result.schedule["phases"] == [{"from": 1, "to": 3, "blocks": [1]},
                                         {"from": 4, "to": 6, "blocks": [2]}]


@pytest.mark.parametrize("park", ["keep", "cpu"])
def test_parked_optimizer_state_is_unchanged_and_used_again(park):
    # block 1 trains at steps 1-2, is parked at 3-4, trains again at 5-6
    _, probe = _run("phases:1@2;2@2;1@2", park=park)
    s = probe.seen
    assert s[1]["step"].item() == 2
    for parked in (s[2], s[3]):
        assert all(torch.equal(parked[k].cpu(), s[1][k].cpu()) for k in s[1])  # step, exp_avg, exp_avg_sq
    assert s[4]["step"].item() == 3 and s[5]["step"].item() == 4  # it goes on from where it was
    assert not torch.equal(s[4]["exp_avg"], s[3]["exp_avg"].to(s[4]["exp_avg"].device))


def test_drop_starts_a_returning_block_afresh():
    _, probe = _run("phases:1@2;2@2;1@2", park="drop")
    s = probe.seen
    assert s[1]["step"].item() == 2 and s[2] is None and s[3] is None
    assert s[4]["step"].item() == 1  # LISA's behaviour: the state was thrown away


def test_recorded_active_sets_are_the_policys_for_the_seed():
    result, _ = _run("lisa:2@2", seed=3, layers="0-3")
    plan = make_plan("lisa:2@2", (0, 1, 2, 3), 6, 3)
    assert result.schedule["phases"] == plan.phases() and result.schedule["steps_taken"] == 6
    assert make_plan("lisa:2@2", (0, 1, 2, 3), 6, 4).phases() != plan.phases()
    assert all(len(p["blocks"]) == 2 for p in plan.phases())


def _scores_file(tmp_path, scores):
    path = tmp_path / "importance.json"
    path.write_text(json.dumps({"layers": [{"index": i, "score": v} for i, v in scores.items()]}))
    return path


def test_sample_follows_the_importance(tmp_path):
    path = _scores_file(tmp_path, {0: 0.0, 1: 0.1, 2: 5.0, 3: 4.0})
    plan = make_plan(f"sample:1@1@{path}:score@0.2", (0, 1, 2, 3), 400, 0)
    counts = {b: sum(b in a for a in plan.per_step) for b in range(4)}
    assert counts[2] > counts[3] > counts[1] and counts[0] < 40
    flat = make_plan(f"sample:1@1@{path}:score@1000", (0, 1, 2, 3), 400, 0)
    assert min(sum(b in a for a in flat.per_step) for b in range(4)) > 60  # T large: uniform


@pytest.mark.parametrize("method, schedule", [("grpo", "lisa:1@2"), ("sft", "sample"),
                                              ("grpo", "sample")])
def test_sft_and_rl_run_under_lisa_and_sample(tmp_path, toy_task, method, schedule):
    if schedule == "sample":
        schedule = f"sample:2@2@{_scores_file(tmp_path, {0: 1.0, 1: 2.0, 2: 3.0, 3: 0.5})}:score"
    result, _ = _run(schedule, method=method, layers="0-3", task=toy_task, steps=4)
    assert result.status == "completed" and result.steps_completed == 4
    assert result.schedule["steps_taken"] == 4


FAST = ["--model", "tiny:llama", "--steps", "4", "--batch-size", "4", "--n-train", "8",
        "--eval-n", "2", "-q"]


@pytest.mark.parametrize("extra, pattern", [
    (["--layers", "1-2", "--schedule", "lisa:3@2"], r"G=3 is more than the 2 blocks of --layers"),
    (["--layers", "1-2", "--schedule", "lisa:1@0"], r"K must be >= 1"),
    (["--layers", "1-2", "--schedule", "lisa:1"], r"expected G@K"),
    (["--full", "--schedule", "lisa:1@2"], r"with --full or --lora it means nothing"),
    (["--layers", "1-2", "--schedule", "phases:1@2;3@2"], r"block 3 outside --layers"),
    (["--layers", "1-2", "--schedule", "phases:1@2;2@1"], r"cover 3 steps, --steps is 4"),
    (["--layers", "1-2", "--schedule", "waves:1"], r"unknown --schedule 'waves:1'"),
    (["--layers", "1-2", "--schedule", "sample:1@1@/nope.json"], r"/nope.json does not exist"),
    (["--layers", "1-2", "--park", "attic"], r"invalid choice: 'attic'"),
])
def test_bad_schedules_are_refused_before_loading(capsys, tmp_path, extra, pattern):
    code, out, err = run(capsys, "train", *FAST, *extra, "--out", str(tmp_path / "r"))
    _one_line_error(code, out, err, pattern)


def test_a_scores_file_from_another_model_is_refused(capsys, tmp_path):
    path = _scores_file(tmp_path, {i: float(i) for i in range(2)})  # blocks 0-1 only
    code, out, err = run(capsys, "train", *FAST, "--layers", "0-3", "--schedule",
                         f"sample:1@1@{path}:score", "--out", str(tmp_path / "r"))
    _one_line_error(code, out, err, r"no finite score for blocks 2, 3 .*another model")
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "invalid"


def test_schedule_raster_is_drawn(capsys, tmp_path):
    code, out, err = run(capsys, "train", *FAST, "--layers", "0-3", "--schedule", "lisa:2@1",
                         "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "schedule.png").stat().st_size > 1000


def test_growth_phases_follow_importance(tmp_path):
    from layerwise.training.schedules import growth_phases

    scores = {0: 9.0, 1: 1.0, 2: -0.5, 3: 5.0, 4: 2.0, 5: 0.5, 6: 8.0, 7: 0.1, 8: 3.0}
    phases = growth_phases(scores, tuple(range(9)), 4)
    assert phases[0] == [0, 3, 6]  # the critical core: the top third of the non-anti blocks
    assert all(set(phases[0]) <= set(p) for p in phases)  # the core trains in every phase
    assert all(set(a) <= set(b) for a, b in zip(phases, phases[1:]))  # growing
    assert phases[-1] == [0, 1, 3, 4, 5, 6, 7, 8]  # everything but the anti-layer 2, at the end
    assert 7 not in phases[2] and 8 in phases[1]  # more important blocks join earlier
    path = _scores_file(tmp_path, scores)
    plan = make_plan(f"growth@{path}:score@4", tuple(range(9)), 10, 0)
    assert [len(p) for p in plan.per_step] == [3, 3, 5, 5, 7, 7, 8, 8, 8, 8]
    assert plan.phases()[0]["blocks"] == [0, 3, 6]


def test_growth_trains_end_to_end(tmp_path, capsys):
    path = _scores_file(tmp_path, {0: 3.0, 1: -1.0, 2: 2.0, 3: 1.0})
    code, out, err = run(capsys, "train", *FAST, "--layers", "all", "--schedule",
                         f"growth@{path}:score@2", "--out", str(tmp_path / "r"))
    assert code == 0, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["schedule"]["phases"] == [{"from": 1, "to": 2, "blocks": [0]},
                                       {"from": 3, "to": 4, "blocks": [0, 2, 3]}]
    before, after = load_model("tiny:llama", seed=0).model, None
    from safetensors.torch import load_file

    after = load_file(tmp_path / "r" / "model" / "model.safetensors")
    assert all(torch.equal(after[n], p) for n, p in _block(before, 1).items())  # the anti-layer


def test_growth_anti_layers_skip_or_last(tmp_path):
    from layerwise.training.schedules import growth_phases

    scores = {0: 3.0, 1: -0.2, 2: 1.0, 3: -0.1, 4: 2.0, 5: 0.5}
    skip = growth_phases(scores, tuple(range(6)), 3)
    last = growth_phases(scores, tuple(range(6)), 3, "last")
    assert skip[:-1] == last[:-1] and skip[0] == [0, 4]
    assert 1 not in skip[-1] and 3 not in skip[-1]
    assert last[-1] == [0, 1, 2, 3, 4, 5]
    path = _scores_file(tmp_path, scores)
    plan = make_plan(f"growth@{path}:score@3@last", tuple(range(6)), 6, 0)
    assert plan.phases()[-1]["blocks"] == [0, 1, 2, 3, 4, 5]
    assert make_plan(f"growth@{path}:score@last", tuple(range(6)), 8, 0).phases()[0]["to"] == 2
    with pytest.raises(LayerwiseError, match="neither P .* nor skip/last"):
        make_plan(f"growth@{path}:score@sometimes", tuple(range(6)), 6, 0)
    (tmp_path / "n").mkdir()
    allneg = _scores_file(tmp_path / "n", {0: -1.0, 1: -2.0})
    with pytest.raises(LayerwiseError, match="all anti-layers"):
        make_plan(f"growth@{allneg}:score@2@last", (0, 1), 4, 0)


def test_scores_file_from_another_model_is_refused(tmp_path, capsys):
    import json as _json

    diag = tmp_path / "diagnostics.json"
    diag.write_text(_json.dumps({"num_blocks": 30, "layers": [{"index": i, "removal_delta_pct": 1.0 + i}
                                                               for i in range(30)]}))
    with pytest.raises(LayerwiseError, match="30 blocks; this model has 4: a file from another model"):
        make_plan(f"sample:1@1@{diag}:removal_delta_pct", (0, 1, 2, 3), 4, 0, num_blocks=4)
    code, out, err = run(capsys, "train", *FAST, "--layers", "all", "--schedule",
                         f"growth@{diag}:removal_delta_pct", "--out", str(tmp_path / "r"))
    _one_line_error(code, out, err, r"30 blocks; this model has 4")
    wide = _scores_file(tmp_path, {i: 1.0 for i in range(8)})  # no declared count, block 7 scored
    with pytest.raises(LayerwiseError, match="scores block 4 but the model has 4 blocks"):
        make_plan(f"growth@{wide}:score", (0, 1, 2, 3), 4, 0, num_blocks=4)


def test_dry_run_prints_the_schedule(tmp_path, capsys):
    code, out, err = run(capsys, "train", *FAST, "--layers", "all", "--schedule", "lisa:1@2",
                         "--steps", "4", "--dry-run", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "# schedule lisa:1@2: " in out
    lines = [ln for ln in out.splitlines() if ln.startswith("#   steps")]
    assert lines[0].startswith("#   steps 1-") and "-4: blocks " in lines[-1]
    # the printed phases are the ones the run will record (same seed, same plan)
    plan = make_plan("lisa:1@2", (0, 1, 2, 3), 4, 0)
    assert len(lines) == len(plan.phases())
    assert all(f"blocks {b}" in ln for ln, b in zip(lines, (p["blocks"][0] for p in plan.phases())))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("method", ["dr_grpo", "dapo", "rloo", "dpo", "kto"])
def test_every_method_follows_the_schedule(toy_task, method):
    # blocks 1 and 2 take turns (phases), blocks 0 and 3 are in --layers but never scheduled:
    # they must come out bit-identical, and the optimizer must hold no state for them
    before = load_model("tiny:llama", seed=0).model
    result, _ = _run("phases:1@2;2@2", method=method, layers="0-3", task=toy_task, steps=4)
    assert result.status == "completed" and result.steps_completed == 4
    assert result.schedule["phases"] == [{"from": 1, "to": 2, "blocks": [1]},
                                         {"from": 3, "to": 4, "blocks": [2]}]
    after = result.model_object
    for i, trains in ((0, False), (1, True), (2, True), (3, False)):
        b0, b1 = _block(before, i), _block(after, i)
        assert all(torch.equal(b0[n], b1[n]) for n in b0) != trains, (method, i)
    opt = result.trainer.optimizer
    held = {id(p) for p in opt.state}
    for i, has_state in ((0, False), (1, True), (2, True), (3, False)):
        assert any(id(p) in held for p in _block(after, i).values()) == has_state, (method, i)
