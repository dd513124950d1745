"""docs/results/claims.md, the one page of seed claims and verdicts, quotes only numbers that kept
files hold: every number its "Numbers and their kept files" list names is in the cited file (the
same digits, or the leading digits of a longer figure there) and in the claim's table row; every
row has a verdict of the agreed words; its links resolve; the README links the page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGE = DOCS / "results" / "claims.md"

VERDICT = re.compile(r"^\*{0,2}(holds|partly|no|not measurable here)\*{0,2}(?=$|[\s;:,(])")
NUMBER = re.compile(r"^[+-]?\d{1,3}(,\d{3})+$|^[+-]?\d+(\.\d+)?$")
ITEM = re.compile(r"^- ([a-z0-9-]+): (.+) in (\S+)$")


def _text() -> str:
    return PAGE.read_text()


def _rows() -> dict[str, list[str]]:
    """claim id -> the row's cells, for every row of the claims table."""
    rows = {}
    for line in _text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        claim = re.match(r"`([a-z0-9-]+)`", cells[0])
        assert claim, line
        assert claim.group(1) not in rows, claim.group(1)
        rows[claim.group(1)] = cells
    return rows


def _items() -> list[tuple[str, list[str], str]]:
    """(claim id, numbers, path) for every item of the "Numbers and their kept files" list."""
    section = _text().split("## Numbers and their kept files", 1)[1]
    items = []
    for line in section.strip().splitlines():
        match = ITEM.match(line)
        assert match, line
        items.append((match.group(1), match.group(2).split(", "), match.group(3)))
    return items


def _holds(text: str, number: str, fields: bool = False) -> bool:
    """The number stands in the text as a number of its own, or as the leading digits of a longer
    one (0.7833 of 0.7833333333333333): not inside another number, not with the other sign.
    fields: commas separate values (CSV, JSON), never thousands."""
    for found in re.finditer(re.escape(number), text):
        before = text[found.start() - 1] if found.start() else " "
        if before.isdigit() or before == "." or (before == "-" and number[0] not in "+-"):
            continue
        if before == "," and not fields and re.match(r"\d{3}(\D|$)", number):
            continue  # a thousands group of a longer number
        after = text[found.end()] if found.end() < len(text) else " "
        follows = text[found.end():found.end() + 5]
        if not fields and "." not in number and re.match(r",\d{3}(\D|$)", follows):
            continue  # an integer followed by a thousands group: part of a longer number
        if after.isdigit() and "." not in number:
            continue  # an integer's leading digits are another integer
        return True
    return False


def test_the_table_has_rows_with_agreed_verdicts():
    rows = _rows()
    assert len(rows) >= 5
    for claim, cells in rows.items():
        assert len(cells) == 5, claim
        assert VERDICT.match(cells[3]), (claim, cells[3])


def test_every_quoted_number_is_in_its_kept_file_and_its_row():
    rows = _rows()
    items = _items()
    assert items
    for claim, numbers, path in items:
        assert claim in rows, claim
        target = (ROOT / path).resolve()
        assert target.is_relative_to(DOCS), path
        assert target.is_file(), path
        kept = target.read_text(errors="replace")
        row = " | ".join(rows[claim])
        for number in numbers:
            assert NUMBER.match(number), (claim, number)
            assert _holds(kept, number, target.suffix in (".csv", ".json")), \
                f"{claim}: {number} not in {path}"
            assert _holds(row, number), f"{claim}: {number} not in its table row"


def test_the_links_resolve():
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _text()):
        assert (PAGE.parent / link).resolve().is_file(), link


def test_the_readme_links_the_page():
    assert "docs/results/claims.md" in (ROOT / "README.md").read_text()
