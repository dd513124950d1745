"""Update sparsity, rank and overlap on real checkpoints written by save_pretrained."""

from __future__ import annotations

import pytest
import torch

from layerwise.analysis.diff import diff_checkpoints, overlap
from layerwise.errors import LayerwiseError
from layerwise.models import load_model


def _save(model, path, **kw):
    model.save_pretrained(path, **kw)
    return path


@pytest.fixture
def pair(tmp_path):
    base = load_model("tiny:llama").model
    _save(base, tmp_path / "base")
    with torch.no_grad():
        w = base.model.layers[1].mlp.up_proj.weight  # (128, 64)
        w[:3, :5] += 1e-3  # 15 entries: a 3x5 block of equal steps, a rank-1 update
        base.model.layers[2].self_attn.q_proj.weight[0, 0] += 1e-7  # below the default tolerance
    _save(base, tmp_path / "tuned", max_shard_size="100KB")  # sharded on purpose
    return tmp_path


def test_sparsity_and_rank(pair):
    d = diff_checkpoints(pair / "base", pair / "tuned", tols=[1e-5, 0.0])
    total = sum(t.numel for t in d.tensors)
    assert d.sparsity(1e-5) == pytest.approx(1 - 15 / total)
    assert d.sparsity(0.0) == pytest.approx(1 - 16 / total)
    up = next(t for t in d.tensors if t.name == "model.layers.1.mlp.up_proj.weight")
    assert up.changed == {1e-5: 15, 0.0: 15} and up.rank == 1 and up.rank_rel == 1
    assert up.rank_fraction == pytest.approx(1 / 64) and up.effective_rank == pytest.approx(1.0, rel=1e-4)
    untouched = next(t for t in d.tensors if t.name == "model.layers.0.mlp.up_proj.weight")
    assert untouched.changed[0.0] == 0 and untouched.rank == 0


def test_bf16_checkpoints_are_diffed_in_fp32(tmp_path):
    base = load_model("tiny:llama", dtype="bfloat16").model
    _save(base, tmp_path / "a")
    _save(base, tmp_path / "b")
    d = diff_checkpoints(tmp_path / "a", tmp_path / "b", tols=[0.0])
    assert d.sparsity(0.0) == 1.0


def test_overlap_against_chance(pair, tmp_path):
    other = load_model("tiny:llama").model
    with torch.no_grad():
        other.model.layers[1].mlp.up_proj.weight[:3, :2] += 1e-3  # 6 entries, all inside run A's 15
        other.model.layers[3].mlp.up_proj.weight[0, :4] += 1e-3  # 4 entries outside
    _save(other, tmp_path / "other")
    o = overlap(pair / "base", pair / "tuned", tmp_path / "other")
    assert (o["updated_a"], o["updated_b"], o["both"]) == (15, 10, 6)
    assert o["o1"] == pytest.approx(6 / 15) and o["o2"] == pytest.approx(6 / 10)
    assert o["o1_rand"] == pytest.approx(10 / o["entries"])


def test_bad_input(pair, tmp_path):
    with pytest.raises(LayerwiseError, match="tolerances must be >= 0"):
        diff_checkpoints(pair / "base", pair / "tuned", tols=[-1e-5])
    with pytest.raises(LayerwiseError, match="does not exist"):
        diff_checkpoints(pair / "base", tmp_path / "nowhere")
    from tests.conftest import fresh_tiny

    _save(fresh_tiny("llama", hidden_size=32, intermediate_size=64), tmp_path / "qwen")
    with pytest.raises(LayerwiseError, match=r"differ in shape at tensor lm_head.weight: \(260, 64\) vs \(260, 32\)"):
        diff_checkpoints(pair / "base", tmp_path / "qwen")


