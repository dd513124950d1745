"""A graded GSM8K reward in TRL's signature, for GRPO where the binary math reward is too rare.

SmolLM2-135M-Instruct answers about 3% of GSM8K correctly, so with 8 completions per prompt most
groups get equal (zero) math rewards and no gradient. This reward is 1 - min(1, |x - y| / |y|)
for the last number x the completion writes and the reference y (`solution`): graded, so nearly
every group has some spread. None when the completion holds no number (TRL skips it).
"""

import re

NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def closeness(completions, solution, **kwargs):
    out = []
    for completion, gold in zip(completions, solution):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        found = NUMBER.findall(text)
        if not found:
            out.append(None)
            continue
        try:
            x, y = float(found[-1].replace(",", "").rstrip(".")), float(str(gold).replace(",", ""))
        except ValueError:
            out.append(None)
            continue
        out.append(1.0 - min(1.0, abs(x - y) / max(abs(y), 1.0)))
    return out
