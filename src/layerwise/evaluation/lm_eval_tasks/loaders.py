"""Dataset loaders the local lm-eval tasks call (`custom_dataset: !function loaders.<name>`).

lm-eval passes a task's `dataset_kwargs` to `datasets.load_dataset`, which reads a relative
`data_files` against the working directory, so a task folder with relative paths only works
from one place. These loaders read the shipped JSONL files against this folder instead, and
build the datasets in memory (`Dataset.from_list`): nothing is fetched and nothing is cached on
disk. lm-eval calls them with the task's `metadata` and `dataset_kwargs` as keywords.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets

from layerwise.errors import LayerwiseError

HERE = Path(__file__).resolve().parent
# A top-level WikiText heading (" = Title = "); sections are " = = Section = = ".
ARTICLE_TITLE = re.compile(r" = [^=].* = \n")


def jsonl_rows(file: str, **_metadata) -> datasets.DatasetDict:
    """The rows of the JSONL `file` (relative to this folder) as the `test` split."""
    lines = (HERE / file).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def wikitext_articles(path: str, **_metadata) -> datasets.DatasetDict:
    """Raw WikiText cut into articles, `{"page": text}` rows in the `test` split.

    The rows have the shape of EleutherAI/wikitext_document_level, which lm-eval's `wikitext`
    task reads: one article per row, from its ` = Title = ` line to the next one. A relative
    `path` is read against the working directory, as lm-eval reads `data_files`.
    """
    file = Path(path)
    if not file.is_file():
        raise LayerwiseError(
            f"WikiText file {path!r} not found (relative to {Path.cwd()}); write a task with an "
            "absolute path with layerwise.evaluation.harness.wikitext_task(FILE, DIR)"
        )
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = sorted({0, *(i for i, line in enumerate(lines) if ARTICLE_TITLE.fullmatch(line))})
    chunks = ["".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]
    pages = [chunk for chunk in chunks if chunk.strip()]  # the blank line before the first title
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"page": p} for p in pages])})
