"""A user's dataset from a file, a `save_to_disk` directory or the Hub, read with `datasets`.

`--dataset SPEC` takes a local `.jsonl`, `.json`, `.csv` or `.parquet` file, a directory written
by `datasets.Dataset.save_to_disk`, or `hf:NAME[:CONFIG][@SPLIT]`. Files are read by the
`datasets` library into Arrow (memory-mapped from its cache), never into Python lists: a
million-row file costs the same memory as a thousand-row one. `--columns new=old,...` renames
columns before the TRL type is detected (`layerwise.data.formats`).

Every failure is one line naming the file and what is wrong with it: missing, empty, not UTF-8,
not parseable (with the parser's own first line), rows of mixed types, a Hub that cannot be
reached.
"""

from __future__ import annotations

import logging
from pathlib import Path

from layerwise.errors import LayerwiseError

log = logging.getLogger(__name__)
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_SAMPLE_BYTES = 1 << 20  # the head of a text file checked for UTF-8 before datasets reads it
# Rows per record batch of the Arrow cache. datasets' default (1,000) leaves a million-row file
# in 1,000 batches, and opening it faults in ~64 KB around each batch header: ~64 MB of a
# 150 MB file resident before a row is read. 10,000 leaves ~8 MB (docs/measurements.md).
WRITER_BATCH = 10_000
# Files above this size are converted to Arrow in a child process: the conversion's buffers
# (~100 MB per million rows) are then never part of the training process's memory.
CONVERT_APART_BYTES = 32 << 20


def parse_columns(text: str | None) -> dict[str, str]:
    """`"prompt=question,completion=answer"` -> {"question": "prompt", "answer": "completion"}
    (old name -> new name, as `Dataset.rename_columns` takes it)."""
    out: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        new, sep, old = (s.strip() for s in pair.partition("="))
        if not sep or not new or not old:
            raise LayerwiseError(f"--columns {pair!r}: expected NEW=OLD, e.g. "
                                 "prompt=question,completion=answer")
        if old in out:
            raise LayerwiseError(f"--columns names column {old!r} twice")
        out[old] = new
    return out


def spec_kind(spec: str) -> str:
    """'hub', 'disk' (a save_to_disk directory) or the builder of a local file."""
    if spec.startswith("hf:"):
        return "hub"
    path = Path(spec).expanduser()
    if path.is_dir():
        return "disk"
    suffix = path.suffix.lower()
    if suffix not in BUILDERS:
        raise LayerwiseError(f"dataset {spec}: expected a .jsonl, .json, .csv or .parquet file, a "
                             "directory written by datasets' save_to_disk, or hf:NAME[:CONFIG][@SPLIT]")
    if not path.is_file():
        raise LayerwiseError(f"dataset file {path} does not exist")
    return BUILDERS[suffix]


def _check_text_file(path: Path) -> None:
    if path.stat().st_size == 0:
        raise LayerwiseError(f"dataset file {path} is empty")
    with open(path, "rb") as fh:
        head = fh.read(_SAMPLE_BYTES)
    if not head.strip():
        raise LayerwiseError(f"dataset file {path} holds only whitespace")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a character cut at the sample's end
            line = head[:exc.start].count(b"\n") + 1
            raise LayerwiseError(f"dataset file {path} is not UTF-8 (line {line}, byte "
                                 f"{exc.start}: {head[exc.start:exc.start + 1]!r})") from None


def _first_line(exc: BaseException) -> str:
    """What the parser itself said: datasets wraps it, and after a failed Arrow parse of JSON
    retries with pandas, whose message is vaguer; Arrow's names the row."""
    chain = [exc]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    arrow = [e for e in chain if type(e).__name__ == "ArrowInvalid"]
    found = arrow[0] if arrow else chain[-1]
    text = str(found).strip()
    return f"{type(found).__name__}: {text.splitlines()[0] if text else ''}"


class _quiet:
    """datasets logs a parser failure and draws progress bars: the user gets our one line."""

    def __enter__(self):
        import datasets

        self.level = datasets.logging.get_verbosity()
        self.bars = datasets.utils.are_progress_bars_disabled()
        datasets.logging.set_verbosity_error()
        datasets.utils.disable_progress_bars()
        logging.getLogger("datasets").setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        import datasets

        datasets.logging.set_verbosity(self.level)
        if not self.bars:
            datasets.utils.enable_progress_bars()
        return False


