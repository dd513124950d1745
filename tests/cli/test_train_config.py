"""`layerwise train` configuration: generated flags, --config files, run directories, early checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from safetensors.torch import load_file

from layerwise.cli.main import build_parser, main
from tests.cli.test_cli import _one_line_error, run

FAST = ["--model", "tiny:llama", "--steps", "2", "--batch-size", "4", "--n-train", "8",
        "--eval-n", "2", "--general-seqs", "1", "--general-seq-len", "32", "-q"]


def _help(command: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return sub.format_help()


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_flag_shows_its_default(command):
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    text = " ".join(_help(command).split())
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config", "resume", "quiet"):
            continue
        shown = " ".join(parser._get_formatter()._format_action(action).split())
        assert "(default: " in shown or "(required" in shown, shown
    assert "--steps STEPS optimizer steps (default: 50)" in text
    assert "(default: 8)" in text and "(default: 100)" in text


def test_train_and_sweep_share_the_training_flags():
    def flags(command):
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        return {a.option_strings[-1]: a.help for a in parser._actions if a.option_strings}

    train, sweep = flags("train"), flags("sweep")
    for flag in ("--steps", "--batch-size", "--eval-n", "--num-generations", "--temperature",
                 "--report-to", "--task-option", "--data", "--lr"):
        assert train[flag] == sweep[flag], flag
    assert "--save-every" not in sweep and "--resume" not in sweep


def test_config_yaml_repeats_the_run_and_flags_override_it(capsys, tmp_path):
    code, out, err = run(capsys, "train", *FAST, "--layers", "2", "--task-option", "digits=2",
                         "--out", str(tmp_path / "a"))
    assert code == 0, err
    written = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert written["layers"] == "2" and written["batch-size"] == 4 and written["steps"] == 2
    assert written["task-option"] == {"digits": 2} and written["model"] == "tiny:llama"
    code, out, err = run(capsys, "train", "--config", str(tmp_path / "a" / "config.yaml"),
                         "--out", str(tmp_path / "b"), "-q")
    assert code == 0, err
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in "ab")
    assert all((a[k] == b[k]).all() for k in a)  # the same run, bit for bit
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert {k: v for k, v in ma["config"].items() if k != "out"} == \
        {k: v for k, v in mb["config"].items() if k != "out"}
    # A flag on the command line wins over the file; a list flag replaces the file's list.
    code, out, err = run(capsys, "train", "--config", str(tmp_path / "a" / "config.yaml"),
                         "--steps", "1", "--task-option", "digits=1", "--out", str(tmp_path / "c"), "-q")
    assert code == 0, err
    mc = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert mc["steps_completed"] == 1 and mc["config"]["task_options"] == {"digits": 1}


def test_config_file_keys_in_either_spelling(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny:llama\nlayers: '1'\nbatch_size: 4\nsteps: 1\nn-train: 8\neval-n: 2\n"
                   "general-seqs: 1\ngeneral-seq-len: 32\nreport-to: none\ntask-option: [digits=1]\n")
    code, out, err = run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"), "-q")
    assert code == 0, err
    assert not (tmp_path / "r" / "tensorboard").exists()  # --report-to none


@pytest.mark.parametrize("text, pattern", [
    ("stepz: 3\n", r"unknown key stepz; valid: .*steps"),
    ("steps: many\n", r"steps must be a number, not 'many'"),
    ("steps: 2.5\n", r"steps must be a whole number"),
    ("full: maybe\n", r"full must be true or false"),
    ("method: ppo\n", r"method 'ppo'; valid: sft, grpo"),
    ("- a\n- b\n", r"must be a mapping of flag names"),
    ("", r"is empty"),
    ("steps: [1\n", r"is not valid YAML \(line 2\)"),
])
def test_bad_config_files_are_one_line(capsys, tmp_path, text, pattern):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code, out, err = run(capsys, "train", "--config", str(cfg), "--layers", "1", "-q")
    _one_line_error(code, out, err, pattern)


def test_missing_config_file(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--config", str(tmp_path / "no.yaml"), "-q")
    _one_line_error(code, out, err, r"--config .*no.yaml does not exist")


@pytest.mark.parametrize("extra, pattern", [
    (["--layers", "1", "--lr-scale", "9=2"], r"block 9 .*out of range"),
    (["--layers", "1", "--lr-scale", "3=2"], r"--lr-scale names no block that trains: 3"),
    (["--full", "--mask-from", "onlyone"], r"--mask-from 'onlyone': expected BASE,TUNED"),
    (["--full", "--mask-from", "/nope/a,/nope/b"], r"/nope/a"),
    (["--lora", "--lora-layers", "7"], r"--lora-layers: .*7"),
    (["--full", "--tokenizer", "bpe:10"], r"bpe"),
    (["--full", "--task", "lm", "--method", "grpo"], r"lm task trains on text windows"),
    (["--full", "--data", "x.txt"], r"--data/--eval-data are the lm task's texts"),
])
def test_argument_checks_happen_before_the_model_is_scored(capsys, tmp_path, extra, pattern):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *FAST, *extra, "--out", str(out))
    _one_line_error(code, stdout, err, pattern)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "invalid" and metrics["failure"] in err
    assert metrics["base"]["accuracy"] is None  # refused before the base model was scored
    assert not (out / "config.yaml").exists() and not (out / "model").exists()


def test_a_second_run_never_mixes_with_the_first(capsys, tmp_path):
    out = tmp_path / "run"
    assert run(capsys, "train", *FAST, "--layers", "1", "--out", str(out))[0] == 0
    first = json.loads((out / "metrics.json").read_text())
    code, stdout, err = run(capsys, "train", *FAST, "--layers", "2", "--out", str(out))
    _one_line_error(code, stdout, err, r"already holds a run \(status 'completed'\).*--overwrite")
    assert json.loads((out / "metrics.json").read_text()) == first  # untouched, also by "invalid"
    events = list((out / "tensorboard").rglob("events.*"))
    code, stdout, err = run(capsys, "train", *FAST, "--layers", "2", "--out", str(out), "--overwrite")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["trainable"]["blocks"] == [2]
    assert not any(e.exists() for e in events)  # the old run's logs went with it
    assert len(list((out / "tensorboard").rglob("events.*"))) == 1


@pytest.mark.parametrize("make, pattern", [
    (lambda p: p.write_text("x"), r"--out .* is a file"),
    (lambda p: (p.mkdir(), p.chmod(0o500)), r"is not writable"),
])
def test_unwritable_out_is_refused_before_loading(capsys, tmp_path, make, pattern):
    import os

    target = tmp_path / "o"
    make(target)
    if os.geteuid() == 0 and target.is_dir():
        pytest.skip("root writes into read-only directories")
    code, out, err = run(capsys, "train", *FAST, "--layers", "1", "--out", str(target / "x")
                         if target.is_dir() else str(target))
    _one_line_error(code, out, err, pattern)


def test_out_defaults_to_a_timestamped_run_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", *FAST, "--layers", "1")
    assert code == 0, err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-sft")
    assert f"run directory {runs[0].relative_to(tmp_path)}" in out
    assert (runs[0] / "model" / "model.safetensors").is_file()


def test_resume_takes_no_other_flags(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--resume", str(tmp_path), "--steps", "3", "-q")
    _one_line_error(code, out, err, r"--resume continues a run with its own config.yaml; drop --steps")


def test_python_dash_m_layerwise():
    proc = subprocess.run([sys.executable, "-m", "layerwise", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("layerwise ")


def test_kto_through_the_cli(capsys, tmp_path, toy_task):
    code, out, err = run(capsys, "train", *FAST, "--task", toy_task, "--method", "kto",
                         "--layers", "2", "--dpo-samples", "2", "--lr", "1e-2",
                         "--out", str(tmp_path / "k"))
    assert code == 0, err
    m = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert m["method"] == "kto" and m["pairs"]["pairs"] > 0
    assert (tmp_path / "k" / "pairs.jsonl").is_file()
    assert any(k.startswith("kl") or "rewards/chosen" in k for h in m["history"] for k in h)


def test_lm_task_from_scratch_with_a_trained_bpe(capsys, tmp_path):
    """A sized tiny model, a BPE trained on the training text, the lm task: loss goes down, the
    tokenizer is saved with the model, and config.yaml repeats the run."""
    words = " ".join(f"the cat {i % 7} sat on the mat {i % 5}." for i in range(600))
    (tmp_path / "train.txt").write_text(words)
    (tmp_path / "eval.txt").write_text(words[::-1][:4000][::-1])
    args = ["--model", "tiny:llama:layers=3,hidden=64,heads=4,ffn=128", "--tokenizer", "bpe:300",
            "--task", "lm", "--data", str(tmp_path / "train.txt"), "--eval-data",
            str(tmp_path / "eval.txt"), "--task-option", "seq_len=32", "--full", "--steps", "12",
            "--batch-size", "8", "--n-train", "64", "--eval-n", "4", "--lr", "3e-3",
            "--general-seqs", "1", "--general-seq-len", "32", "-q"]
    code, out, err = run(capsys, "train", *args, "--out", str(tmp_path / "a"))
    assert code == 0, err
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["base"]["accuracy"] is None and m["final"]["loss"] < m["base"]["loss"] - 0.3
    assert m["final"]["perplexity"] == pytest.approx(2.718281828 ** m["final"]["loss"], rel=1e-6)
    assert "lm loss       base" in out
    tok = json.loads((tmp_path / "a" / "model" / "tokenizer.json").read_text())
    cfg = json.loads((tmp_path / "a" / "model" / "config.json").read_text())
    assert 260 < len(tok["model"]["vocab"]) <= 300 and tok["model"]["merges"]  # a trained BPE
    assert cfg["vocab_size"] == len(tok["model"]["vocab"])  # the model was sized to it
    code, out, err = run(capsys, "train", "--config", str(tmp_path / "a" / "config.yaml"),
                         "--out", str(tmp_path / "b"), "-q")
    assert code == 0, err
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert mb["final"]["loss"] == m["final"]["loss"]


def test_a_task_whose_items_raise_is_refused_before_loading(capsys, tmp_path):
    task = tmp_path / "broken.py"
    task.write_text("class T:\n    name = 'broken'\n    def items(self, split, n, seed):\n"
                    "        raise KeyError('no such split file')\n    def score(self, c, i):\n"
                    "        return 0.0\n    def extract(self, c, i):\n        return c\n"
                    "def make_task():\n    return T()\n")
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *FAST, "--layers", "1", "--task", f"{task}:make_task",
                            "--out", str(out))
    _one_line_error(code, stdout, err, r"task 'broken': items\(\) failed: KeyError")
    assert json.loads((out / "metrics.json").read_text())["status"] == "invalid"


def test_dry_run_resolves_without_loading_or_writing(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", *FAST, "--layers", "1-2", "--out", str(out), "--dry-run")
    assert code == 0, err
    doc = yaml.safe_load(stdout)
    assert doc["layers"] == "1-2" and doc["steps"] == 2 and doc["out"] == str(out)
    assert "# trains layers 1-2 (blocks 1, 2): 73,984 of 181,312 parameters (40.80%)" in stdout
    assert not out.exists()  # nothing written
    code, stdout, err = run(capsys, "train", *FAST, "--lora", "--lora-layers", "1", "--dry-run")
    assert code == 0 and "LoRA r=16" not in stdout and "blocks 1" in stdout, err
    code, stdout, err = run(capsys, "train", *FAST, "--layers", "7", "--dry-run")
    _one_line_error(code, stdout, err, r"block 7 .*out of range")


def test_sweep_reads_a_config_file_and_flags_override_it(capsys, tmp_path, toy_task):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"model: tiny:llama\ntask: {toy_task}\nlayers: '1'\nsteps: 50\nbatch-size: 4\n"
                   "n-train: 8\neval-n: 2\n")
    out = tmp_path / "sw"
    code, stdout, err = run(capsys, "sweep", "--config", str(cfg), "--steps", "1", "--out", str(out),
                            "--no-keep-full", "-q")
    assert code == 0, err
    doc = json.loads((out / "contribution.json").read_text())
    assert doc["sweep"]["train"]["steps"] == 1 and doc["sweep"]["train"]["batch_size"] == 4
    assert [s["label"] for s in doc["selections"]] == ["full", "1"]
    code, stdout, err = run(capsys, "sweep", "--config", str(cfg), "--save-every", "2", "-q")
    _one_line_error(code, stdout, err, r"unrecognized arguments: --save-every")
