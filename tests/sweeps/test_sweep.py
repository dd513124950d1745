"""Sweeps on tiny models: C(k), resume, dedup, a refused foreign store, a kill -9 mid-sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerwise.errors import LayerwiseError
from layerwise.models import discover_layers, load_model
from layerwise.sweeps.contribution import contributions
from layerwise.sweeps.outputs import write_sweep_outputs
from layerwise.sweeps.runner import run_sweep
from layerwise.sweeps.spec import SweepSpec, expand_selections
from layerwise.sweeps.store import open_store

TRAIN = {"steps": 12, "lr": 3e-3, "batch_size": 8, "n_train": 16, "eval_n": 6,
         "general_seqs": 1, "general_seq_len": 32}


def _sweep(task, **kw):
    return SweepSpec(model="tiny:llama", task=task, method="sft",
                     **{"layers": "each", "seeds": (0,), "train": TRAIN, **kw})


def test_complete_sweep_and_resume(toy_task, tmp_path):
    seen = []
    rows = run_sweep(_sweep(toy_task), tmp_path, on_result=lambda run, res: seen.append(run.label))
    assert seen == ["base", "full", "block 0", "block 1", "block 2", "block 3"]
    assert all(r["status"] == "completed" for r in rows)
    s_base, full, table = write_sweep_outputs(_sweep(toy_task), rows, tmp_path)
    assert s_base == 0.0 and full[0] > 0.5  # the toy task is learnable: full training learns it
    for r in table[1:]:
        expected = r.score_mean / full[0]
        assert r.contribution_mean == pytest.approx(expected)
    assert table[0].label == "full" and table[0].contribution_mean == pytest.approx(1.0)
    doc = json.loads((tmp_path / "contribution.json").read_text())
    assert len(doc["selections"]) == 5
    assert (tmp_path / "contribution.csv").read_text().count("\n") == 6
    assert (tmp_path / "contribution.png").stat().st_size > 1000
    assert "C(k)" in (tmp_path / "report.html").read_text()
    # The same command again: nothing runs, the same rows come back.
    again = []
    rows2 = run_sweep(_sweep(toy_task), tmp_path, on_result=lambda run, res: again.append(run.label))
    assert again == [] and [r["run_id"] for r in rows2] == [r["run_id"] for r in rows]


def test_failed_runs_are_stored_and_retried(toy_task, tmp_path):
    """A diverging run (lr x 1e30 on block 3) is stored as failed with its reason; the sweep goes
    on, and the next invocation retries only that run."""
    train = {**TRAIN, "steps": 4, "max_grad_norm": 0.0, "lr": 1e-3}
    sweep = _sweep(toy_task, layers="boost:3=1e30;1", train=train)
    rows = run_sweep(sweep, tmp_path)
    status = {r["label"]: r for r in rows}
    assert status["boost:3=1e30"]["status"] == "failed"
    assert "non-finite loss" in status["boost:3=1e30"]["error"]
    assert status["1"]["status"] == status["full"]["status"] == "completed"
    retried = []
    rows = run_sweep(sweep, tmp_path, on_result=lambda run, res: retried.append(run.label))
    assert retried == ["boost:3=1e30"]
    assert {r["label"]: r["attempts"] for r in rows}["boost:3=1e30"] == 2
    with pytest.raises(LayerwiseError, match="out of range"):
        run_sweep(_sweep(toy_task, layers="boost:9=2"), tmp_path / "other")


def test_duplicates_run_once_and_windows():
    layers = discover_layers(load_model("tiny:llama").model)
    sel = expand_selections(layers, "each;1;mid:2;1-2;window:2")
    labels = [label for label, _, _ in sel]
    assert labels == ["block 0", "block 1", "block 2", "block 3", "mid:2", "blocks 0-1", "blocks 2-3"]
    with pytest.raises(LayerwiseError, match="window:K needs an integer"):
        expand_selections(layers, "window:x")
    with pytest.raises(LayerwiseError, match="out of range"):
        expand_selections(layers, "7")


def test_a_store_of_another_sweep_is_refused(toy_task, tmp_path):
    run_sweep(_sweep(toy_task, layers="3"), tmp_path)
    with pytest.raises(LayerwiseError, match="holds the store of a different sweep"):
        run_sweep(_sweep(toy_task, layers="2"), tmp_path)
    rows = run_sweep(_sweep(toy_task, layers="2"), tmp_path, force=True)
    assert {r["label"] for r in rows} == {"base", "full", "2"}


def test_two_local_workers(toy_task, tmp_path):
    rows = run_sweep(_sweep(toy_task, layers="1;2", train={**TRAIN, "steps": 3}), tmp_path, workers=2)
    assert [r["status"] for r in rows] == ["completed"] * 4


def test_kill_9_mid_sweep_loses_at_most_the_run_in_flight(toy_task, tmp_path):
    cmd = [sys.executable, "-m", "layerwise.cli.main", "sweep", "--model", "tiny:llama", "--task",
           toy_task, "--method", "sft", "--steps", "12", "--lr", "3e-3", "--batch-size", "8",
           "--n-train", "16", "--eval-n", "6", "--seeds", "0,1", "--out", str(tmp_path), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = tmp_path / "sweep.sqlite"
    try:
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and done < 3:
            time.sleep(0.1)
            if db.exists():
                with sqlite3.connect(db) as con:
                    try:
                        done = con.execute("SELECT count(*) FROM runs").fetchone()[0]
                    except sqlite3.OperationalError:
                        done = 0
        assert proc.poll() is None, "the sweep finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    assert 3 <= before < 11
    code = subprocess.run(cmd, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr[-2000:]
    with open_store(tmp_path) as store:
        rows = store.runs()
    assert len(rows) == 11 and all(r["status"] == "completed" for r in rows)
    assert all(r["attempts"] == 1 for r in rows)  # nothing that had finished ran again
    _, full, table = contributions(rows)
    assert set(full) == {0, 1} and all(math.isfinite(r.contribution_mean) for r in table)


def test_ctrl_c_mid_sweep_leaves_partial_outputs_and_the_rerun_finishes(toy_task, tmp_path):
    """Ctrl-C (SIGINT to the process group) after a few runs: exit 130, contribution.json and
    report.html from the completed runs, marked partial; the same command again completes the
    sweep and its outputs are no longer partial."""
    cmd = [sys.executable, "-m", "layerwise.cli.main", "sweep", "--model", "tiny:llama", "--task",
           toy_task, "--method", "sft", "--steps", "12", "--lr", "3e-3", "--batch-size", "8",
           "--n-train", "16", "--eval-n", "6", "--seeds", "0,1", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    db = tmp_path / "sweep.sqlite"
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and done < 3 and proc.poll() is None:
        time.sleep(0.1)
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    done = con.execute("SELECT count(*) FROM runs WHERE status = 'completed'"
                                       ).fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    with open_store(tmp_path) as store:
        completed = [r for r in store.runs() if r["status"] == "completed"]
    assert 3 <= len(completed) < 11
    assert f"show the {len(completed)} completed runs (marked partial)" in err
    doc = json.loads((tmp_path / "contribution.json").read_text())
    assert doc["notes"][0].startswith(f"partial: {len(completed)} completed runs")
    shown = {sel["label"] for sel in doc["selections"]}
    assert {r["label"] for r in completed} - {"base"} == shown
    assert "partial: " in (tmp_path / "report.html").read_text()
    rerun = subprocess.run(cmd + ["-q"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    doc = json.loads((tmp_path / "contribution.json").read_text())
    assert not any(n.startswith("partial") for n in doc["notes"]) and len(doc["selections"]) == 5


def test_ray_backend_on_a_local_instance(toy_task, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = run_sweep(_sweep(toy_task, layers="1;2", train={**TRAIN, "steps": 3}), tmp_path,
                         backend="ray", ray_cpus=1)
    finally:
        ray.shutdown()
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert {r["label"] for r in rows} == {"base", "full", "1", "2"}


def _ray_workers() -> list[int]:
    """Live Ray worker processes running a sweep run (Ray titles them `ray::execute_run`)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and _alive(int(entry)) and b"ray::execute_run" in open(
                    f"/proc/{entry}/cmdline", "rb").read():
                found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ray_tasks_die_with_a_killed_driver(toy_task, tmp_path):
    """kill -9 of a sweep driver on a running Ray cluster: its tasks' workers go within 5 s."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    proc = None
    try:
        cmd = [sys.executable, "-m", "layerwise.cli.main", "sweep", "--model", "tiny:llama",
               "--task", toy_task, "--method", "sft", "--steps", "400", "--lr", "3e-3",
               "--batch-size", "8", "--n-train", "16", "--eval-n", "6", "--backend", "ray",
               "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "sweep"), "-q"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        deadline = time.time() + 240
        while time.time() < deadline and not _ray_workers() and proc.poll() is None:
            time.sleep(0.2)
        workers = _ray_workers()
        assert workers, "no Ray task ever started"
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        gone_by = time.time() + 5
        while time.time() < gone_by and _ray_workers():
            time.sleep(0.1)
        assert _ray_workers() == [], "a Ray task outlived its driver"
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_unreachable_ray_address_is_one_line(capsys, toy_task, tmp_path):
    pytest.importorskip("ray")
    from tests.cli.test_cli import _one_line_error, run

    code, out, err = run(capsys, "sweep", "--model", "tiny:llama", "--task", toy_task, "--out",
                         str(tmp_path), "--backend", "ray", "--ray-address", "127.0.0.1:1", "-q")
    _one_line_error(code, out, err, r"cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "sweep.sqlite").exists()


def test_contribution_of_lm_runs_uses_the_held_out_loss():
    """For the lm task S is the held-out loss: a block that lowers it half as much as full
    training has C = 0.5, and one that matches full training C = 1 (the same ratio as accuracy)."""
    from layerwise.sweeps.contribution import contributions
    from layerwise.training.result import RunResult, Scores, TrainableSummary

    def row(label, seed, loss, blocks=(0,)):
        result = RunResult(status="completed", task="lm", final=Scores(loss=loss),
                           base=Scores(loss=5.0), trainable=TrainableSummary(params=10, share=0.1))
        return {"label": label, "seed": seed, "status": "completed", "error": None,
                "spec": {"blocks": list(blocks)}, "metrics": result.to_dict()}

    rows = [{"label": "base", "seed": 0, "status": "completed", "error": None, "spec": {"blocks": []},
             "metrics": {"task": "lm", "n": 4, **Scores(loss=5.0, perplexity=148.4).__dict__}},
            row("full", 0, 3.0, (0, 1)), row("block 0", 0, 4.0), row("block 1", 0, 3.0, (1,)),
            row("block 2", 0, 5.5, (2,))]
    s_base, full, table = contributions(rows)
    assert s_base == 5.0 and full == {0: 3.0}
    c = {r.label: r.contribution_mean for r in table}
    assert c == {"full": 1.0, "block 0": 0.5, "block 1": 1.0, "block 2": -0.25}


def test_a_schedule_applies_to_the_selections_not_to_the_references(toy_task, tmp_path):
    from layerwise.sweeps.spec import plan_runs

    layers = discover_layers(load_model("tiny:llama").model)
    train = {**TRAIN, "steps": 4, "schedule": "lisa:1@2"}
    plan = plan_runs(_sweep(toy_task, layers="0-1;2-3", train=train), layers)
    by_label = {r.label: r for r in plan}
    assert by_label["base"].train["schedule"] == by_label["full"].train["schedule"] == "fixed"
    assert by_label["0-1"].train["schedule"] == "lisa:1@2"
    with pytest.raises(LayerwiseError, match="'block 0': .*G=2 is more than the 1 blocks"):
        plan_runs(_sweep(toy_task, train={**train, "schedule": "lisa:2@2"}), layers)
    with pytest.raises(LayerwiseError, match="'boost:1=2' trains in full"):
        plan_runs(_sweep(toy_task, layers="boost:1=2", train=train), layers)
    rows = run_sweep(_sweep(toy_task, layers="0-1;2-3", train=train), tmp_path)
    assert [r["status"] for r in rows] == ["completed"] * 4
    runs = {r["label"]: r for r in rows}
    phases = runs["0-1"]["metrics"]["schedule"]["phases"]
    assert all(len(p["blocks"]) == 1 and set(p["blocks"]) <= {0, 1} for p in phases)
    assert runs["full"]["metrics"]["schedule"] is None


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids |= {int(x) for x in f.read().split()}
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_sweep(toy_task, tmp_path):
    """kill -9 of the sweep's main process only (not its group): its workers go within 5 s."""
    cmd = [sys.executable, "-m", "layerwise.cli.main", "sweep", "--model", "tiny:llama", "--task",
           toy_task, "--method", "sft", "--steps", "200", "--lr", "3e-3", "--batch-size", "8",
           "--n-train", "16", "--eval-n", "6", "--workers", "2", "--out", str(tmp_path), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, workers = time.time() + 120, set()
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = {k for k in _children(proc.pid) if _alive(k)
                       and "spawn_main" in open(f"/proc/{k}/cmdline").read().replace("\0", " ")}
        assert len(workers) == 2, "the workers never started"
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as `kill -9 PID` does
        proc.wait()
        gone_by = time.time() + 5
        while time.time() < gone_by and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its sweep"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
