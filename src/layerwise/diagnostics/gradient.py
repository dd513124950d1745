"""`gradient`: how strongly the language-modelling loss on the text pulls on each block.

One forward and backward pass over the windows (mean next-token NLL, gradients accumulated over
batches), with every parameter temporarily trainable. Per block:
- `gradient_norm` = sqrt(sum over the block's parameters of g^2);
- `taylor_score` = sum |theta * g|, the first-order Taylor estimate of the loss change if the
  block's parameters were zeroed (as in pruning literature).
`requires_grad`, `.grad` and train/eval mode are restored afterwards.
"""

from __future__ import annotations

import torch

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric


@register_metric(
    "gradient", {"gradient_norm": True, "taylor_score": True},
    "per-block gradient norm of the LM loss on the text, and Taylor score sum |theta * grad|",
)
def gradient_metric(ctx: DiagnosticContext) -> MetricResult:
    model, windows = ctx.model, ctx.windows
    params = list(model.parameters())
    saved_flags = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params]
    was_training = model.training
    device = params[0].device
    tokens = windows[:, 1:].numel()
    try:
        model.eval()  # no dropout: the gradient of the model as it is
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        total = 0.0
        for start in range(0, windows.shape[0], ctx.options.batch_size):
            ids = windows[start:start + ctx.options.batch_size].to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            ) / tokens  # so the accumulated gradient is that of the mean NLL
            loss.backward()
            total += loss.item()
        norms, taylor = [], []
        for block in ctx.layers.blocks:
            grads = [(p, p.grad) for p in block.parameters() if p.grad is not None]
            norms.append(sum(g.float().pow(2).sum() for _, g in grads).sqrt().item() if grads else 0.0)
            taylor.append(sum((p.float() * g.float()).abs().sum() for p, g in grads).item() if grads else 0.0)
    finally:
        for p, flag, grad in zip(params, saved_flags, saved_grads):
            p.grad = grad
            p.requires_grad_(flag)
        model.train(was_training)
    return MetricResult(
        per_block={"gradient_norm": norms, "taylor_score": taylor}, summary={"mean_nll": total}
    )
