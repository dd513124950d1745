"""The selection grammar resolved on a 30-block model (SmolLM2's depth), and every refusal."""

from __future__ import annotations

import json

import pytest

from layerwise.errors import LayerwiseError
from layerwise.models import discover_layers, load_model
from layerwise.selection import resolve_selection

R = lambda a, b: tuple(range(a, b + 1))  # noqa: E731  inclusive block range


@pytest.mark.parametrize(
    "spec, blocks",
    [
        ("10", (10,)),
        ("0,3,5", (0, 3, 5)),
        ("8-11", R(8, 11)),
        ("-1", (29,)),
        ("-4-", R(26, 29)),
        ("-3--1", R(27, 29)),
        ("25-", R(25, 29)),
        ("20%-80%", R(6, 23)),
        ("0%-100%", R(0, 29)),
        ("10%-15%", R(3, 4)),  # [3, 4.5): blocks 3 and 4 overlap it
        ("50%", (15,)),
        ("mid:1", (14,)),
        ("mid:2", (14, 15)),
        ("mid:4", R(13, 16)),
        ("mid:30", R(0, 29)),
        ("all", R(0, 29)),
        ("8-11,10-12", R(8, 12)),  # overlaps merge
        ("1+2:mlp", (1, 2)),
    ],
)
def test_block_specs(llama30, spec, blocks):
    selection = resolve_selection(llama30, spec)
    assert selection.blocks == blocks
    assert selection.parts == ()


def test_whole_blocks_select_every_parameter_of_exactly_those_blocks(llama30):
    selection = resolve_selection(llama30, "8-11")
    expected = {
        n for n, _ in llama30.named_parameters()
        if n.startswith("model.layers.") and n.split(".")[2] in {"8", "9", "10", "11"}
    }
    assert selection.names == expected


@pytest.mark.parametrize(
    "spec, suffixes",
    [
        ("8-11:mlp", {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"}),
        ("8-11:attn", {f"self_attn.{p}_proj.weight" for p in "qkvo"}),
        ("8-11:q_proj,v_proj", {"self_attn.q_proj.weight", "self_attn.v_proj.weight"}),
        ("8-11:norms", {"input_layernorm.weight", "post_attention_layernorm.weight"}),
    ],
)
def test_submodule_filters(llama30, spec, suffixes):
    selection = resolve_selection(llama30, spec)
    assert selection.blocks == R(8, 11)
    expected = {f"model.layers.{i}.{s}" for i in R(8, 11) for s in suffixes}
    assert selection.names == expected


def test_parts_and_tied_head(tiny):
    layers = discover_layers(tiny.model)
    for part in ("embed", "norm", "head"):
        selection = resolve_selection(layers, part)
        assert selection.blocks == () and part in selection.parts
        assert selection.names == set(layers.part_names(part))
    head = resolve_selection(layers, "head")
    if layers.head_tied:  # the head *is* the embedding matrix: selecting one selects both
        assert "embed" in head.parts
    combined = resolve_selection(layers, "embed,head,norm+0:mlp")
    assert combined.blocks == (0,) and set(combined.parts) == {"embed", "norm", "head"}


def test_moe_expert_numbers_are_not_layer_numbers():
    model = load_model("tiny:qwen2_moe").model
    selection = resolve_selection(model, "1:experts")
    assert selection.blocks == (1,)
    assert selection.names and all(n.startswith("model.layers.1.mlp.experts") for n in selection.names)


def _write_diagnostics(path, values, metric="removal_delta_pct"):
    path.write_text(json.dumps({"layers": [
        {"index": i, metric: v, "other": 0.0} for i, v in enumerate(values)
    ]}))
    return path


def test_top_and_bottom_from_a_result_file(llama30, tmp_path):
    values = [float(i % 7) for i in range(30)]  # peaks at 6, 13, 20, 27
    values[27] = float("nan")  # reported, never ranked
    f = _write_diagnostics(tmp_path / "diagnostics.json", values)
    assert resolve_selection(llama30, f"top:3@{f}:removal_delta_pct").blocks == (6, 13, 20)
    assert resolve_selection(llama30, f"bottom:2@{f}:removal_delta_pct").blocks == (0, 7)
    # a metric followed by a submodule filter
    sel = resolve_selection(llama30, f"top:1@{f}:removal_delta_pct:mlp")
    assert sel.blocks == (6,) and all(".mlp." in n for n in sel.names)
    csv = tmp_path / "scores.csv"
    csv.write_text("index,score\n" + "\n".join(f"{i},{30 - i}" for i in range(30)))
    assert resolve_selection(llama30, f"top:2@{csv}").blocks == (0, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty selection; valid items"),
        ("   ", "empty selection"),
        ("abc", "malformed selection item 'abc'.*valid items: N, A-B"),
        ("30", r"block 30 .* out of range: the model has 30 blocks \(valid 0..29"),
        ("-31", "block -31 .* out of range"),
        ("0,31", "block 31 .* out of range"),
        ("11-8", "empty range 11-8"),
        ("80%-20%", "depth range must satisfy"),
        ("0%-150%", "depth range must satisfy"),
        ("mid:0", "mid:K needs a positive block count"),
        ("mid:31", "mid:31 .* more than the 30 blocks"),
        ("1,,2", "stray ','"),
        ("1+", "empty group"),
        ("8-11:nosuch", "unknown submodule filter 'nosuch'.*valid: attn, mlp, norms"),
        ("embed:mlp", "applies to blocks, not to 'embed'"),
        ("top:3@/no/such/file.json", "result file /no/such/file.json does not exist"),
    ],
)
def test_bad_selections(llama30, spec, message):
    with pytest.raises(LayerwiseError, match=message):
        resolve_selection(llama30, spec)


def test_bad_result_files(llama30, tmp_path):
    f = _write_diagnostics(tmp_path / "d.json", [1.0] * 30)
    with pytest.raises(LayerwiseError, match="several metrics; name one.*valid: removal_delta_pct, other"):
        resolve_selection(llama30, f"top:3@{f}")
    with pytest.raises(LayerwiseError, match="no metric 'nope'"):
        resolve_selection(llama30, f"top:3@{f}:nope")
    short = _write_diagnostics(tmp_path / "s.json", [1.0, float("nan"), 2.0])
    with pytest.raises(LayerwiseError, match="finite 'removal_delta_pct' scores for only 2"):
        resolve_selection(llama30, f"top:3@{short}:removal_delta_pct")
    big = _write_diagnostics(tmp_path / "b.json", [1.0] * 40)
    with pytest.raises(LayerwiseError, match="scores block 30 but the model has 30 blocks"):
        resolve_selection(llama30, f"top:3@{big}:removal_delta_pct")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LayerwiseError, match="not valid JSON"):
        resolve_selection(llama30, f"top:3@{broken}")


def test_bias_filter_exists_only_where_biases_do():
    qwen2 = load_model("tiny:qwen2").model  # q/k/v projections carry biases
    sel = resolve_selection(qwen2, "1:bias")
    assert sel.names == {f"model.layers.1.self_attn.{p}_proj.bias" for p in "qkv"}
    with pytest.raises(LayerwiseError, match="unknown submodule filter 'bias'"):
        resolve_selection(load_model("tiny:llama").model, "1:bias")
