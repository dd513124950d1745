"""Small datasets in every TRL type, good and bad, written for the dataset tests and the
reliability catalogue (tests/cli/test_reliability.py)."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
# the same rendering, with TRL's {% generation %} markers around what the assistant says
CHATML_GENERATION = ("{% for message in messages %}{% if message['role'] == 'assistant' %}"
                     "{{'<|im_start|>assistant\\n'}}{% generation %}{{ message['content'] + "
                     "'<|im_end|>' + '\\n' }}{% endgeneration %}{% else %}{{'<|im_start|>' + "
                     "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                     "{% endif %}{% endfor %}{% if add_generation_prompt %}"
                     "{{ '<|im_start|>assistant\\n' }}{% endif %}")

REWARD = '''
def first_digit(completions, solution, **kwargs):
    """TRL's signature: 1 when the completion starts with the reference's first character."""
    out = []
    for c, s in zip(completions, solution):
        text = c[-1]["content"] if isinstance(c, list) else c
        out.append(1.0 if text.strip()[:1] == str(s)[:1] else 0.0)
    return out

def raises(completions, **kwargs):
    raise RuntimeError("reward exploded")

def short(completions, **kwargs):
    return [1.0]

def nan(completions, **kwargs):
    return [float("nan")] * len(completions)

def words(completions, **kwargs):
    return ["good"] * len(completions)
'''


def _user(i):
    return [{"role": "user", "content": f"What is {i % 7} + {i % 5}?"}]


def _assistant(text):
    return [{"role": "assistant", "content": text}]


def rows(kind: str, n: int = 40) -> list[dict]:
    """`n` rows of one type: lm, messages, prompt, pc, pc_chat, pref, pref_implicit, pref_chat,
    unpaired."""
    out = []
    for i in range(n):
        q, a = f"What is {i % 7} + {i % 5}?", str(i % 7 + i % 5)
        out.append({
            "lm": {"text": f"{q} {a}."},
            "messages": {"messages": _user(i) + _assistant(a)},
            "prompt": {"prompt": _user(i), "solution": a},
            "pc": {"prompt": q, "completion": " " + a, "solution": a, "id": i},
            "pc_chat": {"prompt": _user(i), "completion": _assistant(a), "solution": a},
            "pref": {"prompt": q, "chosen": " " + a, "rejected": " 99"},
            "pref_implicit": {"chosen": f"{q} {a}", "rejected": f"{q} 99"},
            "pref_chat": {"prompt": _user(i), "chosen": _assistant(a), "rejected": _assistant("99")},
            "unpaired": {"prompt": q, "completion": " " + (a if i % 2 else "99"), "label": bool(i % 2)},
        }[kind])
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def build(root: Path) -> Path:
    """Every good and bad dataset file the tests name, under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for kind in ("lm", "messages", "prompt", "pc", "pc_chat", "pref", "pref_implicit",
                 "pref_chat", "unpaired"):
        write_jsonl(root / f"{kind}.jsonl", rows(kind))
    (root / "chatml.jinja").write_text(CHATML)
    (root / "rewards.py").write_text(REWARD)
    (root / "empty.jsonl").write_text("")
    (root / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1") * 3)
    (root / "broken.jsonl").write_text('{"text": "one"}\n{"text": "two"\n')
    write_jsonl(root / "nomatch.jsonl", [{"question": "q", "answer": "a"}] * 4)
    write_jsonl(root / "mixed.jsonl", rows("lm", 3) + rows("pc", 3))
    bad_role = rows("messages", 6)
    bad_role[4]["messages"][0]["role"] = "narrator"
    write_jsonl(root / "badrole.jsonl", bad_role)
    no_assistant = rows("messages", 6)
    no_assistant[2]["messages"] = no_assistant[2]["messages"][:1]
    write_jsonl(root / "noassistant.jsonl", no_assistant)
    empty_content = rows("messages", 6)
    empty_content[3]["messages"][1]["content"] = ""
    write_jsonl(root / "emptycontent.jsonl", empty_content)
    write_jsonl(root / "notext.jsonl", [{"text": 5}] * 4)
    write_jsonl(root / "tiny.jsonl", rows("pc", 1))
    write_jsonl(root / "long.jsonl", [{"prompt": "x " * 400, "completion": " y"}] * 8)
    return root
