"""Shared fixtures: tiny real models of every family, and the embedded SmolLM2 model."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers

from layerwise.models import TINY_FAMILIES, load_model
from layerwise.models.tiny import tiny_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAMILIES = sorted(TINY_FAMILIES)


@pytest.fixture(scope="session", params=FAMILIES)
def tiny(request):
    """A LoadedModel for each tiny family (session-wide; tests must not modify its weights)."""
    return load_model(f"tiny:{request.param}", seed=0)


def fresh_tiny(family: str, **overrides):
    """A new tiny model of `family`, optionally with config overrides (e.g. 30 blocks)."""
    config = tiny_config(family)
    for key, value in overrides.items():
        setattr(config, key, value)
    transformers.set_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="session")
def llama30():
    """A llama-family model with 30 blocks, the depth of SmolLM2, at a tiny width."""
    return fresh_tiny("llama", num_hidden_layers=30, hidden_size=16, intermediate_size=32)


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (converted once into the user cache)."""
    return load_model(None)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (../shared/data is beside the checkout in CI)")
    return path

LEARNABLE = '''
from layerwise.tasks import TaskItem

class Letters:
    """Answer ' 7'; the score is the share of the first 4 characters that are '7' or letters,
    so random completions already get varied rewards (RL needs variance within a group)."""
    name = "letters"
    description = "toy task for tests"
    max_new_tokens = 4

    def items(self, split, n, seed):
        base = 0 if split == "train" else 100_000
        return [TaskItem(id=str(base + i), prompt=f"Q{(i * 7 + seed) % 50}:", answer="7",
                         target=" 7\\n") for i in range(n)]

    def extract(self, completion, item):
        return completion.strip()[:1]

    def score(self, completion, item):
        if self.extract(completion, item) == "7":
            return 1.0
        head = completion[:4]
        return 0.5 * sum(c.isalpha() for c in head) / 4 if head else 0.0

def make_task():
    return Letters()
'''


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    """A learnable task file (answer 7) whose score varies for random completions."""
    path = tmp_path_factory.mktemp("tasks") / "letters.py"
    path.write_text(LEARNABLE)
    return f"{path}:make_task"
