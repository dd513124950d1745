"""Agreement between metrics (ranks, Spearman) and the diagnostics report, on a synthetic result."""

from __future__ import annotations

import base64
import math
import re

import pytest

from layerwise.diagnostics.agreement import (
    agreement_table,
    importance_scores,
    normalise_ranks,
    normalised_ranks,
    parse_value,
    spearman,
)
from layerwise.reporting.diagnostics_report import render_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_diag() -> dict:
    """Six blocks, four metrics: a removal perplexity spanning 4 decades with an "inf", a
    low-is-important R^2 with a "nan", a descriptive field, and a gradient norm with a null."""
    removal = [5000.0, 40.0, 31.0, "inf", 35.0, 900.0]
    r2 = [0.2, 0.9, "nan", 0.7, 0.95, 0.5]
    corr = [-0.4, 0.1, 0.2, 0.3, 0.25, None]
    grad = [3.0, 1.0, 0.5, 0.4, None, 2.0]
    layers = [
        {"index": i, "removal_perplexity": removal[i],
         "removal_delta_pct": None if removal[i] == "inf" else removal[i] / 27.6 * 100 - 100,
         "linear_r2": r2[i], "delta_corr": corr[i], "grad_norm": grad[i]}
        for i in range(6)
    ]
    layers[3]["removal_delta_pct"] = "inf"
    return {
        "layerwise_version": "0.1.0",
        "model": "tiny <llama> & co",
        "model_type": "llama",
        "num_blocks": 6,
        "data": "../shared/data/wikitext2_test.txt",
        "windows": {"num_seqs": 2, "seq_len": 16, "tokens": 32},
        "baseline_perplexity": 27.6,
        "metrics": {
            "removal": {"help": "Perplexity with the block removed.", "seconds": 1.5,
                        "fields": {"removal_perplexity": True, "removal_delta_pct": True},
                        "summary": {"worst_block": 0, "max_ppl": "inf"}, "extra": {}},
            "linear-r2": {"help": "How linear a block is <R^2>.", "seconds": 0.25,
                          "fields": {"linear_r2": False}, "summary": {"global_r2": 0.81},
                          "extra": {"ridge": 0.001}},
            "delta-corr": {"help": "Correlation of successive updates.", "seconds": 0.1,
                           "fields": {"delta_corr": None}, "summary": {}, "extra": {}},
            "gradient": {"help": "Gradient norm per block.", "seconds": 0.3,
                         "fields": {"grad_norm": True}, "summary": {}, "extra": {}},
        },
        "layers": layers,
        "options": {"metrics": "default"},
        "seconds": 2.15,
    }


# --- values and ranks ----------------------------------------------------------------------------


def test_parse_value_reads_json_safe_non_finite_strings():
    assert parse_value(None) is None
    assert math.isnan(parse_value("nan"))
    assert parse_value("inf") == math.inf and parse_value("-inf") == -math.inf
    assert parse_value(3) == 3.0 and parse_value("bogus") is None


def test_normalised_ranks_of_a_known_vector():
    ranks = normalise_ranks([10.0, 30.0, 20.0, 20.0, None, math.inf])
    assert ranks == [0.0, 1.0, 0.5, 0.5, None, None]
    assert normalise_ranks([7.0, None]) == [0.5, None]  # a lone value: as if everything tied
    assert normalise_ranks([None, None]) == [None, None]


def test_importance_scores_orient_and_drop_non_finite():
    scores = importance_scores(synthetic_diag())
    assert list(scores) == ["removal_perplexity", "removal_delta_pct", "linear_r2", "grad_norm"]
    assert "delta_corr" not in scores  # descriptive
    assert scores["removal_perplexity"][3] is None  # "inf" is not rankable
    assert scores["linear_r2"] == [-0.2, -0.9, None, -0.7, -0.95, -0.5]  # low R^2 = important
    assert scores["grad_norm"][4] is None


def test_normalised_ranks_put_most_important_at_one():
    ranks = normalised_ranks(synthetic_diag())
    # removal perplexity over finite blocks 0,1,2,4,5: 5000 is the largest, 31 the smallest.
    assert ranks["removal_perplexity"] == [1.0, 0.5, 0.0, None, 0.25, 0.75]
    # linear_r2 is negated: the least linear block (0, R^2 0.2) is the most important.
    assert ranks["linear_r2"] == [1.0, 0.25, None, 0.5, 0.0, 0.75]


# --- Spearman ------------------------------------------------------------------------------------


