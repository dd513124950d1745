"""`layerwise diagnose` end to end on a tiny model: files, schema, top:K, bad input."""

from __future__ import annotations

import csv
import json
import re

import pytest
import transformers

from layerwise.cli.main import main
from tests.conftest import fresh_tiny

TINY = ["--model", "tiny:llama", "--seq-len", "32", "--num-seqs", "4", "--no-progress", "-q"]


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    assert main(["diagnose", *TINY, "--out", str(out)]) == 0
    return out


def test_default_profile_writes_every_output(profile):
    diag = json.loads((profile / "diagnostics.json").read_text())
    assert diag["num_blocks"] == 4 and diag["replayed"] is True
    assert diag["baseline_perplexity"] > 1
    assert set(diag["metrics"]) == {
        "removal", "scale", "noise", "reset", "neighbour-mean", "angular", "block-influence",
        "linear-r2", "delta-corr", "weight-depth-r2", "snr", "gradient",
    }
    assert [row["index"] for row in diag["layers"]] == [0, 1, 2, 3]
    for field in ("removal_perplexity", "removal_delta_pct", "scale_delta_pct", "noise_delta_pct",
                  "reset_delta_pct", "neighbour_mean_delta_pct", "angular_distance", "block_influence",
                  "linear_r2", "delta_corr", "snr", "weight_depth_r2", "gradient_norm", "taylor_score"):
        assert all(field in row for row in diag["layers"]), field
    rows = list(csv.DictReader((profile / "diagnostics.csv").read_text().splitlines()))
    assert len(rows) == 4 and float(rows[2]["removal_perplexity"]) == pytest.approx(
        diag["layers"][2]["removal_perplexity"])
    for name in diag["metrics"]:
        assert (profile / f"metric_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (profile / "all_metrics_ranks.png").exists()
    html = (profile / "report.html").read_text()
    assert "removal_delta_pct" in html and "Spearman" in html


def test_top_k_reads_the_profile(profile, capsys):
    diag = json.loads((profile / "diagnostics.json").read_text())
    by_removal = sorted(range(4), key=lambda i: -diag["layers"][i]["removal_delta_pct"])[:2]
    assert main(["layers", "--model", "tiny:llama", "--format", "json", "--select",
                 f"top:2@{profile / 'diagnostics.json'}:removal_delta_pct"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"]["blocks"] == sorted(by_removal)
    # linear_r2 is marked "higher = less important": top:1 is the least linear block
    least_linear = min(range(4), key=lambda i: diag["layers"][i]["linear_r2"])
    assert main(["layers", "--model", "tiny:llama", "--format", "json", "--select",
                 f"top:1@{profile / 'diagnostics.json'}:linear_r2"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"]["blocks"] == [least_linear]


def test_non_finite_values_are_reported_and_the_run_goes_on(tmp_path, capsys):
    assert main(["diagnose", *TINY, "--metrics", "scale,angular", "--alpha", "1e30",
                 "--out", str(tmp_path)]) == 0
    diag = json.loads((tmp_path / "diagnostics.json").read_text())
    values = [row["scale_perplexity"] for row in diag["layers"]]
    assert any(v in ("nan", "inf") for v in values)
    assert all(isinstance(row["angular_distance"], float) for row in diag["layers"])
    assert "nan" in capsys.readouterr().out or "inf" in (tmp_path / "diagnostics.csv").read_text()


def test_prune_and_save(tmp_path):
    target = tmp_path / "pruned"
    assert main(["diagnose", *TINY, "--metrics", "prune", "--prune-blocks", "2",
                 "--save", str(target)]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(target)
    assert model.config.num_hidden_layers == 2
    assert (target / "tokenizer.json").exists()


def _error(capsys, argv, pattern):
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--metrics", "removal,nosuch"], r"unknown metric 'nosuch'; valid: removal, scale, noise"),
        (["--alpha", "0"], r"--alpha must be > 0, got 0.0"),
        (["--alpha", "-0.5,0.9"], r"--alpha must be > 0, got -0.5"),
        (["--noise-fraction", "-0.1"], r"--noise-fraction must be >= 0"),
        (["--num-seqs", "100000"], r"too few for --num-seqs 100000"),
        (["--metrics", "prune", "--prune-blocks", "4"], r"--prune-blocks 4 would leave no block"),
        (["--metrics", "removal", "--save", "x"], r"--save writes the pruned model: add 'prune'"),
        (["--metrics", "recovery", "--recovery-blocks", "7"], r"block 7 .* out of range"),
    ],
)
def test_bad_input(capsys, extra, pattern):
    _error(capsys, ["diagnose", *TINY, *extra], pattern)


def test_removal_on_a_single_block_model_is_refused(capsys, tmp_path):
    model = fresh_tiny("llama", num_hidden_layers=1)
    model.save_pretrained(tmp_path)
    from layerwise.models.tiny import byte_tokenizer

    byte_tokenizer().save_pretrained(tmp_path)
    _error(capsys, ["diagnose", "--model", str(tmp_path), "--seq-len", "16", "--num-seqs", "2",
                    "--metrics", "removal"], r"has 1 block: removing it would leave no block")
