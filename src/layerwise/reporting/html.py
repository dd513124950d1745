"""Self-contained HTML pages: plots embedded as data URIs, so a report is one file to share."""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
img { max-width: 100%; } .help { color: #555; } .bad { color: #b2182b; font-weight: bold; }
.note { font-weight: bold; }
.wide { overflow-x: auto; max-width: 100%; } .wide th { white-space: normal; min-width: 5em; }
"""


def img_tag(path: str | Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(header: list[str] | None, rows: list[list], first_is_name: bool = True) -> str:
    """A table of escaped cells; floats shown with 4 significant digits, None as a dash."""
    def cell(v, j):
        text = "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
        cls = ' class="name"' if j == 0 and first_is_name else ""
        return f"<td{cls}>{html.escape(text)}</td>"

    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v, j) for j, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def page(title: str, parts: list[str], css: str = CSS) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{css}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
