r"""The agents that decide, block by block, whether a block trains its own weights or shares an earlier one's.

All three walk the blocks 1..L-1 in turn (one *episode* = one pass); at each decision block i picks
a source a in 0..i (a = i: its own weights), the model trains `--tie-every` steps, and the agent is
told the reward. The action space is the paper's: a Q-network with L(L+1)/2 outputs, block i owning
the i+1 outputs from i(i+1)/2 on.

| agent | state | reward (computed by the caller) | learning | exploration |
|---|---|---|---|---|
| `RandomAgent` | - | - | - | uniform over 0..i, always |
| `PaperDQN` (`--tying dqn`) | one-hot map (L x L) | -CE of a random training batch | DQN, replay buffer (1000) and target network (synced every 20 updates), MSE | eps from 1.0, x0.95 per episode, floor 0.01 |
| `GainDQN` (`--tying dqn-gain`, ours) | one-hot map + the deciding block + progress | the loss gain over the decision on training windows (not held-out data), standardised, minus a cost per block that keeps its own weights | double DQN, replay, target network, Huber | eps 1.0 -> 0.05 linearly over the first 60% of the decisions |

`PaperDQN` takes the official code's faults as switches (`FAULTS`), each off by default:
`raw-state` (the state fed as raw block indices), `no-replay` (one online update per decision, no
buffer, no target network), `same-slice` (the Bellman target maxes over the *same* block's slice
of the next state instead of the next decision's block), `clip` (reward -exp(CE) clipped to
[-10, 10]). The mechanism faults (`alias`, `frozen-start`) live in the tying callback.
"""

from __future__ import annotations

import math
import random
from collections import deque

import torch
from torch import nn

FAULTS = ("alias", "clip", "raw-state", "no-replay", "same-slice", "frozen-start")


def action_slice(block: int) -> slice:
    start = block * (block + 1) // 2
    return slice(start, start + block + 1)


def next_block(block: int, num_blocks: int) -> int:
    return block + 1 if block + 1 < num_blocks else 1


class RandomAgent:
    name = "random"

    def __init__(self, num_blocks: int, seed: int, **_):
        self.n, self.rng = num_blocks, random.Random(seed)
        self.epsilon = 1.0

    def act(self, block: int, state: list[int], progress: float) -> int:
        return self.rng.randint(0, block)

    def observe(self, block, state, action, reward, next_state, progress, done=False) -> dict:
        return {}

    def end_episode(self) -> None:
        pass

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, d: dict, tensors=None) -> None:
        self.rng.setstate(_tuplify(d["rng"]))


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


