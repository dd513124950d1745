"""`sft_tokens` builds the ids and the loss mask exactly as TRL's own SFTTrainer does.

Each case hands the same raw row to a real `trl.SFTTrainer` (which tokenizes it itself) and to
`layerwise.data.chat.sft_tokens`, and compares input_ids and labels token for token: standard
text, standard prompt-completion, conversational prompt-completion, and a conversation whose
template marks the assistant turns with `{% generation %}` (TRL's assistant_only_loss). A
template without markers (SmolLM2's) falls back to rendering turn by turn, which must mark the
same tokens as the marked template does.
"""

from __future__ import annotations

import pytest
from datasets import Dataset

from layerwise.data.chat import IGNORE, show_example, sft_tokens
from layerwise.models import load_model
from tests.data.dataset_fixtures import CHATML, CHATML_GENERATION, rows

ROWS = {
    "text": rows("lm", 2)[1],
    "prompt-completion": rows("pc", 2)[1],
    "conversational prompt-completion": rows("pc_chat", 2)[1],
    "conversational messages": {"messages": [{"role": "system", "content": "Be brief."},
                                             *rows("messages", 2)[1]["messages"],
                                             {"role": "user", "content": "And twice that?"},
                                             {"role": "assistant", "content": "10"}]},
}


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny:llama", seed=0)
    loaded.tokenizer.chat_template = CHATML
    return loaded


def trl_tokens(loaded, row: dict, template: str, tmp_path, **config) -> dict:
    """What SFTTrainer itself builds for `row` (its prepared train_dataset's first row)."""
    from trl import SFTConfig, SFTTrainer

    loaded.tokenizer.chat_template = template
    row = {k: v for k, v in row.items() if k in ("text", "prompt", "completion", "messages")}
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_length=None,
                     dataset_num_proc=None, **config)
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=Dataset.from_list([row]),
                         processing_class=loaded.tokenizer)
    built = trainer.train_dataset[0]
    return {"input_ids": list(built["input_ids"]), "labels": list(built["labels"])}


@pytest.mark.parametrize("case", ["text", "prompt-completion", "conversational prompt-completion"])
def test_our_tokens_equal_sft_trainers(tiny, case, tmp_path):
    row = ROWS[case]
    theirs = trl_tokens(tiny, row, CHATML, tmp_path, completion_only_loss=True)
    ours = sft_tokens(row, tiny.tokenizer, "completion")
    assert ours["input_ids"] == theirs["input_ids"]
    assert ours["labels"] == theirs["labels"]
    if case != "text":  # the prompt carries no loss, the completion does
        assert ours["labels"][0] == IGNORE and ours["labels"][-1] != IGNORE


def test_loss_on_all_equals_sft_trainer_without_completion_only_loss(tiny, tmp_path):
    row = ROWS["prompt-completion"]
    theirs = trl_tokens(tiny, row, CHATML, tmp_path, completion_only_loss=False)
    ours = sft_tokens(row, tiny.tokenizer, "all")
    assert ours == theirs
    assert IGNORE not in ours["labels"]


def test_messages_with_generation_markers_equal_trl_assistant_only_loss(tiny, tmp_path):
    row = ROWS["conversational messages"]
    theirs = trl_tokens(tiny, row, CHATML_GENERATION, tmp_path, assistant_only_loss=True)
    ours = sft_tokens(row, tiny.tokenizer, "completion")  # the tokenizer now has the markers
    assert ours == theirs
    carrying = [t for t, label in zip(ours["input_ids"], ours["labels"]) if label != IGNORE]
    assert tiny.tokenizer.decode(carrying) == "2<|im_end|>\n10<|im_end|>\n"


def test_turn_by_turn_masks_equal_the_marked_template(tiny):
    """SmolLM2-style template, no markers: each assistant turn is found by rendering the
    conversation turn by turn, and must mark exactly what the marked template marks."""
    row = ROWS["conversational messages"]
    tiny.tokenizer.chat_template = CHATML_GENERATION
    marked = sft_tokens(row, tiny.tokenizer, "completion")
    tiny.tokenizer.chat_template = CHATML
    unmarked = sft_tokens(row, tiny.tokenizer, "completion")
    assert unmarked == marked
    shown = show_example(unmarked, tiny.tokenizer)
    assert "[[2<|im_end|>\n]]" in shown and "[[10<|im_end|>\n]]" in shown
    assert "[[" not in shown.split("assistant\n")[0]  # the system and user turns carry no loss


@pytest.mark.embedded
def test_smollm2_tokenizer_equals_sft_trainer(tmp_path):
    """The embedded model's real BPE tokenizer and chat template, conversational prompt-completion."""
    from layerwise.models.loading import load_tokenizer

    loaded = load_model("tiny:llama", seed=0)
    tok = load_tokenizer(None)
    loaded.model.resize_token_embeddings(len(tok))
    loaded = type(loaded)(model=loaded.model, tokenizer=tok, spec="tiny", source="tiny")
    row = ROWS["conversational prompt-completion"]
    theirs = trl_tokens(loaded, row, tok.chat_template, tmp_path, completion_only_loss=True)
    assert sft_tokens(row, tok, "completion") == theirs
