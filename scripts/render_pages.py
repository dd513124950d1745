"""Render layerwise HTML pages to PNG for a visual check, without a browser.

No Chromium can be installed on the development machine (playwright's browser download host is
unreachable), so the pages are rendered with WeasyPrint (an HTML/CSS layout engine) and
rasterised with pypdfium2. Neither is a layerwise dependency:
    python -m venv /tmp/render && /tmp/render/bin/pip install weasyprint pypdfium2
    /tmp/render/bin/python scripts/render_pages.py PAGE.html OUT.png [PAGES]   (PAGES: 0,1)
Paged output differs from a browser in one way that matters here: a table that scrolls
sideways in a browser (`.wide`) is cut at the page edge.
"""

import sys

import pypdfium2
import weasyprint
from PIL import Image


def render(src: str, out: str, pages: list[int]) -> None:
    document = pypdfium2.PdfDocument(weasyprint.HTML(filename=src).write_pdf())
    images = [document[i].render(scale=1.0).to_pil() for i in pages if i < len(document)]
    canvas = Image.new("RGB", (sum(i.size[0] for i in images), max(i.size[1] for i in images)),
                       "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.size[0]
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    render(sys.argv[1], sys.argv[2], [int(p) for p in (sys.argv[3] if len(sys.argv) > 3 else "0").split(",")])