def _csv_as_text(path: Path) -> dict:
    """Every CSV column read as text (its header names them)."""
    import csv

    import datasets

    with open(path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh), [])
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}),
            "keep_default_na": False}


def _load(builder: str, path: Path):
    import datasets

    # CSV cells are text: pandas would read a completion " 42" as the number 42
    options = _csv_as_text(path) if builder == "csv" else {}
    with _quiet():
        return datasets.load_dataset(builder, data_files=str(path), split="train",
                                     writer_batch_size=WRITER_BATCH, **options)


def convert(builder: str, path: str) -> None:
    """Build the Arrow cache of `path` (run in a child process by `_convert_apart`)."""
    _load(builder, Path(path))


def _convert_apart(builder: str, path: Path) -> None:
    """A large file's JSON/CSV -> Arrow conversion in a child process, so that its buffers stay
    out of this one; a failure there is left for the load here to report in one line."""
    import os
    import subprocess
    import sys

    code = "import sys; from layerwise.data.user_data import convert; convert(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, builder, str(path)], check=False,
                   capture_output=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})


def _read_file(path: Path, builder: str):
    if builder != "parquet":
        _check_text_file(path)
    if path.stat().st_size > CONVERT_APART_BYTES:
        _convert_apart(builder, path)
    try:
        ds = _load(builder, path)
    except Exception as exc:  # noqa: BLE001 - datasets wraps parser errors in many types
        if isinstance(exc.__cause__, UnicodeDecodeError) or isinstance(exc, UnicodeDecodeError):
            raise LayerwiseError(f"dataset file {path} is not UTF-8") from exc
        raise LayerwiseError(f"dataset file {path} cannot be parsed as {path.suffix.lstrip('.')}: "
                             f"{_first_line(exc)}") from exc
    return ds


def _read_disk(path: Path):
    import datasets

    try:
        with _quiet():
            ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise LayerwiseError(f"dataset directory {path} is not one written by datasets' "
                             f"save_to_disk: {_first_line(exc)}") from exc
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise LayerwiseError(f"dataset directory {path} holds splits {', '.join(ds)} and no "
                                 "'train'; point at one split's directory")
        ds = ds["train"]
    return ds


def read_hub(spec: str, what: str = "dataset", local: str = "a local .jsonl/.json/.csv/.parquet "
             "file or a save_to_disk directory"):
    """`hf:NAME[:CONFIG][@SPLIT]` from the Hub; unreachable or not found: one line."""
    from layerwise.hub import hub_reachable

    name = spec.removeprefix("hf:")
    name, _, split = name.partition("@")
    path, _, config = name.partition(":")
    if not hub_reachable():
        raise LayerwiseError(f"{what} {spec}: the Hugging Face Hub is unreachable from here; use "
                             f"{local}")
    import datasets

    try:
        return datasets.load_dataset(path, config or None, split=split or "train")
    except Exception as exc:  # noqa: BLE001
        raise LayerwiseError(f"{what} {spec}: {_first_line(exc)}") from exc


def load_user_dataset(spec: str, columns: str | None = None):
    """The `datasets.Dataset` that `spec` names, columns renamed, with at least one row."""
    kind = spec_kind(spec)
    if kind == "hub":
        ds = read_hub(spec)
    elif kind == "disk":
        ds = _read_disk(Path(spec).expanduser())
    else:
        ds = _read_file(Path(spec).expanduser(), kind)
    if len(ds) == 0:
        raise LayerwiseError(f"dataset {spec} holds no row")
    rename = parse_columns(columns)
    missing = [old for old in rename if old not in ds.column_names]
    if missing:
        raise LayerwiseError(f"--columns renames {', '.join(missing)}, which {spec} does not have "
                             f"(columns: {', '.join(ds.column_names)})")
    clash = [new for old, new in rename.items() if new in ds.column_names and new not in rename]
    if clash:
        raise LayerwiseError(f"--columns: {spec} already has a column {clash[0]!r}; rename that one "
                             "too or choose another name")
    return ds.rename_columns(rename) if rename else ds
