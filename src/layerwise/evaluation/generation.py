"""Batched text generation for evaluation: left-padded, greedy by default, deterministic.

Evaluation and multi-turn episodes both go through `generate_texts`, so a model is always asked
the same way. Decoder-only models need left padding for batched generation; the tokenizer's
padding side is restored afterwards.
"""

from __future__ import annotations

import torch


def ensure_pad_token(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   batch_size: int = 16, do_sample: bool = False,
                   temperature: float = 1.0, add_special_tokens: bool = True) -> list[str]:
    """The completion of each prompt (the new text only), in order. A prompt rendered by a chat
    template already holds its special tokens: pass `add_special_tokens=False` (as TRL does)."""
    ensure_pad_token(tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          do_sample=do_sample)
            if do_sample:
                kwargs["temperature"] = temperature
            else:  # greedy: clear sampling knobs a checkpoint's generation_config may carry
                kwargs.update(temperature=None, top_p=None, top_k=None)
            ids = model.generate(**enc, **kwargs)  # (B, T_prompt + T_new)
            new = ids[:, enc["input_ids"].shape[1]:]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out
