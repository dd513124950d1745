"""`layerwise compare` through main(argv): a real single-block run checked, bf16 rounding, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from layerwise.models import load_model
from tests.cli.test_cli import _one_line_error, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_task):
    """A base checkpoint and two real `layerwise train --layers 2` runs (seeds 0 and 1) from it."""
    root = tmp_path_factory.mktemp("compare")
    loaded = load_model("tiny:llama")
    loaded.model.save_pretrained(root / "base")
    loaded.tokenizer.save_pretrained(root / "base")
    from layerwise.cli.main import main

    for seed in (0, 1):
        code = main(["train", "--model", str(root / "base"), "--task", toy_task, "--layers", "2",
                     "--steps", "2", "--batch-size", "4", "--n-train", "8", "--eval-n", "2", "-q",
                     "--lr", "1e-2", "--seed", str(seed), "--out", str(root / f"run{seed}")])
        assert code == 0
    return root


def test_single_block_run_is_checked_and_reported(capsys, trained, tmp_path):
    code, out, err = run(capsys, "compare", str(trained / "base"), str(trained / "run0" / "model"),
                         str(trained / "run1" / "model"), "--tol", "1e-5,0", "--out", str(tmp_path))
    assert code == 0, err
    assert "groups with changed entries at tol 1e-05: blocks 2\n" in out
    assert out.count("selection 2: all ") == 2  # read from each run's metrics.json
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert [r["label"] for r in doc["runs"]] == ["run0", "run1"]
    run0 = doc["runs"][0]
    assert run0["selection_check"]["ok"] and run0["selection_check"]["changed_outside"] == 0
    blocks = {r["group"]: r for r in run0["blocks"]}
    assert blocks["block 2"]["sparsity@1e-05"] < 0.5
    assert all(r["sparsity@0"] == 1.0 for g, r in blocks.items() if g != "block 2")
    total = sum(r["entries"] for r in run0["blocks"])
    changed = sum(r["entries"] * (1 - r["sparsity@1e-05"]) for r in run0["blocks"])
    assert run0["global_sparsity"]["1e-05"] == pytest.approx(1 - changed / total)
    # SGD-like updates of full matrices: every updated 2-D matrix is close to full rank here
    ranks = [t["rank_fraction"] for t in run0["tensors"]
             if t["rank_fraction"] is not None and t["sparsity@1e-05"] < 1]
    assert len(ranks) == 7 and min(ranks) > 0
    (o,) = doc["overlap"]
    assert o["o1_rand"] == pytest.approx(1 - o["sparsity_b"]) and 0 < o["o1"] <= 1
    assert doc["overlap_matrix"]["o1"][0][1] == pytest.approx(o["o1"])
    assert doc["overlap_matrix"]["o1"][1][0] == pytest.approx(o["o2"])
    for name in ("sparsity_blocks.png", "sparsity_modules.png", "rank_hist.png", "overlap.png",
                 "overlap.csv", "run0_tensors.csv", "run1_blocks.csv", "run0_modules.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "2: all changed entries inside" in page


def test_expect_layers_fails_when_entries_change_outside(capsys, trained):
    code, out, err = run(capsys, "compare", str(trained / "base"), str(trained / "run0" / "model"),
                         "--expect-layers", "0-1", "--no-rank")
    assert code == 1
    assert "changed entries OUTSIDE it, in model.layers.2." in out
    assert "--expect-layers 0-1: changed entries outside the selection in run0" in err


def test_bf16_checkpoint_is_diffed_against_the_rounded_base(capsys, tmp_path):
    base = load_model("tiny:llama").model
    base.save_pretrained(tmp_path / "base")
    tensors = {k: v.to(torch.bfloat16) for k, v in load_file(tmp_path / "base" / "model.safetensors").items()}
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name][0, 0] += 1.0  # the only real update of this "bf16 run"
    (tmp_path / "bf16").mkdir()
    save_file(tensors, tmp_path / "bf16" / "model.safetensors", metadata={"format": "pt"})
    code, out, err = run(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "bf16"),
                         "--tol", "0", "--no-rank", "--out", str(tmp_path / "auto"))
    assert code == 0, err
    doc = json.loads((tmp_path / "auto" / "compare.json").read_text())
    (r,) = doc["runs"]
    assert r["tuned_dtypes"] == ["bfloat16"] and r["base_rounded_to"] == ["bfloat16"]
    total = sum(t["entries"] for t in r["tensors"])
    assert r["global_sparsity"]["0"] == pytest.approx(1 - 1 / total)
    assert "base rounded to bfloat16 first" in out
    code, out, err = run(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "bf16"),
                         "--tol", "0", "--no-rank", "--rounding", "none")
    raw = float(out.split("update sparsity ")[1].split(" ")[0])
    assert raw < 0.1  # without rounding, the bf16 cast alone "changes" almost every entry


def test_rounding_both_sides_to_bf16_hides_small_fp32_updates(capsys, tmp_path):
    base = load_model("tiny:llama").model
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        for p in base.parameters():
            p.add_(1e-7 * torch.sign(torch.randn_like(p)))  # far below bf16 resolution
        base.model.layers[0].mlp.up_proj.weight[0, 0] += 0.5
    base.save_pretrained(tmp_path / "tuned")
    code, out, _ = run(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "tuned"), "--tol", "0",
                       "--no-rank")
    assert float(out.split("update sparsity ")[1].split(" ")[0]) < 0.01  # fp32: dense
    code, out, _ = run(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "tuned"), "--tol", "0",
                       "--no-rank", "--rounding", "bfloat16")
    assert float(out.split("update sparsity ")[1].split(" ")[0]) > 0.99  # bf16: nearly all gone


def test_bad_input(capsys, trained, tmp_path):
    from tests.conftest import fresh_tiny

    fresh_tiny("llama", hidden_size=32, intermediate_size=64).save_pretrained(tmp_path / "other")
    base, run0 = str(trained / "base"), str(trained / "run0" / "model")
    _one_line_error(*run(capsys, "compare", base, str(tmp_path / "other")),
                    r"differ in shape at tensor lm_head.weight")
    _one_line_error(*run(capsys, "compare", base, run0, "--tol=-1e-5"), r"tolerances must be >= 0")
    _one_line_error(*run(capsys, "compare", base, run0, "--tol", "x"), r"--tol 'x': expected")
    _one_line_error(*run(capsys, "compare", base, str(tmp_path / "nope")), r"nope does not exist")
    _one_line_error(*run(capsys, "compare", base, run0, "--labels", "a,b"), r"--labels gives 2 names for 1")
    _one_line_error(*run(capsys, "compare", base, run0, "--expect-layers", "9"), r"block 9 .*out of range")
    (tmp_path / "empty").mkdir()
    _one_line_error(*run(capsys, "compare", base, str(tmp_path / "empty")), r"holds no .safetensors")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a safetensors file")
    _one_line_error(*run(capsys, "compare", base, str(tmp_path / "bad")), r"not a readable safetensors")


def test_lora_merged_run_changes_only_attention_with_rank_at_most_r(capsys, trained, toy_task, tmp_path):
    from layerwise.cli.main import main

    code = main(["train", "--model", str(trained / "base"), "--task", toy_task, "--lora", "--rank", "2",
                 "--lora-layers", "1-2", "--lora-budget", "per-layer", "--merge", "--steps", "2",
                 "--batch-size", "4", "--n-train", "8", "--eval-n", "2", "-q", "--lr", "5e-2",
                 "--out", str(tmp_path / "lora")])
    assert code == 0
    capsys.readouterr()
    code, out, err = run(capsys, "compare", str(trained / "base"), str(tmp_path / "lora" / "merged"),
                         "--tol", "0", "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    changed = [t for t in doc["runs"][0]["tensors"] if t["sparsity@0"] < 1]
    assert changed and all(t["tensor"].split(".")[2] in ("1", "2") and ".self_attn." in t["tensor"]
                           for t in changed), [t["tensor"] for t in changed]
    assert all(1 <= t["rank"] <= 2 for t in changed)  # a merged rank-2 LoRA update has rank <= 2


def test_run_directories_and_adapters(capsys, trained, toy_task, tmp_path):
    from layerwise.cli.main import main

    code, out, err = run(capsys, "compare", str(trained / "base"), str(trained / "run0"), "--no-rank")
    assert code == 0, err  # a run directory stands for RUN/model, labelled by the run
    assert out.startswith("run0: update sparsity") and "selection 2: all " in out
    code = main(["train", "--model", str(trained / "base"), "--task", toy_task, "--lora", "--rank", "2",
                 "--steps", "1", "--batch-size", "4", "--n-train", "8", "--eval-n", "2", "-q",
                 "--out", str(tmp_path / "lora")])
    assert code == 0
    capsys.readouterr()
    _one_line_error(*run(capsys, "compare", str(trained / "base"), str(tmp_path / "lora")),
                    r"lora/model is a PEFT adapter, not a full checkpoint: compare the merged model")


def test_mask_from_a_run_agrees_with_compare(capsys, trained, toy_task, tmp_path):
    from layerwise.cli.main import main

    code = main(["train", "--model", str(trained / "base"), "--task", toy_task, "--full", "--steps", "2",
                 "--batch-size", "4", "--n-train", "8", "--eval-n", "2", "-q", "--lr", "1e-2",
                 "--mask-from", f"{trained / 'base'},{trained / 'run0'}", "--out", str(tmp_path / "masked")])
    assert code == 0
    out = capsys.readouterr().out
    sub = json.loads((tmp_path / "masked" / "metrics.json").read_text())["subnetwork"]
    ref = json.loads((trained / "run0" / "metrics.json").read_text())
    assert sub["reference"] == str(trained / "run0" / "model")
    assert sub["reference_accuracy"] == ref["final"]["accuracy"] and "its accuracy" in out
    code, out, err = run(capsys, "compare", str(trained / "base"), str(trained / "run0"),
                         str(tmp_path / "masked"), "--no-rank", "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    full, masked = doc["runs"]
    changed = sum(r["entries"] * (1 - r["sparsity@1e-05"]) for r in full["blocks"])
    assert sub["mask_entries"] == round(changed)  # the mask is what compare calls changed
    assert masked["selection_check"] is None  # a --full run: nothing to check against
    o = doc["overlap"][0]
    assert o["o2"] == 1.0  # every entry the masked run changed lies in the full run's changed set


def test_rewriting_an_out_dir_leaves_no_stale_files(capsys, trained, tmp_path):
    base, run0, run1 = str(trained / "base"), str(trained / "run0"), str(trained / "run1")
    assert run(capsys, "compare", base, run0, run1, "--out", str(tmp_path))[0] == 0
    assert (tmp_path / "rank_hist.png").exists()
    assert (tmp_path / "run1_blocks.csv").exists() and (tmp_path / "overlap.png").exists()
    assert run(capsys, "compare", base, run0, "--no-rank", "--out", str(tmp_path))[0] == 0
    assert not (tmp_path / "run1_blocks.csv").exists() and not (tmp_path / "overlap.png").exists()
    assert not (tmp_path / "rank_hist.png").exists() and not (tmp_path / "overlap.csv").exists()
    assert (tmp_path / "run0_blocks.csv").exists()
    assert "<th></th>" not in (tmp_path / "report.html").read_text()
