"""Merging sweeps: heatmap and rank consistency (Spearman, Kendall tau-b)."""

from __future__ import annotations

import json
import math

import pytest

from layerwise.sweeps.compare import kendall_tau_b, load_sweep, rank_consistency
from tests.cli.test_cli import _one_line_error, run


def test_kendall_tau_b_known_values():
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: tau-b = (C - D) / sqrt((C + D + Ta)(C + D + Tb)), here C=2, D=0, Ta=1, Tb=0
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(3 * 2))
    assert math.isnan(kendall_tau_b([1, 2], [1, 2]))


def _write(path, task, values, steps=20):
    path.mkdir()
    sels = [{"label": f"block {i}", "blocks": [i], "contribution_mean": v} for i, v in enumerate(values)]
    sels.append({"label": "mid:2", "blocks": [1, 2], "contribution_mean": 9.0})
    (path / "contribution.json").write_text(json.dumps(
        {"sweep": {"task": task, "method": "grpo", "model": "m", "train": {"steps": steps}},
         "selections": sels}))


def test_report_merges_sweeps(tmp_path, capsys):
    _write(tmp_path / "a", "math", [0.1, 0.5, 0.9, 0.3])
    _write(tmp_path / "b", "code", [0.2, 0.6, 0.8, 0.1])
    cols = [load_sweep(tmp_path / "a"), load_sweep(tmp_path / "b")]
    assert cols[0].per_block == {0: 0.1, 1: 0.5, 2: 0.9, 3: 0.3}  # multi-block selections left out
    (row,) = rank_consistency(cols)
    assert row["blocks"] == 4 and row["spearman"] == pytest.approx(0.8)
    assert row["kendall"] == pytest.approx(4 / 6)
    code, out, err = run(capsys, "report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                         str(tmp_path / "r"))
    assert code == 0, err
    assert "math/grpo/m" in out and "0.800" in out
    assert (tmp_path / "r" / "heatmap.png").stat().st_size > 1000
    assert json.loads((tmp_path / "r" / "consistency.json").read_text())["pairs"][0]["blocks"] == 4
    assert "Rank agreement" in (tmp_path / "r" / "report.html").read_text()


def test_two_sweeps_of_the_same_task_get_different_names(tmp_path, capsys):
    _write(tmp_path / "a", "math", [0.1, 0.5, 0.9, 0.3], steps=20)
    _write(tmp_path / "b", "math", [0.2, 0.6, 0.8, 0.1], steps=80)
    code, out, err = run(capsys, "report", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 0, err
    assert "math/grpo/m (steps=20)" in out and "math/grpo/m (steps=80)" in out


def test_report_of_a_directory_without_a_sweep(tmp_path, capsys):
    code, out, err = run(capsys, "report", str(tmp_path))
    _one_line_error(code, out, err, r"holds no contribution.json")


def test_top_k_from_a_sweep(tmp_path):
    from layerwise.models import discover_layers, load_model
    from layerwise.selection.resolve import resolve_selection

    _write(tmp_path / "a", "math", [0.1, 0.5, 0.9, float("nan")])
    layers = discover_layers(load_model("tiny:llama").model)
    assert resolve_selection(layers, f"top:2@{tmp_path / 'a' / 'contribution.json'}").blocks == (1, 2)
    assert resolve_selection(layers, f"bottom:1@{tmp_path / 'a' / 'contribution.json'}").blocks == (0,)


@pytest.mark.parametrize("extra, pattern", [
    (["--seeds", "a,b"], r"--seeds 'a,b': expected comma-separated integers"),
    (["--workers", "0"], r"--workers 0: must be >= 1"),
    (["--layers", "window:x"], r"window:K needs an integer K"),
    (["--layers", " ; "], r"--layers is empty"),
    (["--layers", "boost:2"], r"boost:SPEC=X"),
    (["--method", "ppo"], r"invalid choice: 'ppo'"),
])
def test_sweep_bad_input(capsys, tmp_path, extra, pattern):
    code, out, err = run(capsys, "sweep", "--model", "tiny:llama", "--out", str(tmp_path), "-q", *extra)
    _one_line_error(code, out, err, pattern)


def test_the_sweep_page_lists_rows_in_depth_order_with_the_settings(tmp_path):
    from layerwise.reporting.sweep_report import display_order, sweep_html
    from layerwise.sweeps.contribution import Contribution

    def row(label, blocks):
        return Contribution(label=label, blocks=blocks, seeds=[0], score_mean=0.5, score_sd=0.0,
                            contribution_mean=0.5, contribution_sd=0.0, contribution_per_seed={0: 0.5},
                            trainable_params=10, trainable_share=0.1, step_seconds=0.1,
                            wall_seconds=1.0)

    rows = [row("block 2", [2]), row("full", [0, 1, 2]), row("block 0", [0]), row("mid:2", [1, 2])]
    assert [r.label for r in display_order(rows)] == ["full", "block 0", "block 2", "mid:2"]
    plot = tmp_path / "c.png"
    plot.write_bytes(b"")
    page = sweep_html("t", 0.1, {0: 0.9}, rows, plot, tmp_path / "r.html",
                      settings={"model": "tiny:llama", "task": "arithmetic", "method": "grpo",
                                "layers": "each", "seeds": [0], "train": {"steps": 12, "lr": 3e-3}})
    text = page.read_text()
    assert text.index("block 0") < text.index("block 2") < text.index("mid:2")
    assert "<h2>Settings</h2>" in text and "grpo" in text and "<th>steps</th><td>12</td>" in text


def test_a_report_of_sweeps_without_any_finite_contribution(tmp_path, capsys):
    for name, steps in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        sels = [{"label": f"block {i}", "blocks": [i], "contribution_mean": None} for i in range(4)]
        (tmp_path / name / "contribution.json").write_text(json.dumps(
            {"sweep": {"task": "t", "method": "grpo", "model": "m", "train": {"steps": steps}},
             "notes": ["no selection has a finite C(k)"], "selections": sels}))
    code, out, err = run(capsys, "report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                         str(tmp_path / "r"))
    assert code == 0, err
    assert "Traceback" not in err
    assert (tmp_path / "r" / "heatmap.png").stat().st_size > 1000
    page = (tmp_path / "r" / "report.html").read_text()
    assert "no selection has a finite C(k)" in page
    assert "— (fewer than 2 blocks with a finite C(k) in both)" in page and ">nan<" not in page
