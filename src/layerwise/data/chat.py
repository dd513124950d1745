"""Chat templates and SFT tokenization: what the model sees, token for token, and which tokens
carry loss.

`sft_tokens` builds `input_ids` and `labels` exactly as TRL's `SFTTrainer` does for the same row
and tokenizer (a test compares the two token for token):
- standard text: the text plus EOS, tokenized as plain text;
- standard prompt-completion: prompt and prompt+completion+EOS tokenized apart; the completion
  starts where the two diverge (TRL's `common_prefix_length`);
- conversational prompt-completion: the prompt through the chat template with the generation
  prompt, prompt+completion through it without; the same divergence rule;
- conversational `messages`: the chat template; with `--loss-on completion`, the assistant turns.
  A template with `{% generation %}` markers marks them itself (TRL's `assistant_only_loss`);
  without markers (SmolLM2's template has none) each assistant turn is what rendering the
  conversation up to that turn adds after the generation prompt of the turns before it.

`--loss-on all` trains on every token (labels = input_ids). The result is handed to
`SFTTrainer` pre-tokenized, so the dry run, the held-out loss and the training see the same ids.
"""

from __future__ import annotations

from pathlib import Path

from layerwise.errors import LayerwiseError

LOSS_ON = ("completion", "all")
IGNORE = -100


def read_chat_template(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise LayerwiseError(f"--chat-template {path} does not exist (expected a .jinja file)")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LayerwiseError(f"--chat-template {path} is not UTF-8 text") from None
    if "messages" not in text:
        raise LayerwiseError(f"--chat-template {path} does not read `messages`: not a chat template")
    try:
        import jinja2

        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise LayerwiseError(f"--chat-template {path} line {exc.lineno}: {exc.message}") from None
    return text


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _ids(tokenizer, value, **kw) -> list[int]:
    if isinstance(value, list):
        out = tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **kw)
        return list(out["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def _prefix(a: list[int], b: list[int]) -> int:
    from trl.data_utils import common_prefix_length

    return common_prefix_length(a, b)


def _with_eos(text: str, eos: str | None) -> str:
    return text if eos is None or text.endswith(eos) else text + eos


def _assistant_mask(tokenizer, messages: list[dict], ids: list[int]) -> list[int]:
    """1 on the tokens of every assistant turn of `messages` (tokenized as `ids`)."""
    template = tokenizer.chat_template or ""
    if "{% generation %}" in template or "{%- generation %}" in template:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(out["assistant_masks"])
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _ids(tokenizer, messages[:i], add_generation_prompt=True) if i else []
        upto = _ids(tokenizer, messages[:i + 1])
        start, end = _prefix(before, upto), _prefix(upto, ids)
        for t in range(start, end):
            mask[t] = 1
    return mask


def sft_tokens(row: dict, tokenizer, loss_on: str = "completion") -> dict[str, list[int]]:
    """{"input_ids", "labels"} of one SFT row (text, messages or prompt+completion)."""
    eos = tokenizer.eos_token
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
            ids = _ids(tokenizer, prompt + completion)
        else:
            prompt_ids = _ids(tokenizer, prompt)
            ids = _ids(tokenizer, prompt + _with_eos(completion, eos))
        start = _prefix(prompt_ids, ids)
        mask = [0] * start + [1] * (len(ids) - start)
    elif "messages" in row:
        ids = _ids(tokenizer, row["messages"])
        mask = _assistant_mask(tokenizer, row["messages"], ids) if loss_on == "completion" else [1] * len(ids)
    else:
        ids = _ids(tokenizer, _with_eos(row["text"], eos))
        mask = [1] * len(ids)
    if loss_on == "all":
        mask = [1] * len(ids)
    return {"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, mask)]}


def prompt_text(prompt, tokenizer) -> str:
    """What the model is given to continue: a conversation through the chat template with the
    generation prompt (as TRL's GRPOTrainer renders it), a string as it is."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


def show_example(tokens: dict[str, list[int]], tokenizer) -> str:
    """The example as the model sees it, the loss-carrying spans in [[ ]] (a dry-run's view)."""
    out, run, carrying = [], [], None
    for tid, label in zip(tokens["input_ids"], tokens["labels"]):
        on = label != IGNORE
        if carrying is not None and on != carrying:
            text = tokenizer.decode(run)
            out.append(f"[[{text}]]" if carrying else text)
            run = []
        run.append(tid)
        carrying = on
    if run:
        text = tokenizer.decode(run)
        out.append(f"[[{text}]]" if carrying else text)
    return "".join(out)
