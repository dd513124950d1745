"""Stopping a run cleanly, and checkpoints that are either complete or ignored.

- `GracefulStop`: while training, SIGINT (Ctrl-C) and SIGTERM ask the Trainer to stop after the
  current step and to save a checkpoint there (a second Ctrl-C aborts at once, without one).
  Outside training (model loading, scoring) the same signals raise `RunInterrupted`, so the run
  is still recorded as "interrupted" instead of staying "running" forever.
- `CheckpointSeal`: the Trainer writes `checkpoint-N/` (weights, optimizer, scheduler, RNG states,
  trainer state with the data position) in place; once it has finished, this callback adds our
  own state (the logged history) and then a `COMPLETE` marker, written last and atomically. A
  checkpoint without the marker (the process died while writing it) is never resumed from.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path

from transformers import TrainerCallback

from layerwise.fileio import atomic_write_text, json_safe

log = logging.getLogger(__name__)
STATE_FILE = "layerwise_state.json"
MARKER = "COMPLETE"


class RunInterrupted(Exception):
    """A signal arrived while no training step was running (or a second Ctrl-C during one)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class GracefulStop(TrainerCallback):
    """Turns SIGINT/SIGTERM into "save a checkpoint after this step and stop"."""

    def __init__(self):
        self.requested: int | None = None  # the signal number, once one arrived
        self.training = False
        self._old: dict[int, object] = {}

    # --- signal handling -------------------------------------------------------------------
    def install(self) -> "GracefulStop":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only (e.g. a Ray worker thread)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()
        return False

    def _handle(self, signum, frame):
        if not self.training or self.requested is not None:
            self.requested = signum
            raise RunInterrupted(signum)
        self.requested = signum
        print(f"\nlayerwise: {signal.Signals(signum).name}: stopping after the current step and "
              "saving a checkpoint (Ctrl-C again to abort without one)", file=sys.stderr, flush=True)

    # --- trainer callback ------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kw):
        self.training = True

    def on_step_end(self, args, state, control, **kw):
        if _any_rank(self.requested is not None):
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self.training = False


def _any_rank(flag: bool) -> bool:
    """`flag` on any process of a multi-process run, so that every rank stops at the same step
    (one that stopped alone would leave the others waiting in a collective)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class CheckpointSeal(TrainerCallback):
    """Adds our state and the COMPLETE marker to each checkpoint the Trainer has written."""

    def __init__(self, recorder):
        self.recorder = recorder

    def on_save(self, args, state, control, model=None, **kw):
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not ckpt.is_dir():
            return
        if model is not None:
            keep_trainable_only(model, ckpt)
        doc = {"step": state.global_step, "history": self.recorder.history}
        atomic_write_text(ckpt / STATE_FILE, json.dumps(json_safe(doc)) + "\n")
        atomic_write_text(ckpt / MARKER, f"{state.global_step}\n")
        log.info("checkpoint at step %d: %s", state.global_step, ckpt)


def keep_trainable_only(model, ckpt: Path) -> None:
    """Replace the full weights the Trainer wrote into `ckpt` by the trainable tensors alone.

    A block-only run changes a few percent of the model; the frozen rest is what `--resume` loads
    again from the run's own `--model` before the checkpoint goes on top (the Trainer loads a
    checkpoint's weights with strict=False). SmolLM2 with one block: 540 MB -> 14 MB per
    checkpoint. Full training and LoRA (the Trainer saves only the adapter) are left as written.
    """
    from safetensors.torch import save_file

    if hasattr(model, "disable_adapter"):  # PEFT: already adapter-only
        return
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if not trainable or len(trainable) == len(params):
        return
    state = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in params.items()
             if n in trainable}
    tmp = ckpt / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "layerwise": "trainable tensors only"})
    tmp.chmod(0o644)  # as the Trainer's own files
    for old in [*ckpt.glob("model*.safetensors"), ckpt / "model.safetensors.index.json"]:
        if old.exists():
            old.unlink()
    tmp.replace(ckpt / "model.safetensors")


def checkpoint_history(ckpt: Path) -> list[dict]:
    """The logged history saved with a checkpoint (empty if none)."""
    path = ckpt / STATE_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("history", [])
