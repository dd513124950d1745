"""Log-likelihood scores of tokenized examples: held-out completion loss and preference accuracy.

Both take examples as `{"input_ids", "labels"}` (labels -100 where no loss is taken, as built by
`layerwise.data.chat.sft_tokens`), so the held-out loss is the training loss on rows the run never
saw, token for token. Batches are right-padded; padded positions carry no loss. The KV cache is
off (see `perplexity.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _batch(examples: list[dict], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        attention[i, :n] = 1
    return ids.to(device), labels.to(device), attention.to(device)


@torch.no_grad()
def token_logprob_sums(model, examples: list[dict], pad_id: int, batch_size: int = 8
                       ) -> list[tuple[float, int]]:
    """(sum of log p over the loss-carrying tokens, their count) for each example."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = []
    try:
        for start in range(0, len(examples), batch_size):
            ids, labels, attention = _batch(examples[start:start + batch_size], pad_id, device)
            logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits.float()
            target = labels[:, 1:]  # (B, T-1): token t is predicted from the tokens before it
            logp = -F.cross_entropy(logits[:, :-1].transpose(1, 2), target.clamp(min=0),
                                    reduction="none")  # (B, T-1)
            keep = target != IGNORE
            sums = (logp * keep).sum(dim=1)
            for s, c in zip(sums.tolist(), keep.sum(dim=1).tolist()):
                out.append((s, int(c)))
    finally:
        model.train(was_training)
    return out


def completion_loss(model, examples: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over every loss-carrying token of `examples`."""
    scores = token_logprob_sums(model, examples, pad_id, batch_size)
    total, count = sum(s for s, _ in scores), sum(c for _, c in scores)
    return -total / count if count else float("nan")
