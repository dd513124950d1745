"""Our behaviour inside TRL's trainers, added as `TrainerCallback`s (never by subclassing).

- `RunRecorder`: the history of logged values, per-step wall time, tokens seen, and the peak
  memory — what metrics.json and the training curves are made of.
- `NaNGuard`: keeps a copy of the trainable weights after every step whose loss and weights are
  finite; on a NaN/inf loss it puts that copy back and stops the run, which is then marked failed
  (the saved checkpoint is the last good one).
- `LiveProgress`: one progress bar with the running loss, or the reward for RL.
- `EvalCurve`: the held-out score every N steps (`--eval-every`), for a learning curve; the
  random state is put back afterwards, so the run trains exactly as it would without it.
- `SignalWatch`: RL steps without a learning signal (every group's rewards equal, so every
  advantage and the gradient are zero): a warning while it happens, a count for metrics.json.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

REWARD_KEYS = ("reward", "rewards/mean")
log = logging.getLogger(__name__)


def without_signal(logs: dict) -> bool | None:
    """None: not a group-relative RL log; True: no group had two different rewards."""
    frac = logs.get("frac_reward_zero_std")
    if not isinstance(frac, (int, float)):
        return None
    grad = logs.get("grad_norm")
    return frac >= 1.0 and (not isinstance(grad, (int, float)) or grad == 0.0)


class SignalWatch(TrainerCallback):
    """Counts logged RL steps whose every group had equal rewards; warns at the third in a row."""

    AFTER = 3

    def __init__(self):
        self.logged = self.silent = self.run = 0
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kw):
        flag = without_signal(logs or {})
        if flag is None:
            return
        self.logged += 1
        self.silent += int(flag)
        self.run = self.run + 1 if flag else 0
        if self.run >= self.AFTER and not self.warned:
            self.warned = True
            log.warning("no learning signal for %d steps in a row (step %d): in every group all "
                        "completions got the same reward, so every advantage and the gradient "
                        "are zero and the policy cannot move; the task may be too hard or too "
                        "easy for the model (try more --num-generations, a higher --temperature, "
                        "or an easier task setting)", self.run, state.global_step)

    def summary(self) -> dict | None:
        if not self.logged:
            return None
        return {"logged_steps": self.logged, "steps_without_signal": self.silent,
                "share_without_signal": self.silent / self.logged,
                "none_at_all": self.silent == self.logged}


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak accelerator memory allocated by torch, or the process's peak RSS on CPU."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(dev) / 2**20
    # VmHWM, not ru_maxrss: Linux carries a parent's RSS into ru_maxrss across fork+exec.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class RunRecorder(TrainerCallback):
    def __init__(self):
        self.history: list[dict] = []
        self.step_seconds: list[float] = []
        self._t0 = None
        self.train_seconds = 0.0
        self._start = None
        self.first_step_at: float | None = None  # perf_counter() at the end of the first step

    def on_train_begin(self, args, state, control, **kw):
        self._start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self._t0 is not None:
            now = time.perf_counter()
            self.step_seconds.append(now - self._t0)
            if self.first_step_at is None:
                self.first_step_at = now

    def on_log(self, args, state, control, logs=None, **kw):
        if logs:
            self.history.append({"step": state.global_step, **{k: v for k, v in logs.items()
                                                               if isinstance(v, (int, float))}})

    def on_train_end(self, args, state, control, **kw):
        if self._start is not None:
            self.train_seconds = time.perf_counter() - self._start

    def median_step_seconds(self) -> float | None:
        # The first step pays one-off costs (allocation, kernel selection): leave it out.
        steps = sorted(self.step_seconds[1:] or self.step_seconds)
        return steps[len(steps) // 2] if steps else None


class NaNGuard(TrainerCallback):
    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.good: list[torch.Tensor] = [p.detach().clone() for p in self.params]
        self.good_step = 0
        self.failed_reason: str | None = None

    def track(self, model: torch.nn.Module) -> None:
        """The trainable parameters changed (dynamic tying): guard the new set from here on."""
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.good = [p.detach().clone() for p in self.params]

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params)

    def restore(self) -> None:
        """Put back the trainable weights of the last step whose loss and weights were finite."""
        with torch.no_grad():
            for keep, p in zip(self.good, self.params):
                p.copy_(keep)

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs or self.failed_reason:
            return
        loss = logs["loss"]
        if math.isfinite(loss) and self._weights_finite():
            for keep, p in zip(self.good, self.params):
                keep.copy_(p.detach())
            self.good_step = state.global_step
            return
        self.restore()
        self.failed_reason = (f"non-finite loss ({loss}) at step {state.global_step}; weights "
                              f"restored to step {self.good_step}, the last finite one")
        control.should_training_stop = True


class LiveProgress(TrainerCallback):
    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled
        self.bar = None

    def on_train_begin(self, args, state, control, **kw):
        if self.enabled:
            self.bar = tqdm(total=state.max_steps, desc=self.label, dynamic_ncols=True,
                            file=sys.stderr)

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is None or not logs:
            return
        shown = {}
        for key in REWARD_KEYS:
            if key in logs:
                shown["reward"] = f"{logs[key]:.3f}"
                break
        if "loss" in logs:
            shown["loss"] = f"{logs['loss']:.4g}"
        if shown:
            self.bar.set_postfix(shown)

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None



class EvalCurve(TrainerCallback):
    """Score the held-out items every `every` steps into the recorder's history (`eval_score`).

    The last step is left to the run's own final scoring. The model goes to eval mode and back,
    and the CPU and CUDA random states are restored, so the training trajectory is the one the
    run has without the curve (tested bit for bit)."""

    def __init__(self, every: int, score, recorder: RunRecorder, model: torch.nn.Module):
        self.every, self.score, self.recorder, self.model = every, score, recorder, model
        self.seconds = 0.0

    def on_step_end(self, args, state, control, **kw):
        step = state.global_step
        if step % self.every or step >= state.max_steps:
            return
        start = time.perf_counter()
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                value = float(self.score(self.model))
        finally:
            self.model.train(was_training)
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
        self.recorder.history.append({"step": step, "eval_score": value})
        self.seconds += time.perf_counter() - start
