"""The tables of docs/results/your-data.md, from the kept runs (keep.py), byte for byte.

    .venv/bin/python docs/results/your_data/table.py docs/results/your_data/runs > docs/results/your_data/table.md

Per arm: every seed's figure, then the mean and the worst seed (a single seed says "1 run").
Held-out loss: nats per completion token on the same 24 GSM8K test rows (lower is better);
math: share of those 24 greedy answers math-verify finds right (128 new tokens); WikiText: the
lm-eval `layerwise_wikitext_local` word perplexity on 2 articles (forgetting; lower is better).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SFT_ARMS = (("sft-mid", "middle 20%-80% (blocks 6-23)"), ("sft-full", "full"),
            ("sft-lora", "LoRA r16 (attn)"), ("tune", "tune --budget 3"))


def _runs(root: Path, prefix: str) -> list[dict]:
    if prefix == "tune":
        files = sorted(root.glob("tune-seed*.json"))
        files = [f for f in files if not f.name.endswith("-tune.json")]
    else:
        files = sorted(root.glob(f"{prefix}-seed*.json"))
    return [json.loads(f.read_text()) for f in files]


def _wiki(scores: dict) -> float | None:
    head = ((scores.get("lm_eval") or {}).get("headline") or {}).get("layerwise_wikitext_local")
    return head["value"] if head else None


def _cell(values: list[float], fmt: str, worst) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:{fmt}} (1 run)"
    mean = sum(values) / len(values)
    return (" / ".join(f"{v:{fmt}}" for v in values)
            + f"; mean {mean:{fmt}}, worst {worst(values):{fmt}}")


def sft_table(root: Path) -> list[str]:
    base = json.loads((root / "sft-base.json").read_text())
    lines = ["| arm | trainable | seeds | held-out loss | math accuracy | WikiText word ppl |",
             "|---|---|---|---|---|---|",
             f"| base model | — | — | {base['loss']:.4f} | {base['accuracy']:.3f} | "
             f"{_wiki(base):.2f} |"]
    for prefix, label in SFT_ARMS:
        runs = _runs(root, prefix)
        if not runs:
            lines.append(f"| {label} | — | 0 | not run | | |")
            continue
        blocks = runs[0]["trainable"]
        extra = ""
        if prefix == "tune":
            chosen = sorted({tuple(r["trainable"]["blocks"]) for r in runs})
            extra = " (" + "; ".join("blocks " + ",".join(map(str, c)) for c in chosen) + ")"
        lines.append(
            f"| {label}{extra} | {blocks['params']:,} ({100 * blocks['share']:.1f}%) | {len(runs)} | "
            f"{_cell([r['final']['loss'] for r in runs], '.4f', max)} | "
            f"{_cell([r['final']['accuracy'] for r in runs], '.3f', min)} | "
            f"{_cell([_wiki(r['final']) for r in runs], '.2f', max)} |")
    return lines


def grpo_table(root: Path) -> list[str]:
    runs = _runs(root, "grpo-mid")
    lines = ["| seed | S = math + 0.5 closeness, base -> final | math | closeness | held-out loss "
             "| steps without signal |", "|---|---|---|---|---|---|"]

    def pair(r, name):
        b, f = (r[k].get("reward_means") or {} for k in ("base", "final"))
        return f"{b.get(name, float('nan')):.3f} -> {f.get(name, float('nan')):.3f}"

    for r in runs:
        sig = r.get("learning_signal") or {}
        lines.append(f"| {r['seed']} | {r['base']['mean_score']:.3f} -> {r['final']['mean_score']:.3f} | "
                     f"{pair(r, 'math_reward')} | {pair(r, 'closeness')} | "
                     f"{r['base']['loss']:.4f} -> {r['final']['loss']:.4f} | "
                     f"{sig.get('steps_without_signal', '—')} of {sig.get('logged_steps', '—')} |")
    if not runs:
        lines.append("| — | not run | | | |")
    return lines


def main(root: Path) -> None:
    out = ["## SFT (24 held-out rows, 12 steps of 8 rows)", "", *sft_table(root), "",
           "## GRPO on the middle 20%-80% (--reward math --reward closeness.py:closeness=0.5)", "",
           *grpo_table(root)]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