def test_spearman_perfect_agreement_and_disagreement():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert spearman(a, [10.0, 20.0, 25.0, 100.0, 1e6]) == (pytest.approx(1.0), 5)
    assert spearman(a, [5.0, 4.0, 3.0, 2.0, 1.0]) == (pytest.approx(-1.0), 5)


def test_spearman_with_a_tie_matches_the_hand_computed_value():
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): cov 4.5, var 4.5 and 5 -> rho = 3 / sqrt(10)
    rho, n = spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert n == 4 and rho == pytest.approx(3 / math.sqrt(10))


def test_spearman_skips_non_finite_and_refuses_too_few_or_constant():
    rho, n = spearman([1.0, None, 3.0, math.nan, 5.0, 6.0], [2.0, 9.0, 4.0, 1.0, math.inf, 8.0])
    assert n == 3 and rho == pytest.approx(1.0)  # blocks 0, 2, 5 only
    rho, n = spearman([1.0, 2.0, None], [1.0, 2.0, 3.0])
    assert n == 2 and math.isnan(rho)
    rho, n = spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert n == 3 and math.isnan(rho)


def test_orientation_flip_changes_the_sign_of_rho():
    diag = synthetic_diag()
    for layer, value in zip(diag["layers"], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]):
        layer["a"], layer["b"] = value, value
    diag["metrics"]["pair"] = {"fields": {"a": True, "b": True}}
    table = agreement_table(diag)
    i, j = table["fields"].index("a"), table["fields"].index("b")
    assert table["rho"][i][j] == pytest.approx(1.0)
    diag["metrics"]["pair"]["fields"]["b"] = False
    table = agreement_table(diag)
    assert table["rho"][i][j] == pytest.approx(-1.0)


def test_agreement_table_excludes_descriptive_fields_and_is_symmetric():
    table = agreement_table(synthetic_diag())
    fields = table["fields"]
    assert fields == ["removal_perplexity", "removal_delta_pct", "linear_r2", "grad_norm"]
    assert "delta_corr" not in fields
    for i in range(len(fields)):
        for j in range(len(fields)):
            assert table["n"][i][j] == table["n"][j][i]
            assert table["rho"][i][j] == pytest.approx(table["rho"][j][i], nan_ok=True)
    r, d = fields.index("removal_perplexity"), fields.index("removal_delta_pct")
    assert table["rho"][r][d] == pytest.approx(1.0) and table["n"][r][d] == 5
    # removal perplexity vs (negated) R^2 over blocks 0, 1, 4, 5:
    # removal ranks (4, 2, 1, 3); importance of R^2 ranks (4, 2, 1, 3) -> rho = 1.
    assert table["rho"][r][fields.index("linear_r2")] == pytest.approx(1.0)
    assert table["n"][r][fields.index("linear_r2")] == 4


# --- report --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, render_report(synthetic_diag(), out)


def test_render_report_writes_valid_pngs(report):
    out, paths = report
    names = {p.name for p in paths}
    assert names == {"metric_removal.png", "metric_linear-r2.png", "metric_delta-corr.png",
                     "metric_gradient.png", "all_metrics_ranks.png", "report.html"}
    assert all(p.parent == out and p.is_file() for p in paths)
    for path in paths:
        if path.suffix == ".png":
            data = path.read_bytes()
            assert data[:8] == PNG_SIGNATURE, path
            assert len(data) > 5_000, path


def test_report_html_has_facts_tables_and_embedded_images(report):
    out, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "tiny &lt;llama&gt; &amp; co" in page and "<llama>" not in page  # escaped
    assert "How linear a block is &lt;R^2&gt;." in page
    assert "27.6" in page and "2 × 16 tokens" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(img)[:8] == PNG_SIGNATURE for img in images)
    block_rows = re.findall(r"<tr><th>(\d+)</th>(.*?)</tr>", page)
    assert [int(i) for i, _ in block_rows] == list(range(6))
    row3 = dict(block_rows)["3"]
    assert ">inf</td>" in row3
    assert ">nan</td>" in dict(block_rows)["2"]
    assert ">—</td>" in dict(block_rows)["5"]  # delta_corr is null for the last block
    assert "(n=4)" in page  # removal vs R^2 share only 4 of 6 blocks


def test_report_agreement_table_leaves_out_descriptive_fields(report):
    out, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    agreement = page.split("<h2>Agreement between metrics</h2>")[1].split("<h2>")[0]
    assert "removal_perplexity" in agreement and "grad_norm" in agreement
    assert "delta_corr" not in agreement
