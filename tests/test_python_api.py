"""The Python API (layerwise/api.py): docs/python.md run as written, and each function against its
command: the same files, the same run ids, the same refusals.

The page's examples run once per module, in order, in one namespace, inside a temporary working
directory; the tests after the first reuse what they wrote (runs, a sweep store, a comparison)
and check it against the `layerwise` command given the same arguments.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import layerwise
from layerwise.cli.main import main
from layerwise.errors import LayerwiseError

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
SMALL = {"steps": 3, "batch_size": 4, "n_train": 8, "eval_n": 4, "general_seqs": 1,
         "general_seq_len": 32, "report_to": "none"}
SMALL_FLAGS = ["--steps", "3", "--batch-size", "4", "--n-train", "8", "--eval-n", "4",
               "--general-seqs", "1", "--general-seq-len", "32", "--report-to", "none"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: one torch thread is ~10x faster than two fighting others."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory):
    """Every ```python block of docs/python.md, executed in order: (namespace, working dir)."""
    root = tmp_path_factory.mktemp("docs")
    namespace: dict = {"__name__": "docs_python_md"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(tempfile, "tempdir", str(root))  # the page's mkdtemp lands in here
        for i, block in enumerate(python_blocks(DOC.read_text(encoding="utf-8"))):
            exec(compile(block, f"{DOC.name}, python block {i + 1}", "exec"), namespace)
        work = Path.cwd()
    return namespace, work


def test_every_python_block_of_the_page_runs(docs_run):
    namespace, work = docs_run
    assert len(python_blocks(DOC.read_text(encoding="utf-8"))) >= 8
    assert work.name.startswith("layerwise-")  # the page's own scratch directory
    # what the page promises, checked from outside it
    assert isinstance(namespace["run"], layerwise.RunResult) and namespace["run"].ok
    assert layerwise.read_run(work / "runs" / "stopped").resumed_from_step == 2
    assert isinstance(namespace["diag"], layerwise.DiagnoseResult)
    assert isinstance(namespace["sw"], layerwise.SweepResult)
    assert isinstance(namespace["cmp"], layerwise.CompareResult)


def test_train_returns_a_run_result_and_keywords_override_the_config_file(tmp_path):
    config = tmp_path / "base.yaml"  # flag spellings, as a user writes them
    config.write_text(yaml.safe_dump({"model": "tiny:llama", "task": "arithmetic", "layers": "0",
                                      "steps": 5, "batch-size": 4, "n-train": 8, "eval-n": 4,
                                      "general-seqs": 1, "general-seq-len": 32, "lr": 0.01}))
    out = tmp_path / "run"
    result = layerwise.train(config=config, steps=2, lr=0.02, out=str(out), progress=False,
                             report_to="none")
    assert isinstance(result, layerwise.RunResult) and result.status == "completed"
    assert result.final.accuracy is not None and result.final.general_perplexity > 1
    assert result.model_object is not None and result.trainable.blocks == [0]
    assert result.steps_completed == 2  # the keyword, not the file's 5
    assert result.config["steps"] == 2 and result.config["lr"] == 0.02
    assert result.config["layers"] == "0" and result.config["batch_size"] == 4  # from the file
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["steps"] == 2 and written["batch-size"] == 4 and written["model"] == "tiny:llama"
    assert layerwise.read_run(out).final == result.final
    assert (out / "model").is_dir()


def test_options_are_typed_as_the_flags_would_type_them():
    from layerwise.api import train_configs

    model, config = train_configs("tiny:llama", None, {"layers": 2, "lr_scale": "1=3",
                                                       "task_options": ["digits=2"],
                                                       "progress": False})
    assert model.model == "tiny:llama" and config.layers == "2" and config.lr_scale == ["1=3"]
    assert config.task_options == {"digits": 2} and config.progress is False


def test_unknown_or_conflicting_arguments_are_one_line_errors(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(LayerwiseError, match=r"^unknown option stepz; valid: .*\bsteps\b"):
        layerwise.train("tiny:llama", layers="1", stepz=3, out=str(out))
    assert not out.exists()  # refused before anything was written
    with pytest.raises(LayerwiseError, match=r"^unknown sweep training option seed; valid: .*\bn_train\b"):
        layerwise.sweep("tiny:llama", task="arithmetic", out=str(out), seed=1)
    with pytest.raises(LayerwiseError, match=r"^resume= continues .*drop config, steps"):
        layerwise.train(config="x.yaml", resume=str(out), steps=3)
    with pytest.raises(LayerwiseError, match="say what trains with exactly one of"):
        layerwise.train("tiny:llama", steps=3, out=str(out))
    assert layerwise.read_run(out).status == "invalid"  # recorded, as the command records it
    with pytest.raises(LayerwiseError, match="no tuned run 'nope'; valid: first, longer"):
        layerwise.CompareResult(labels=["first", "longer"], tuned=[], tols=[0.0], comparison=None,
                                document={}).sparsity("nope")


def test_import_layerwise_does_not_import_torch():
    code = ("import sys, layerwise\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print(' '.join(sorted(layerwise.__all__)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert {"train", "resume", "diagnose", "sweep", "compare", "TrainConfig", "ModelConfig",
            "RunResult", "load_model", "discover_layers", "resolve_selection",
            "apply_selection", "__version__"} <= names
    assert all(callable(getattr(layerwise, n)) for n in names - {"__version__"})


def test_python_m_layerwise_version():
    proc = subprocess.run([sys.executable, "-m", "layerwise", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"layerwise {layerwise.__version__}"


def test_compare_writes_the_compare_json_of_the_command(docs_run, tmp_path, capsys):
    _, work = docs_run
    code = main(["compare", str(work / "base"), str(work / "runs" / "first"),
                 str(work / "runs" / "longer"), "--tol", "1e-5,0", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    ours = json.loads((work / "cmp" / "compare.json").read_text())
    theirs = json.loads((tmp_path / "compare.json").read_text())
    assert ours["base"] == "base" and theirs["base"] == str(work / "base")
    for a, b in zip(ours["runs"], theirs["runs"]):  # relative paths here, absolute there
        assert work / a.pop("tuned") == Path(b.pop("tuned"))
    ours.pop("base"), theirs.pop("base")
    assert ours == theirs
    assert sorted(p.name for p in (work / "cmp").iterdir()) == sorted(p.name for p in tmp_path.iterdir())


def test_the_command_resumes_the_python_sweep_without_rerunning(docs_run, capsys):
    namespace, work = docs_run
    before = (work / "sweep" / "contribution.json").read_text()
    code = main(["sweep", "--model", "tiny:llama", "--task", "arithmetic", "--layers", "1;2",
                 "--seeds", "0", *SMALL_FLAGS, "--out", str(work / "sweep")])
    out, err = capsys.readouterr()
    assert code == 0, err  # a different sweep id would be refused (the store is claimed)
    assert "completed" not in err  # same run ids: nothing ran again
    assert json.loads(before)["selections"] == json.loads(
        (work / "sweep" / "contribution.json").read_text())["selections"]
    assert out.startswith(f"base {namespace['sw'].base_score:.3f}; full seed 0 ")


def test_diagnose_matches_the_command(docs_run, tmp_path, capsys):
    namespace, _ = docs_run
    code = main(["diagnose", "--model", "tiny:llama", "--metrics", "removal,angular,gradient",
                 "--seq-len", "32", "--num-seqs", "2", "--no-progress", "-q", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    theirs = json.loads((tmp_path / "diagnostics.json").read_text())
    ours = copy.deepcopy(namespace["diag"].document)
    for doc in (ours, theirs):
        doc.pop("seconds")
        for metric in doc["metrics"].values():
            metric.pop("seconds")
    assert ours == theirs
    assert namespace["diag"].column("removal_delta_pct") == [r["removal_delta_pct"] for r in theirs["layers"]]
    with pytest.raises(LayerwiseError, match="no per-block field 'nope'; valid: angular_distance"):
        namespace["diag"].column("nope")