def test_a_missing_tensor_is_reported(pair, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(pair / "base" / "model.safetensors")
    dropped = tensors.pop("model.layers.3.mlp.down_proj.weight")
    save_file(tensors, tmp_path / "partial.safetensors")
    d = diff_checkpoints(pair / "base" / "model.safetensors", tmp_path / "partial.safetensors")
    assert d.missing == {"tuned": ["model.layers.3.mlp.down_proj.weight"], "base": []}
    assert dropped.numel() not in (t.numel for t in d.tensors if "layers.3.mlp.down" in t.name)


def test_grouping_per_block_and_module(pair):
    from layerwise.analysis.summary import block_index_map, group_rows

    d = diff_checkpoints(pair / "base", pair / "tuned")
    groups = block_index_map(pair / "base")
    assert groups["model.layers.1.mlp.up_proj.weight"] == ("block 1", "mlp.up_proj")
    by_block = {r["group"]: r for r in group_rows(d, groups, "block")}
    assert list(by_block)[:4] == ["block 0", "block 1", "block 2", "block 3"]
    n1 = by_block["block 1"]["entries"]
    assert by_block["block 1"]["sparsity@1e-05"] == pytest.approx(1 - 15 / n1)
    assert by_block["block 0"]["sparsity@1e-05"] == 1.0
    by_module = {r["group"]: r for r in group_rows(d, groups, "module")}
    assert by_module["mlp.up_proj"]["sparsity@1e-05"] < 1.0 and by_module["embed"]["sparsity@1e-05"] == 1.0


def test_compare_command(pair, tmp_path, capsys):
    import json

    from tests.cli.test_cli import _one_line_error, run

    code, out, err = run(capsys, "compare", str(pair / "base"), str(pair / "tuned"), str(pair / "base"),
                         "--tol", "1e-5,0", "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    assert "groups with changed entries at tol 1e-05: blocks 1\n" in out
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert doc["runs"][1]["global_sparsity"] == {"1e-05": 1.0, "0": 1.0}
    assert doc["overlap"][0]["updated_b"] == 0
    assert (tmp_path / "cmp" / "run0_blocks.csv").read_text().startswith("group,entries,")
    code, out, err = run(capsys, "compare", str(pair / "base"), str(pair / "tuned"), "--tol", "-1")
    _one_line_error(code, out, err, r"tolerance -1.0 is invalid: tolerances must be >= 0")


@pytest.mark.parametrize("shape, k", [((64, 32), 5), ((20, 90), 20), ((48, 48), 1)])
def test_rank_matches_torch_matrix_rank(shape, k):
    from layerwise.analysis.diff import _rank_stats

    g = torch.Generator().manual_seed(k)
    m = torch.randn(shape[0], k, generator=g) @ torch.randn(k, shape[1], generator=g)
    m += 1e-9 * torch.randn(shape, generator=g)  # numerical dust below the default tolerance
    rank, rank_rel, eff = _rank_stats(m)
    assert rank == int(torch.linalg.matrix_rank(m)) == k
    assert rank_rel == k and 1 <= eff <= k * 1.001


def test_magnitude_ratio_flags_updates_that_only_land_near_zero(tmp_path, capsys):
    from tests.cli.test_cli import run

    model = load_model("tiny:llama").model
    _save(model, tmp_path / "base")
    w = model.model.layers[1].mlp.up_proj.weight  # (128, 64)
    with torch.no_grad():
        small = w.abs() < w.abs().quantile(0.05)  # the 5% of entries nearest zero
        w[small] += 1e-3
    _save(model, tmp_path / "near-zero")
    with torch.no_grad():
        w[small] -= 1e-3
        anywhere = torch.zeros_like(small)
        anywhere.view(-1)[::20] = True  # every 20th entry, whatever its size
        w[anywhere] += 1e-3
    _save(model, tmp_path / "anywhere")
    near, spread = (diff_checkpoints(tmp_path / "base", tmp_path / n, ranks=False) for n in ("near-zero", "anywhere"))
    base_w = load_model("tiny:llama").model.model.layers[1].mlp.up_proj.weight.detach()
    expected = float(base_w.abs()[small].mean() / base_w.abs().mean())
    up = next(t for t in near.tensors if t.name == "model.layers.1.mlp.up_proj.weight")
    assert up.magnitude_ratio == pytest.approx(expected, rel=1e-4) and expected < 0.1
    assert 0.8 < spread.magnitude_ratio < 1.2
    # the global ratio is over all tensors: the same changed entries, against every entry's mean
    assert near.magnitude_ratio < 0.2
    code, out, _ = run(capsys, "compare", str(tmp_path / "base"), str(tmp_path / "near-zero"),
                       str(tmp_path / "anywhere"), "--no-rank")
    assert code == 0 and out.count("changed entries sit near zero") == 1
    assert diff_checkpoints(tmp_path / "base", tmp_path / "base").magnitude_ratio is None


def test_checkpoint_reads_exactly_what_safetensors_reads(tmp_path, pair):
    from safetensors.torch import load_file, save_file

    from layerwise.analysis.checkpoints import Checkpoint

    tensors = {"a": torch.randn(3, 5).to(torch.bfloat16), "b": torch.randn(7, dtype=torch.float16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 4), "mask": torch.tensor([True, False, True])}
    save_file(tensors, tmp_path / "mixed.safetensors")
    ck = Checkpoint(tmp_path / "mixed.safetensors")
    for name, t in load_file(tmp_path / "mixed.safetensors").items():
        assert ck.raw(name).dtype == t.dtype and torch.equal(ck.raw(name), t), name
        assert ck.shape(name) == tuple(t.shape)
    assert ck.tensor("a").dtype == torch.float32
    sharded = Checkpoint(pair / "tuned")  # several shards + an index
    merged = {}
    for f in sorted((pair / "tuned").glob("*.safetensors")):
        merged.update(load_file(f))
    assert len(sharded.names) == len(merged) > 1
    assert all(torch.equal(sharded.raw(n), merged[n]) for n in sharded.names)
    data = (tmp_path / "mixed.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(LayerwiseError, match="cut.safetensors is not a readable safetensors file: tensor .* outside"):
        Checkpoint(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(LayerwiseError, match="junk.safetensors is not a readable safetensors file: header length"):
        Checkpoint(tmp_path / "junk.safetensors")


def test_compare_of_identical_checkpoints_is_a_report_not_a_crash(pair, tmp_path, capsys):
    from tests.cli.test_cli import run

    out = tmp_path / "same"
    code, stdout, err = run(capsys, "compare", str(pair / "base"), str(pair / "base"), "--out", str(out))
    assert code == 0, err
    assert "Traceback" not in err
    assert "update sparsity 1.0000" in stdout
    assert "nothing changed at tol 1e-05 (sparsity 1.0): the checkpoints match" in stdout
    assert "nothing changed at tol 1e-05 (sparsity 1.0)" in (out / "report.html").read_text()
    assert (out / "sparsity_blocks.png").is_file()
    assert not (out / "rank_hist.png").exists()  # nothing changed: no ranks to draw


def test_a_tied_compact_checkpoint_compares_equal_to_its_full_form(tmp_path, capsys):
    from layerwise.models.arch import discover_layers
    from layerwise.models.tying import TiedBlocks, save_tied
    from tests.cli.test_cli import run

    loaded = load_model("tiny:llama", seed=2)
    TiedBlocks(loaded.model, discover_layers(loaded.model).blocks).apply([0, 0, 0, 3])
    save_tied(loaded.model, loaded.tokenizer, tmp_path / "full", [0, 0, 0, 3])
    save_tied(loaded.model, loaded.tokenizer, tmp_path / "compact", [0, 0, 0, 3], compact=True)
    d = diff_checkpoints(tmp_path / "full", tmp_path / "compact", tols=[0.0])
    assert d.sparsity(0.0) == 1.0
    assert d.missing == {"tuned": [], "base": []}  # the compact form lists every tensor
    assert {t.name for t in d.tensors} >= {"model.layers.1.mlp.up_proj.weight",
                                           "model.layers.2.self_attn.q_proj.weight"}


def test_files_that_are_not_checkpoints_or_json_are_named_for_what_they_are(tmp_path):
    from layerwise.analysis.checkpoints import Checkpoint
    from layerwise.fileio import read_json

    binary = tmp_path / "diag.json"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(LayerwiseError, match=r"JSON file .*diag.json is not UTF-8 text \(a binary file\?\)"):
        read_json(binary)
    with pytest.raises(LayerwiseError, match="JSON file .* is a directory; expected a file"):
        read_json(tmp_path)
    with pytest.raises(LayerwiseError, match="does not exist"):
        read_json(tmp_path / "nothing.json")
    with pytest.raises(LayerwiseError, match="is a file but not a .safetensors file"):
        Checkpoint(binary)
    fake = tmp_path / "model.safetensors"
    fake.write_text("hello")
    with pytest.raises(LayerwiseError, match="not a readable safetensors file"):
        Checkpoint(fake)


def test_checkpoints_that_share_no_tensor_are_refused_before_any_output(tmp_path, capsys):
    from tests.cli.test_cli import _one_line_error, run

    _save(load_model("tiny:llama").model, tmp_path / "llama")
    _save(load_model("tiny:gpt2").model, tmp_path / "gpt2")
    capsys.readouterr()  # the saving's own progress output
    code, out, err = run(capsys, "compare", str(tmp_path / "llama"), str(tmp_path / "gpt2"),
                         "--out", str(tmp_path / "cmp"))
    _one_line_error(code, out, err, r"share no tensor name .* checkpoints of different models")
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())
