"""Fingerprints of files and directories: what a run read, so that a second read can be checked.

A run that resumes (or a sweep, tune, estimate or diagnose that reuses earlier work) reads its
inputs again; `layerwise.inputs` compares what it reads now with what it read the first time,
and these are the fingerprints it compares.

- Up to `full_limit()` bytes in all (2 GiB by default, `$LAYERWISE_HASH_FULL_MAX` to change), every
  file is hashed whole (`method: "content"`, SHA-256, about 1.4 GB/s on one core here): any
  changed byte is seen, and a file copied elsewhere or touched is still the same file.
- Above it (a 7B or 70B checkpoint), each file over 64 MiB is *sampled* (`method: "sampled"`):
  its size, its modification time, a safetensors file's whole header (every tensor's name,
  dtype, shape and offsets) and 64 blocks of 64 KiB spread evenly over it. The cost is a few MiB
  a file however large it is. What it can miss: a change that keeps the size, restores the
  modification time (`cp -p`, `touch -r`, some sync tools) and falls between the sampled blocks.
  What it refuses that a content hash would accept: the same bytes copied without their mtime.
  Files under 64 MiB (configs, tokenizers, indexes) are always hashed whole.

bench/bench_fingerprint.py measures both on SmolLM2 and a 2 GB file (docs/measurements.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

FULL_LIMIT_DEFAULT = 2 << 30
SMALL_FILE = 64 << 20
SAMPLES = 64
SAMPLE_BYTES = 64 << 10
_CHUNK = 8 << 20


def full_limit() -> int:
    value = os.environ.get("LAYERWISE_HASH_FULL_MAX")
    try:
        return int(value) if value else FULL_LIMIT_DEFAULT
    except ValueError:
        return FULL_LIMIT_DEFAULT


def _content(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_header(fh, size: int) -> bytes:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets), or b"" if none."""
    fh.seek(0)
    head = fh.read(8)
    if len(head) < 8:
        return b""
    (n,) = struct.unpack("<Q", head)
    if n <= 0 or 8 + n > size or n > (100 << 20):
        return b""
    return fh.read(n)


def _sampled(path: Path, size: int) -> str:
    h = hashlib.sha256(f"size={size}".encode())
    with path.open("rb") as fh:
        if path.suffix == ".safetensors":
            h.update(_safetensors_header(fh, size))
        step = max((size - SAMPLE_BYTES) // max(SAMPLES - 1, 1), 1)
        for i in range(SAMPLES):
            fh.seek(min(i * step, max(size - SAMPLE_BYTES, 0)))
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()


def file_fingerprint(path: str | Path, *, sample: bool = False) -> dict:
    """{"size", "method", "sha256"[, "mtime_ns"]} of one file; `sample` allows sampling a big file."""
    path = Path(path)
    st = path.stat()
    if sample and st.st_size > SMALL_FILE:
        return {"size": st.st_size, "method": "sampled", "mtime_ns": st.st_mtime_ns,
                "sha256": _sampled(path, st.st_size)}
    return {"size": st.st_size, "method": "content", "sha256": _content(path)}


def _files(path: Path, recursive: bool, skip: tuple[str, ...]) -> list[Path]:
    found = path.rglob("*") if recursive else path.iterdir()
    return sorted(p for p in found
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                  and not any(p.match(pattern) for pattern in skip))


def fingerprint_files(files: list[Path], root: Path | None = None,
                      like: dict[str, dict] | None = None) -> dict[str, dict]:
    """Each file's fingerprint, keyed by its path relative to `root` (or as given); files are
    sampled only when their total passes `full_limit()`. `like` (an earlier fingerprint of the
    same files) makes each file be fingerprinted the way it was then, so the two compare."""
    sample = sum(p.stat().st_size for p in files) > full_limit()
    out = {}
    for p in files:
        key = str(p.relative_to(root)) if root else str(p)
        method = (like or {}).get(key, {}).get("method")
        out[key] = file_fingerprint(p, sample=sample if method is None else method == "sampled")
    return out


def path_fingerprint(path: str | Path, *, recursive: bool = True, skip: tuple[str, ...] = (),
                     like: dict[str, dict] | None = None) -> dict[str, dict]:
    """A file's fingerprint (keyed by its name) or every file of a directory's (relative paths;
    hidden files and `skip` glob patterns left out)."""
    path = Path(path).expanduser()
    if path.is_file():
        return fingerprint_files([path], path.parent, like)
    return fingerprint_files(_files(path, recursive, skip), path, like)


def digest(value) -> str:
    """A short stable hash of a JSON-able value (options, records)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_files(before: dict[str, dict], now: dict[str, dict]) -> list[str]:
    """What differs between two `path_fingerprint`s, in words, one entry per file."""
    out = []
    for name in sorted(set(before) | set(now)):
        a, b = before.get(name), now.get(name)
        if a is None:
            out.append(f"{name} is new")
        elif b is None:
            out.append(f"{name} is gone")
        elif a.get("size") != b.get("size"):
            out.append(f"{name} changed size ({a.get('size')} -> {b.get('size')} bytes)")
        elif a.get("method") == b.get("method") == "sampled":
            if a.get("sha256") != b.get("sha256"):
                out.append(f"{name} changed (sampled bytes differ)")
            elif a.get("mtime_ns") != b.get("mtime_ns"):
                out.append(f"{name} was modified (mtime changed; a sampled fingerprint of a large "
                           "file cannot tell a copy from an edit)")
        elif a.get("sha256") != b.get("sha256"):
            out.append(f"{name} changed (content hash {a['sha256'][:12]} -> {b['sha256'][:12]})")
    return out
