"""The CLI through main(argv): results on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
import transformers
import yaml

from layerwise.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_table_and_selection(capsys):
    code, out, _ = run(capsys, "layers", "--model", "tiny:llama", "--select", "1-2:mlp")
    assert code == 0
    assert "llama, 4 blocks at model.layers" in out
    rows = {line.split()[1]: line for line in out.splitlines() if re.match(r"block \d", line)}
    assert set(rows) == {"0", "1", "2", "3"}
    assert rows["1"].rstrip().endswith("~") and rows["0"].rstrip().endswith("0")
    assert re.search(r"selection '1-2:mlp': blocks 1-2 \(2 of 4\); trainable 49,152 of 181,312", out)


def test_layers_json(capsys):
    code, out, _ = run(capsys, "layers", "--model", "tiny:gpt2", "--select", "embed", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["num_blocks"] == 4 and data["head_tied"] is True
    assert sum(r["parameters"] for r in data["rows"]) == data["total_parameters"]
    assert data["selection"]["parameter_names"] == ["transformer.wpe.weight", "transformer.wte.weight"]


def test_exports_to_stdout_and_file(capsys, tmp_path):
    code, out, _ = run(capsys, "layers", "--model", "tiny:qwen2", "--select", "2", "--export", "axolotl")
    assert code == 0 and yaml.safe_load(out)["unfrozen_parameters"] == ["^model.layers.2..+$"]
    target = tmp_path / "lora.json"
    code, out, err = run(capsys, "layers", "--model", "tiny:qwen2", "--select", "2",
                         "--export", "peft", "--output", str(target))
    kwargs = json.loads(target.read_text())
    assert code == 0 and out == "" and kwargs["layers_to_transform"] == [2]
    assert "LoRA cannot adapt" in err  # biases and norms of block 2


def test_data_command_scores_perplexity(capsys):
    code, out, _ = run(capsys, "data", "--model", "tiny:llama", "--seq-len", "32", "--num-seqs", "2",
                       "--perplexity")
    data = json.loads(out)
    assert code == 0 and data["tokens"] == 64 and 50 < data["perplexity"] < 1000  # random model


def _one_line_error(code, out, err, pattern):
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["layers", "--model", "./nowhere"], r"^layerwise: error: model path \./nowhere does not exist"),
        (["train", "--model", "tiny:llama", "--layers", "1", "--task-option", "digits=abc"],
         r"option digits='abc' must be a whole number \(default 1\)"),
        (["eval", "--model", "tiny:llama", "--task-option", "ops=3"],
         r"ops='3': use one or more of"),
        (["layers", "--model", "tiny:bert"], r"unknown tiny family 'bert'; valid: tiny:"),
        (["layers", "--model", "tiny:llama", "--select", "9"], r"block 9 .* out of range.*4 blocks"),
        (["layers", "--model", "tiny:llama", "--select", ""], r"empty selection"),
        (["layers", "--model", "tiny:llama", "--select", "1-x"], r"malformed selection item '1-x'"),
        (["layers", "--model", "tiny:llama", "--select", "1:ffn"], r"unknown submodule filter 'ffn'"),
        (["layers", "--model", "tiny:llama", "--export", "peft"], r"--export needs a selection"),
        (["layers", "--model", "tiny:llama", "--select", "0:norms", "--export", "peft"],
         r"contains no module LoRA can adapt"),
        (["data", "--model", "tiny:llama", "--seq-len", "1024"], r"over the model's context of 512"),
        (["data", "--model", "tiny:llama", "--num-seqs", "100000"], r"too few for --num-seqs 100000"),
        (["layers", "--select"], r"expected one argument"),
        (["nosuchcommand"], r"invalid choice"),
    ],
)
def test_errors_are_one_line_exit_2(capsys, argv, pattern):
    _one_line_error(*run(capsys, *argv), pattern)


def test_data_file_errors(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _one_line_error(*run(capsys, "data", "--model", "tiny:llama", "--data", str(empty)), r"is empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no text field"}\n')
    _one_line_error(*run(capsys, "data", "--model", "tiny:llama", "--data", str(bad)),
                    r"line 1 has no field 'text'")
    _one_line_error(*run(capsys, "data", "--model", "tiny:llama", "--data", str(tmp_path / "x.txt")),
                    r"does not exist")


def test_not_a_causal_lm(capsys, tmp_path):
    config = transformers.DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    transformers.DistilBertModel(config).save_pretrained(tmp_path)
    _one_line_error(*run(capsys, "layers", "--model", str(tmp_path)), r"is not a causal LM")


def test_negative_selection_after_a_space(capsys):
    # '-2-' starts with '-': argparse alone would take it for an option.
    code, out, _ = run(capsys, "layers", "--model", "tiny:llama", "--select", "-2-", "--format", "json")
    assert code == 0 and json.loads(out)["selection"]["blocks"] == [2, 3]
