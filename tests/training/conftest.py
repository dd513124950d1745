"""Tasks a tiny random model can learn or be rewarded on, written as user task files."""

from __future__ import annotations

import pytest

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
    path = tmp_path_factory.mktemp("tasks") / "letters.py"
    path.write_text(LEARNABLE)
    return f"{path}:make_task"
