"""Reading a numeric answer out of generated text, shared by the arithmetic and GSM8K tasks."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def first_number(text: str) -> str | None:
    match = NUMBER.search(text)
    return match.group(0).replace(",", "") if match else None


def last_number(text: str) -> str | None:
    matches = NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None


def same_number(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and abs(p - g) < 1e-6
