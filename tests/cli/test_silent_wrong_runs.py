"""Silent-wrong-run probes (docs/reliability.md): an input changes between the first read and the
second (a resume, a reused store or tune, a pair of checkpoints that must match), and the second
command must refuse it in one line naming what changed, exit 2, before any training step and with
nothing written. Each probe runs the real CLI on real tiny checkpoints and real interrupted runs.

The same list writes the table in the doc:
    .venv/bin/python -m tests.cli.test_silent_wrong_runs --write docs/reliability.md
(it replaces what lies between the `<!-- probes -->` and `<!-- /probes -->` lines).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file, save_file

from layerwise.cli.main import main

VALID = "../shared/data/wikitext2_valid.txt"
TENSOR = "model.layers.3.mlp.gate_proj.weight"  # the reproductions' block-3 tensor
RUN = dict(task="arithmetic", layers="1", steps=40, n_train=16, eval_n=4, batch_size=4,
           general_seqs=1, general_seq_len=32)
RUN_ARGS = ("--task", "arithmetic", "--steps", "40", "--n-train", "16", "--eval-n", "4",
            "--batch-size", "4", "--general-seqs", "1", "--general-seq-len", "32")


def cli(*argv: str) -> tuple[int, str, str]:
    """The real CLI in this process; its warnings are caught with stderr (logging is configured
    once per process, so a handler of its own catches them here as a terminal shows them)."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("layerwise: %(message)s"))
    logging.getLogger("layerwise").addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in argv])
    finally:
        logging.getLogger("layerwise").removeHandler(handler)
    return code, out.getvalue(), err.getvalue()


def save_tiny(path: Path, spec: str = "tiny:llama", seed: int = 0) -> Path:
    from layerwise.models import load_model

    loaded = load_model(spec, seed=seed)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path


def bump(model_dir: Path, name: str = TENSOR, by: float = 0.5) -> None:
    """One tensor of a checkpoint changed in place, as the reproductions do."""
    file = model_dir / "model.safetensors"
    tensors = load_file(file)
    tensors[name] = tensors[name] + by
    save_file(tensors, file, metadata={"format": "pt"})


def interrupted_train(out: Path, model: str | Path, **options) -> Path:
    """A real training run stopped by a real SIGINT after its second step (checkpoint 2), as
    Ctrl-C stops `layerwise train`."""
    from tests.training.test_resume import SignalAt
    from layerwise.training.config import TrainConfig
    from layerwise.training.runner import train

    cfg = {**RUN, **options, "save_every": 1, "out": str(out), "progress": False}
    result = train(TrainConfig(**cfg), str(model), extra_callbacks=[SignalAt(1)])
    assert result.status == "interrupted" and (out / "checkpoints").is_dir(), result.failure
    return out


