"""The layer-selection grammar: a spec string -> a small syntax tree, before any model is known.

    selection := group ('+' group)*               union of groups
    group     := item (',' item)* [':' filters]   filters restrict the group's blocks
    item      := N | A-B | -N | -N- | N- | A%-B% | A% | mid:K | all
               | top:K@FILE[:METRIC] | bottom:K@FILE[:METRIC] | embed | head | norm
    filters   := name (',' name)*                 attn, mlp, norms, or a submodule / parameter
                                                  name inside a block (q_proj, down_proj, bias)

Ranges are inclusive; negative indices count from the end (-1 is the last block, -4- the last
four). Depth fractions select every block whose depth interval [i/L, (i+1)/L) overlaps [a, b):
blocks floor(a*L) .. ceil(b*L)-1, so 20%-80% of 30 blocks is 6-23. A lone A% is block floor(a*L).
mid:K is the K blocks centred on L/2: (L-K)//2 .. (L-K)//2+K-1.

Whether a trailing ':name' is a filter or the METRIC of a top/bottom item can only be decided
against a model (filters are that model's submodule names), so the parser keeps it as `trailing`
and `resolve.py` decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from layerwise.errors import LayerwiseError

PARTS = ("embed", "head", "norm")
VALID_ITEMS = (
    "N, A-B, -N, -N-, N-, A%-B%, A%, mid:K, all, top:K@FILE[:METRIC], bottom:K@FILE[:METRIC], "
    "embed, head, norm; optionally followed by :attn, :mlp, :norms or :q_proj,v_proj,..."
)
_INDEX_RANGE = re.compile(r"^(-?\d+)(-(-?\d+)?)?$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%(?:-(\d+(?:\.\d+)?)%)?$")
_RANKED = re.compile(r"^(top|bottom):(\d+)@(.+)$")
_NAMES = re.compile(r"^[A-Za-z_]\w*(,[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class IndexRange:
    start: int
    end: int | None  # inclusive; None = to the last block


@dataclass(frozen=True)
class DepthRange:
    start: Fraction  # fraction of depth, in [0, 1]
    end: Fraction | None  # None: the single block at `start`


@dataclass(frozen=True)
class Mid:
    k: int


@dataclass(frozen=True)
class AllBlocks:
    pass


@dataclass(frozen=True)
class Ranked:
    """The K highest (top) or lowest (bottom) scoring blocks of a result file."""

    k: int
    path: str
    metric: str | None
    best: bool


@dataclass(frozen=True)
class Part:
    name: str  # one of PARTS


Item = IndexRange | DepthRange | Mid | AllBlocks | Ranked | Part


@dataclass(frozen=True)
class Group:
    items: tuple[Item, ...]
    trailing: tuple[str, ...] | None  # ':a,b' after the group: filters, or a top/bottom METRIC


def _bad(item: str, spec: str, why: str = "malformed selection item") -> LayerwiseError:
    return LayerwiseError(f"{why} '{item}' in selection '{spec}'; valid items: {VALID_ITEMS}")


def _parse_item(text: str, spec: str) -> Item:
    if text == "all":
        return AllBlocks()
    if text in PARTS:
        return Part(text)
    if m := _INDEX_RANGE.match(text):
        start = int(m.group(1))
        if m.group(2) is None:
            return IndexRange(start, start)
        return IndexRange(start, int(m.group(3)) if m.group(3) is not None else None)
    if m := _PERCENT.match(text):
        start = Fraction(m.group(1)) / 100
        end = Fraction(m.group(2)) / 100 if m.group(2) else None
        if start > 1 or (end is not None and (end > 1 or end <= start)):
            raise _bad(text, spec, "depth range must satisfy 0% <= A% < B% <= 100%, got")
        return DepthRange(start, end)
    if text.startswith("mid:"):
        k = text[4:]
        if not k.isdigit() or int(k) == 0:
            raise _bad(text, spec, "mid:K needs a positive block count K, got")
        return Mid(int(k))
    if m := _RANKED.match(text):
        if int(m.group(2)) == 0:
            raise _bad(text, spec, f"{m.group(1)}:K needs a positive block count K, got")
        path, _, metric = m.group(3).partition(":")
        return Ranked(int(m.group(2)), path, metric or None, m.group(1) == "top")
    raise _bad(text, spec)


def _split_trailing(text: str) -> tuple[str, tuple[str, ...] | None]:
    """Split 'head:a,b' into ('head', ('a','b')) when the tail is a list of names."""
    head, sep, tail = text.rpartition(":")
    if not sep or not _NAMES.match(tail) or head in ("mid", "top", "bottom"):
        return text, None
    # 'mid:K:mlp' -> ('mid:K', mlp); 'top:K@F:metric' keeps its own metric when a filter follows.
    return head, tuple(tail.split(","))


def parse_selection(spec: str) -> tuple[Group, ...]:
    """Parse a selection spec into groups; raises LayerwiseError on malformed input."""
    if spec is None or not str(spec).strip():
        raise LayerwiseError(f"empty selection; valid items: {VALID_ITEMS}")
    spec = "".join(str(spec).split())
    groups = []
    for raw in spec.split("+"):
        if not raw:
            raise LayerwiseError(f"empty group in selection '{spec}' (a '+' with nothing beside it)")
        head, trailing = _split_trailing(raw)
        items = []
        for piece in head.split(","):
            if not piece:
                raise LayerwiseError(f"empty item in selection '{spec}' (a stray ',')")
            items.append(_parse_item(piece, spec))
        groups.append(Group(tuple(items), trailing))
    return tuple(groups)
