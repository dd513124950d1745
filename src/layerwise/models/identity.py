"""Which model a result file belongs to, so that a file from another model is refused.

Every file that feeds another command (diagnostics.json, a sweep's contribution.json and store,
tying.json) carries `identity`:

- `name`: what the model was loaded as (`embedded`, an HF id, a path, `tiny:llama`);
- `model_type`, `num_blocks`;
- `structure`: a fingerprint of the model's anatomy — the block list's path and, for every block
  and for embed / final norm / head, each parameter's local name and shape. It is computed from
  the `LayerMap`, so a meta-device build (no weights) gives the same value as the loaded model:
  the check runs *before* a model is loaded. Two models with the same structure are the same
  architecture at the same size;
- `weights`: a fingerprint of the values (the first 64 entries of every block's first matrix and
  of the embedding, rounded to bfloat16 so an fp32 and a bf16 load agree), or None on meta.

A file whose structure differs from the model's is refused in one line. A file with the same
structure but other weights (e.g. diagnostics of the base model used to train a fine-tuned copy)
is accepted with a warning naming both: the same architecture, measured on other weights.
"""

from __future__ import annotations

import hashlib
import logging

import torch

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap

log = logging.getLogger(__name__)


def structure_fingerprint(layers: LayerMap) -> str:
    h = hashlib.sha256()
    h.update(f"{layers.model_type}|{layers.blocks_path}|{layers.num_blocks}".encode())
    for i, block in enumerate(layers.blocks):
        for name, p in block.named_parameters(remove_duplicate=False):
            h.update(f"|{i}.{name}:{tuple(p.shape)}".encode())
    for part, modules in (("embed", layers.embed), ("norm", layers.norm), ("head", layers.head)):
        for path, module in sorted(modules.items()):
            for name, p in module.named_parameters():
                h.update(f"|{part}:{path}.{name}:{tuple(p.shape)}".encode())
    return h.hexdigest()[:16]


def weights_fingerprint(layers: LayerMap) -> str | None:
    tensors = [next(iter(b.parameters()), None) for b in layers.blocks]
    tensors += [p for m in layers.embed.values() for p in m.parameters()][:1]
    if any(t is not None and t.is_meta for t in tensors):
        return None
    h = hashlib.sha256()
    with torch.no_grad():
        for t in tensors:
            if t is None:
                continue
            sample = t.detach().reshape(-1)[:64].to("cpu", torch.bfloat16).view(torch.int16)
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(layers: LayerMap, name: str | None) -> dict:
    return {"name": name or "embedded", "model_type": layers.model_type,
            "num_blocks": layers.num_blocks, "structure": structure_fingerprint(layers),
            "weights": weights_fingerprint(layers)}


def describe(identity: dict) -> str:
    return (f"{identity.get('name')} ({identity.get('model_type')}, "
            f"{identity.get('num_blocks')} blocks)")


def check_identity(file_identity: dict | None, layers_or_identity, what: str) -> None:
    """Refuse `what` (a file) if it was made for a model of another structure; warn on other
    weights. Files without an identity (written before it existed) are checked by block count
    where they declare one (see selection/scores.py)."""
    if not file_identity or not isinstance(file_identity, dict):
        return
    current = (layers_or_identity if isinstance(layers_or_identity, dict)
               else model_identity(layers_or_identity, None))
    theirs, ours = file_identity.get("structure"), current.get("structure")
    if theirs and ours and theirs != ours:
        this = describe(current) if current.get("name") else f"{current.get('num_blocks')} blocks"
        raise LayerwiseError(f"{what} was made for {describe(file_identity)}, structure {theirs}; "
                             f"this model ({this}) has structure {ours}: a file from another model")
    w_theirs, w_ours = file_identity.get("weights"), current.get("weights")
    if w_theirs and w_ours and w_theirs != w_ours:
        log.warning("%s was measured on %s; this model has the same structure but other weights "
                    "(a fine-tuned or re-initialised copy?)", what, describe(file_identity))