def tree_digest(path: Path) -> str:
    """Every file under `path` (names, sizes, bytes): nothing written means this is unchanged."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(path)}:{p.stat().st_size}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Probe:
    changed: str  # what changes between the two reads, in words
    checked: str  # what catches it
    setup: Callable[[Path], tuple[list[str], Path | None]]  # -> (second command, dir to watch)
    pattern: str
    code: int = 2


# ---- the probes' setups: each builds the first read, changes an input, returns the second ----
def _train_model_changed(root: Path):
    base = save_tiny(root / "base")
    run = interrupted_train(root / "R", base)
    bump(base)
    return ["train", "--resume", run], run


def _sweep_model_changed(root: Path):
    from layerwise import api

    base = save_tiny(root / "base3")
    args = dict(task="arithmetic", method="sft", layers="0;1;2;3", seeds=(0,), steps=2,
                n_train=8, eval_n=4, batch_size=4)

    def stop_after_base(run, result):
        if run.label == "base":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.sweep(str(base), out=root / "S3", on_result=stop_after_base, **args)
    bump(base)
    return ["sweep", "--model", base, "--task", "arithmetic", "--method", "sft", "--layers",
            "0;1;2;3", "--seeds", "0", "--steps", "2", "--n-train", "8", "--eval-n", "4",
            "--batch-size", "4", "--out", root / "S3", "-q"], root / "S3"


def _sweep_forced(root: Path):
    argv, _ = _sweep_model_changed(root)
    return [a for a in argv if a != "-q"] + ["--force"], None


def _data_edited(root: Path):
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "completion": f" {i + 1}"}) + "\n"
                            for i in range(40)))
    run = interrupted_train(root / "R", "tiny:llama", task="arithmetic", dataset=str(rows),
                            n_train=32)
    lines = rows.read_text().splitlines()
    lines[3] = json.dumps({"prompt": "3 + 1 =", "completion": " 5"})
    rows.write_text("\n".join(lines) + "\n")
    return ["train", "--resume", run], run


def _task_file_edited(root: Path):
    task = root / "mytask.py"
    task.write_text("from layerwise.tasks.arithmetic import ArithmeticTask\n\n"
                    "def make_task():\n    return ArithmeticTask(ops='+')\n")
    run = interrupted_train(root / "R", "tiny:llama", task=f"{task}:make_task")
    task.write_text(task.read_text().replace("ops='+'", "ops='*'"))
    return ["train", "--resume", run], run


def _tokenizer_swapped(root: Path):
    from layerwise.models.tiny import bpe_tokenizer

    base = save_tiny(root / "base")
    run = interrupted_train(root / "R", base)
    other = bpe_tokenizer(Path(VALID).read_text()[:20000], 300)
    other.save_pretrained(root / "other_tok")
    shutil.copy(root / "other_tok" / "tokenizer.json", base / "tokenizer.json")
    return ["train", "--resume", run], run


def _package_upgraded(root: Path):
    run = interrupted_train(root / "R", "tiny:llama")
    record = json.loads((run / "inputs.json").read_text())
    record["code"]["versions"]["transformers"] = "4.0.0"  # as the run started on an older release
    (run / "inputs.json").write_text(json.dumps(record))
    return ["train", "--resume", run], run


def _config_edited(root: Path):
    run = interrupted_train(root / "R", "tiny:llama")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("model: tiny:llama", "model: tiny:qwen2"))
    return ["train", "--resume", run], run


def _config_beside_resume(root: Path):
    run = interrupted_train(root / "R", "tiny:llama")
    other = root / "other.yaml"
    other.write_text("model: tiny:qwen2\nlayers: '1'\n")
    return ["train", "--resume", run, "--config", other], run


def _mask_base_other(root: Path):
    base = save_tiny(root / "base")
    other = save_tiny(root / "other", seed=1)  # the same architecture, other weights
    return ["train", "--model", base, "--layers", "1", "--mask-from", f"{other},{base}", *RUN_ARGS,
            "--out", root / "R"], None


def _schedule_other_model(root: Path):
    code, _, err = cli("diagnose", "--model", "tiny:llama:layers=6", "--data", VALID, "--seq-len",
                       "32", "--num-seqs", "2", "--metrics", "block-influence", "--out",
                       root / "diag6", "-q", "--no-progress")
    assert code == 0, err
    return ["train", "--model", "tiny:llama", "--layers", "0-3", "--schedule",
            f"growth@{root / 'diag6' / 'diagnostics.json'}", *RUN_ARGS, "--out", root / "R"], None


TUNE = ("tune", "--model", "{M}", "--task", "arithmetic", "--method", "sft", "--budget", "1",
        "--steps", "3", "--n-train", "8", "--eval-n", "4", "--batch-size", "4",
        "--estimate-prompts", "2", "--estimate-batches", "1")


def _tune(root: Path, model: str) -> list[str]:
    argv = [a.replace("{M}", model) for a in TUNE] + ["--out", str(root / "T"), "-q"]
    code, _, err = cli(*argv)
    assert code == 0, err
    return argv


def _tune_other_settings(root: Path):
    argv = _tune(root, "tiny:llama")
    return [a if a != "2" or argv[i - 1] != "--estimate-prompts" else "4"
            for i, a in enumerate(argv)], root / "T"


def _tune_model_changed(root: Path):
    base = save_tiny(root / "base")
    argv = _tune(root, str(base))
    bump(base)
    return argv, root / "T"


def _estimate_model_changed(root: Path):
    base = save_tiny(root / "base")
    code, _, err = cli("sweep", "--model", base, "--task", "arithmetic", "--method", "sft",
                       "--layers", "1", "--steps", "2", "--n-train", "8", "--eval-n", "4",
                       "--batch-size", "4", "--out", root / "S", "-q")
    assert code == 0, err
    bump(base)
    return ["estimate", root / "S", "--no-gradient"], root / "S"


def _compare_other_base(root: Path):
    from layerwise.training.config import TrainConfig
    from layerwise.training.runner import train

    base = save_tiny(root / "base")
    other = save_tiny(root / "other", seed=1)
    run = train(TrainConfig(**{**RUN, "steps": 2, "out": str(root / "R"), "progress": False}),
                str(base))
    assert run.status == "completed", run.failure
    return ["compare", other, root / "R", "--out", root / "C"], None


def _relative_model_elsewhere(root: Path):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        save_tiny(root / "base")
        run = interrupted_train(Path("R"), "base")
    finally:
        os.chdir(cwd)
    shutil.copytree(root / "base", root / "elsewhere" / "base")
    bump(root / "elsewhere" / "base")
    return ["train", "--resume", root / run], root / run


PROBES = [
    Probe("the base model's weights, between Ctrl-C and `train --resume` (one block-3 tensor "
          "+0.5; the issue's first reproduction)",
          "inputs.json: a content hash of every weight file of --model",
          _train_model_changed, r"--resume .*R: since the run started, the model's file "
          r"model\.safetensors changed \(content hash"),
    Probe("the base model's weights, between an interrupted sweep (base scored) and the same "
          "command again (the second reproduction)",
          "the store's inputs record, compared before the model loads",
          _sweep_model_changed, r"--out .*S3: since the store's runs were made, the model's file "
          r"model\.safetensors changed"),
    Probe("the same, with --force", "run ids carry the inputs' key: a separate sweep in the "
          "store, C(k) from its own runs only (exit 0, a warning)",
          _sweep_forced, r"--force: the runs already in .*S3 read other inputs .*kept beside "
                         r"them as a separate sweep", code=0),
    Probe("a --dataset file edited between interrupt and resume (one row's answer)",
          "a content hash of every data file the run names", _data_edited,
          r"since the run started, data task_options\.path .*rows\.jsonl: rows\.jsonl changed"),
    Probe("a task file (FILE.py:FACTORY) edited between interrupt and resume",
          "the task file is a data input like any other", _task_file_edited,
          r"data task .*mytask\.py: mytask\.py changed"),
    Probe("the tokenizer swapped in the model directory (another tokenizer.json)",
          "the model directory's tokenizer files, apart from its weights", _tokenizer_swapped,
          r"since the run started, the tokenizer's file tokenizer\.json changed"),
    Probe("a package upgraded between interrupt and resume (transformers)",
          "the versions of layerwise, torch, transformers, TRL, PEFT, datasets, lm-eval",
          _package_upgraded, r"since the run started, transformers was 4\.0\.0, now "),
    Probe("the run's config.yaml edited to name another model before `train --resume`",
          "the record, not config.yaml, says what the run read", _config_edited,
          r"since the run started, the model was 'tiny:llama', now 'tiny:qwen2'"),
    Probe("`train --resume R --config OTHER.yaml` naming another model",
          "a resumed run takes its own config.yaml only", _config_beside_resume,
          r"--resume continues a run with its own config\.yaml: drop --config"),
    Probe("`--mask-from BASE,TUNED` whose BASE is not the run's --model (other weights, the same "
          "architecture)", "BASE's tensors against the model's files, exactly, before loading",
          _mask_base_other, r"--mask-from: BASE .*other is not the model this run trains "
                            r"\(--model\): tensor .* differs"),
    Probe("a schedule's scores file (growth@FILE) from another model (checked before this issue)",
          "the file's identity (structure, block count)", _schedule_other_model,
          r"was made for a model with 6 blocks; this model has 4: a file from another model"),
    Probe("`tune` run again into its --out with other settings (--estimate-prompts 4)",
          "tune.json's settings, each named", _tune_other_settings,
          r"holds a tune of other settings \(tune\.json\): setting estimate_prompts was 2, now 4"),
    Probe("`tune` run again into its --out after the model's weights changed",
          "tune.json's inputs record", _tune_model_changed,
          r"--out .*T: since the tune started, the model's file model\.safetensors changed"),
    Probe("`estimate` on a sweep whose model changed since its runs",
          "the sweep's inputs record (contribution.json), before the model loads",
          _estimate_model_changed,
          r"sweep .*S: since its runs were made, the model's file model\.safetensors changed"),
    Probe("`compare BASE RUN` where BASE is not the model RUN was trained from",
          "RUN/inputs.json's weight files against BASE's (a warning: comparing against another "
          "base is allowed, and compare.json records it)", _compare_other_base,
          r"R was trained from .*base; BASE .*other: model\.safetensors changed", code=0),
    Probe("a relative --model resumed from another directory holding another copy",
          "the record keeps the absolute path the run read", _relative_model_elsewhere,
          r"since the run started, the model was read from .*base, now from .*elsewhere/base"),
]


@pytest.mark.parametrize("probe", PROBES, ids=[p.changed[:60] for p in PROBES])
def test_a_changed_input_is_refused_before_anything_is_written(probe, tmp_path):
    argv, watched = probe.setup(tmp_path)
    before = tree_digest(watched) if watched is not None and probe.code == 2 else None
    if probe.setup is _relative_model_elsewhere:
        cwd = os.getcwd()
        os.chdir(tmp_path / "elsewhere")
        try:
            code, out, err = cli(*argv)
        finally:
            os.chdir(cwd)
    else:
        code, out, err = cli(*argv)
    assert "Traceback" not in out + err, err
    assert code == probe.code, (code, err)
    if code == 2:
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert re.search(probe.pattern, err), err
        if before is not None:
            assert tree_digest(watched) == before  # nothing written
    else:
        assert re.search(probe.pattern, out + err), err


def test_a_forced_sweep_on_other_weights_never_mixes_the_first_ones_runs(tmp_path):
    """--force after the model changed: a second sweep in the store, its own base score, and
    C(k) (contribution.json) from its own runs only."""
    from layerwise.sweeps.store import open_store

    argv, _ = _sweep_forced(tmp_path)
    code, _, err = cli(*argv)
    assert code == 0, err
    with open_store(tmp_path / "S3") as store:
        rows, current = store.runs(), store.current_runs()
        key = store.description()["inputs_key"]
    bases = [r for r in rows if r["label"] == "base"]
    assert len(bases) == 2 and len({r["run_id"] for r in bases}) == 2  # scored again
    assert {r["spec"]["inputs"] for r in current} == {key} and len(current) == 6
    assert [r for r in rows if r not in current] == [bases[0]]  # the first sweep's base, kept
    doc = json.loads((tmp_path / "S3" / "contribution.json").read_text())
    assert doc["inputs"]["model"]["files"]["model.safetensors"]["sha256"] == hashlib.sha256(
        (tmp_path / "base3" / "model.safetensors").read_bytes()).hexdigest()


def markdown() -> str:
    """The probes as run now: what changed, what catches it, the second command, its message."""
    rows = ["| # | between the two reads | what is checked | second command | exit | message |",
            "|---|---|---|---|---|---|"]
    for n, probe in enumerate(PROBES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            argv, _ = probe.setup(root)
            cwd = os.getcwd()
            if probe.setup is _relative_model_elsewhere:
                os.chdir(root / "elsewhere")
            try:
                code, out, err = cli(*argv)
            finally:
                os.chdir(cwd)
            lines = [line for line in (err if code else out + err).splitlines()
                     if re.search(probe.pattern, line)]
            message = (lines[0] if lines else err.strip()).replace(str(root), "D")
            message = message.replace(os.path.realpath(root), "D").replace("|", "\\|")
            command = " ".join(str(a) for a in argv).replace(str(root), "D").replace("|", "\\|")
            rows.append(f"| {n} | {probe.changed} | {probe.checked} | `{command}` | {code} | "
                        f"{message} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    from tests.cli.test_reliability import write_or_print

    write_or_print("probes", markdown)