class PaperDQN:
    """The Q-learning agent of Dynamic Layer Tying (PAPERS.md section 5), faults as switches."""

    name = "dqn"
    gamma, lr, hidden = 0.99, 1e-3, 128
    buffer_size, batch, sync_every = 1000, 32, 20

    def __init__(self, num_blocks: int, seed: int, faults: frozenset[str] = frozenset(), **_):
        self.n, self.faults = num_blocks, faults
        self.rng = random.Random(seed)
        gen = torch.Generator().manual_seed(seed)
        self.in_dim = self._state_dim()
        self.q = self._net(gen)
        self.target = self._net(gen)
        self.target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.AdamW(self.q.parameters(), lr=self.lr, weight_decay=0.01)
        self.buffer: deque = deque(maxlen=self.buffer_size)
        self.updates = 0
        self.epsilon = 1.0

    def _net(self, gen) -> nn.Module:
        net = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.ReLU(),
                            nn.Linear(self.hidden, self.n * (self.n + 1) // 2))
        with torch.no_grad():
            for p in net.parameters():  # the default init, drawn from our generator (reproducible)
                bound = 1 / math.sqrt(p.shape[-1] if p.ndim > 1 else self.in_dim)
                p.uniform_(-bound, bound, generator=gen)
        return net

    def _state_dim(self) -> int:
        return self.n if "raw-state" in self.faults else self.n * self.n

    def encode(self, state: list[int], block: int, progress: float) -> torch.Tensor:
        if "raw-state" in self.faults:
            return torch.tensor(state, dtype=torch.float32)
        x = torch.zeros(self.n, self.n)
        x[torch.arange(self.n), torch.tensor(state)] = 1.0
        return x.flatten()

    # -- acting
    def act(self, block: int, state: list[int], progress: float) -> int:
        if self.rng.random() < self.epsilon:
            return self.rng.randint(0, block)
        with torch.no_grad():
            q = self.q(self.encode(state, block, progress))[action_slice(block)]
        return int(torch.argmax(q))

    def end_episode(self) -> None:
        self.epsilon = max(self.epsilon * 0.95, 0.01)

    # -- learning
    def _target_block(self, block: int) -> int:
        return block if "same-slice" in self.faults else next_block(block, self.n)

    def observe(self, block, state, action, reward, next_state, progress, done=False) -> dict:
        s = self.encode(state, block, progress)
        nb = self._target_block(block)
        s2 = self.encode(next_state, nb, progress)
        if "no-replay" in self.faults:  # the official code: one online update, no target network
            with torch.no_grad():
                target = reward + (0.0 if done else self.gamma * self.q(s2)[action_slice(nb)].max())
            pred = self.q(s)[action_slice(block)][action]
            return self._step(nn.functional.mse_loss(pred, torch.as_tensor(target, dtype=pred.dtype)))
        self.buffer.append((s, block, action, float(reward), s2, nb, done))
        idx = self.rng.sample(range(len(self.buffer)), min(self.batch, len(self.buffer)))
        preds, targets = [], []
        with torch.no_grad():
            for k in idx:
                _, _, _, r, s2k, nbk, dk = self.buffer[k]
                targets.append(r + (0.0 if dk else self.gamma * self._bootstrap(s2k, nbk)))
        for k in idx:
            sk, bk, ak, *_ = self.buffer[k]
            preds.append(self.q(sk)[action_slice(bk)][ak])
        out = self._step(self._loss(torch.stack(preds), torch.tensor(targets)))
        self.updates += 1
        if self.updates % self.sync_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        return out

    def _bootstrap(self, s2, nb) -> float:
        return float(self.target(s2)[action_slice(nb)].max())

    def _loss(self, pred, target):
        return nn.functional.mse_loss(pred, target)

    def _step(self, loss) -> dict:
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"q_loss": float(loss.detach())}

    # -- checkpoints (tensors go to safetensors, the rest to JSON: nothing is unpickled)
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"q.{k}": v for k, v in self.q.state_dict().items()}
        out.update({f"target.{k}": v for k, v in self.target.state_dict().items()})
        for i, (s, *_rest) in enumerate(self.buffer):
            out[f"buffer.s.{i}"] = s
            out[f"buffer.s2.{i}"] = _rest[3]
        return {k: v.contiguous() for k, v in out.items()}

    def state_dict(self) -> dict:
        return {"epsilon": self.epsilon, "updates": self.updates, "rng": self.rng.getstate(),
                "buffer": [(b, a, r, nb, d) for (_s, b, a, r, _s2, nb, d) in self.buffer]}

    def load_state_dict(self, d: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.q.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("q.")})
        self.target.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("target.")})
        self.epsilon, self.updates = d["epsilon"], d["updates"]
        self.rng.setstate(_tuplify(d["rng"]))
        self.buffer.clear()
        for i, (b, a, r, nb, done) in enumerate(d["buffer"]):
            self.buffer.append((tensors[f"buffer.s.{i}"], b, a, r, tensors[f"buffer.s2.{i}"], nb, done))


class GainDQN(PaperDQN):
    """Ours: learns which blocks can share from how much each decision lowered the loss on a fixed
    set of training windows (not held-out data)."""

    name = "dqn-gain"
    gamma = 0.5  # a decision's effect shows within a few decisions, not over a whole episode

    def __init__(self, num_blocks: int, seed: int, decisions: int = 100, **_):
        self.decisions = max(1, decisions)
        self.made = 0
        super().__init__(num_blocks, seed, frozenset())

    def _state_dim(self) -> int:
        return self.n * self.n + self.n + 1

    def encode(self, state, block, progress):
        x = torch.zeros(self.n, self.n)
        x[torch.arange(self.n), torch.tensor(state)] = 1.0
        deciding = torch.zeros(self.n)
        deciding[block] = 1.0
        return torch.cat([x.flatten(), deciding, torch.tensor([progress])])

    def act(self, block, state, progress):
        frac = min(1.0, self.made / (0.6 * self.decisions))
        self.epsilon = 1.0 + (0.05 - 1.0) * frac
        self.made += 1
        return super().act(block, state, progress)

    def end_episode(self) -> None:
        pass  # exploration follows the run's progress, not episodes

    def _bootstrap(self, s2, nb) -> float:  # double DQN: the online net picks, the target scores
        sl = action_slice(nb)
        best = int(torch.argmax(self.q(s2)[sl]))
        return float(self.target(s2)[sl][best])

    def _loss(self, pred, target):
        return nn.functional.smooth_l1_loss(pred, target)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "made": self.made}

    def load_state_dict(self, d, tensors) -> None:
        super().load_state_dict(d, tensors)
        self.made = d["made"]


AGENTS = {"random": RandomAgent, "dqn": PaperDQN, "dqn-gain": GainDQN}
