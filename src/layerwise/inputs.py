"""What a run read, as one record, and the check that reading it again gives the same thing.

A block-only checkpoint reloads every frozen tensor from `--model`; a sweep's store keeps the base
model's score; a tune keeps its estimates; estimate reuses a sweep's runs. Each of these reads its
inputs a second time, and a second read of a changed input is a silent wrong result: the numbers
of two different models (or data sets) reported as one. So every such command records, when it
starts, what it read:

- `model`: how `--model` resolved (its absolute path; a tiny model's spec and seed) and the
  fingerprint of its weight files (`*.safetensors`, their index, config.json, generation_config,
  tying.json) — content hashes, or sampled ones for a big checkpoint (`layerwise.fingerprint`);
- `tokenizer`: the model directory's tokenizer files (tokenizer.json, its config, the chat
  template, vocab/merges...), or a tiny model's tokenizer spec and its training text;
- `data`: every file or directory the run names — task and dataset files, `--eval-dataset`,
  `--chat-template`, reward and task `.py` files, `--pairs`, `--general-data`, `--data`,
  `--lm-eval-include`, the files inside `top:K@FILE`, `sample:...@FILE`, `growth@FILE`,
  `map:FILE`, `similar:K@FILE`, the two `--mask-from` checkpoints, and a built-in task's default
  files (GSM8K's, WikiText's). A hub name (`hf:NAME`) is recorded as the name only;
- `options`: the command's settings (a run's whole configuration);
- `code`: the versions of layerwise, torch, transformers, TRL, PEFT, datasets, lm-eval. The git
  commit of a source checkout is recorded but not compared (editing one's own checkout between
  interrupt and resume is allowed; upgrading a package is not).

`check(before, now, where, fresh)` compares two records and refuses the first difference in one
line that names it and how to start afresh. Nothing is written before the check.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError
from layerwise.fileio import atomic_write_text
from layerwise.fingerprint import changed_files, digest, path_fingerprint

RECORD_FILE = "inputs.json"
RECORD_VERSION = 1
PACKAGES = ("layerwise", "torch", "transformers", "trl", "peft", "datasets", "lm_eval")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model",
                   "spiece.model", "chat_template.jinja", "chat_template.json")
MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json",
               "generation_config.json", "tying.json")
# Fields of a run's configuration that are not what it read: where it writes, how it reports.
NOT_INPUTS = frozenset({"out", "overwrite", "progress", "report_to", "save_every", "resume", "device",
                        "dry_run"})
_PATHISH = re.compile(r"[^:@,;=\s]+")


# ---- the model and its tokenizer --------------------------------------------------------------
def _dir_files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and any(p.match(g) for g in patterns))


def _files_section(path: Path, files: list[Path], like: dict | None) -> dict:
    from layerwise.fingerprint import fingerprint_files

    return {"path": str(path), "files": fingerprint_files(files, path, (like or {}).get("files"))}


def model_dir(spec: str | None) -> Path | None:
    """The directory `load_model(spec)` reads its weights and tokenizer from; None for a tiny
    model, or a hub id not in the local cache."""
    from layerwise.analysis.checkpoints import resolve_checkpoint

    text = spec or "embedded"
    if text.startswith("tiny:"):
        return None
    path = Path(text).expanduser()
    if text == "embedded" or (text.endswith(".gguf") and path.is_file()):
        return resolve_checkpoint(text)  # the converted safetensors directory load_model reads
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a hub id): recorded by name
        return None


def model_sections(spec: str | None, *, seed: int, tokenizer: str | None = None,
                   tokenizer_data: str | None = None, like: dict | None = None) -> tuple[dict, dict]:
    """The `model` and `tokenizer` sections of a record for `--model spec`."""
    like = like or {}
    text = spec or "embedded"
    if text.startswith("tiny:"):
        tok = {"spec": tokenizer or "byte"}
        if tokenizer_data and (tokenizer or "byte") != "byte":
            tok["data"] = _data_entry(tokenizer_data, (like.get("tokenizer") or {}).get("data"))
        # a tiny model is random from the seed: the spec, the seed and the code are its weights
        return {"spec": text, "kind": "tiny", "seed": seed}, tok
    path = model_dir(text)
    if path is None:
        return ({"spec": text, "kind": "hub", "note": "not in the local cache: recorded by name"},
                {"spec": text})
    model = {"spec": text, "kind": "dir",
             **_files_section(path, _dir_files(path, MODEL_FILES), like.get("model"))}
    tok = _files_section(path, _dir_files(path, TOKENIZER_FILES), like.get("tokenizer"))
    return model, tok


# ---- data files --------------------------------------------------------------------------------
def _data_entry(value: str, like: dict | None = None) -> dict:
    path = Path(value).expanduser()
    if not path.exists():
        return {"path": str(value), "missing": True}
    return {"path": str(path.resolve()),
            "files": path_fingerprint(path, like=(like or {}).get("files"))}


def named_paths(value: Any) -> list[str]:
    """The existing files and directories a setting names: the whole string, or a part of it
    between the grammar's separators (`top:K@FILE`, `FILE.py:FUNC=W`, `BASE,TUNED`)."""
    found: list[str] = []
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, dict):
            for inner in v.values():
                found += named_paths(inner)
            continue
        if not isinstance(v, str) or not v or v.startswith("hf:"):
            continue
        candidates = [v] + _PATHISH.findall(v)
        for c in candidates:
            if ("/" in c or "." in c) and Path(c).expanduser().exists() and c not in found:
                found.append(c)
                break
    return found


def data_section(settings: dict[str, Any], task: Any = None, like: dict | None = None) -> dict:
    """{role: entry} for every file or directory named by `settings` (a run's configuration) or
    by the task object's own fields (a built-in task's default data files)."""
    like = like or {}
    roles: dict[str, str] = {}
    for key, value in settings.items():
        if key in NOT_INPUTS or key in ("model", "tokenizer_data"):
            continue
        if key == "mask_from" and value:
            from layerwise.analysis.checkpoints import resolve_checkpoint

            for i, part in enumerate(str(value).split(",")):
                if Path(part).expanduser().exists() or part == "embedded":
                    roles[f"mask_from[{i}]"] = str(resolve_checkpoint(part.strip()))
            continue
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, inner in items:
            name = key if sub is None else f"{key}.{sub}"
            for i, path in enumerate(named_paths(inner)):
                roles[name if i == 0 else f"{name}[{i}]"] = path
    task = getattr(task, "_task", task)  # a validation view: the task it wraps
    if task is not None and is_dataclass(task):
        for f in fields(task):
            if f.name.startswith("_"):
                continue
            for i, path in enumerate(named_paths(getattr(task, f.name, None))):
                resolved = str(Path(path).expanduser().resolve())
                if resolved not in {str(Path(p).expanduser().resolve()) for p in roles.values()}:
                    roles[f"task.{f.name}" if i == 0 else f"task.{f.name}[{i}]"] = path
    return {role: _data_entry(path, like.get(role)) for role, path in sorted(roles.items())}


# ---- code --------------------------------------------------------------------------------------
def _commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def code_section() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "commit": _commit()}


# ---- the record --------------------------------------------------------------------------------
def options_of(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(settings.items()) if k not in NOT_INPUTS}


def record(*, model: str | None, settings: dict[str, Any], seed: int = 0, task: Any = None,
           tokenizer: str | None = None, tokenizer_data: str | None = None,
           like: dict | None = None) -> dict:
    """What a command reads, from its `--model` and its settings (see the module docstring).
    `like`: an earlier record, so that each file is fingerprinted the way it was then."""
    like = like or {}
    model_sec, tok_sec = model_sections(model, seed=seed, tokenizer=tokenizer,
                                        tokenizer_data=tokenizer_data, like=like)
    return {"version": RECORD_VERSION, "model": model_sec, "tokenizer": tok_sec,
            "data": data_section(settings, task, like.get("data")),
            "options": json.loads(json.dumps(options_of(settings), default=str)),
            "code": code_section()}


def identity_key(rec: dict) -> str:
    """A short key of what a record says the inputs *are* (model, tokenizer, data), without where
    they live or when they were modified: two stores of the same inputs share it."""
    def strip(section):
        if isinstance(section, dict):
            return {k: strip(v) for k, v in section.items() if k not in ("path", "mtime_ns")}
        return section
    return digest({k: strip(rec.get(k)) for k in ("model", "tokenizer", "data")})


def _section_changes(name: str, before: dict, now: dict) -> list[str]:
    if before == now:
        return []
    if name == "options":
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return [f"setting {k} was {before.get(k)!r}, now {now.get(k)!r}" for k in keys]
    if name == "code":
        b, n = before.get("versions", {}), now.get("versions", {})
        return [f"{k} was {b.get(k)}, now {n.get(k)}" for k in sorted(set(b) | set(n))
                if b.get(k) != n.get(k)]
    if name == "data":
        out = []
        for role in sorted(set(before) | set(now)):
            a, b = before.get(role), now.get(role)
            if a is None:
                continue  # a path the settings name that did not exist then: the run's own output
            elif b is None:
                out.append(f"data {role} {a.get('path')} is gone")
            elif a.get("path") != b.get("path"):
                out.append(f"data {role} was {a.get('path')}, now {b.get('path')}")
            elif b.get("missing"):
                out.append(f"data {role} {a.get('path')} is gone")
            else:
                diffs = changed_files(a.get("files") or {}, b.get("files") or {})
                out += [f"data {role} {a.get('path')}: {d}" for d in diffs]
        return out
    what = "the model" if name == "model" else "the tokenizer"
    out = []
    if before.get("spec") != now.get("spec"):
        out.append(f"{what} was {before.get('spec')!r}, now {now.get('spec')!r}")
    elif before.get("kind") != now.get("kind") and name == "model":
        where = {"dir": f"the directory {now.get('path')}", "hub": "no local directory",
                 "tiny": "a tiny model"}.get(now.get("kind"), repr(now.get("kind")))
        out.append(f"{what} {now.get('spec')!r} was {before.get('path') or before.get('kind')}; "
                   f"now it names {where} (run from the directory it started in, or give an "
                   "absolute path)")
    elif before.get("seed") != now.get("seed"):
        out.append(f"{what} was built with seed {before.get('seed')}, now {now.get('seed')}")
    if before.get("path") != now.get("path") and not out:
        out.append(f"{what} was read from {before.get('path')}, now from {now.get('path')}")
    if isinstance(before.get("data"), dict) or isinstance(now.get("data"), dict):
        out += _section_changes("data", {"tokenizer text": before.get("data")} if before.get("data") else {},
                                {"tokenizer text": now.get("data")} if now.get("data") else {})
    if not out:
        out += [f"{what}'s file {d}" for d in changed_files(before.get("files") or {},
                                                            now.get("files") or {})]
    return out or [f"{what} changed"]


def changes(before: dict, now: dict, *, sections: tuple[str, ...] = ("model", "tokenizer", "data",
                                                                     "options", "code")) -> list[str]:
    """Every difference between two records, in words, the model's first."""
    out = []
    for name in sections:
        out += _section_changes(name, before.get(name) or {}, now.get(name) or {})
    return out


def check(before: dict | None, now: dict, name: str, since: str | None, fresh: str, *,
          sections: tuple[str, ...] = ("model", "tokenizer", "data", "options", "code")) -> None:
    """Refuse in one line if `now` differs from `before`: `name` is what is being re-read
    ("--resume R"), `since` when it was first read ("the run started"), `fresh` how to start
    afresh."""
    if before is None:
        raise LayerwiseError(f"{name}: no record of what it read (made by an older layerwise), so "
                             f"it cannot be checked; {fresh}")
    found = changes(before, now, sections=sections)
    if found:
        more = f" (and {len(found) - 1} more difference{'s' if len(found) > 2 else ''})" \
            if len(found) > 1 else ""
        when = f"since {since}, " if since else ""
        raise LayerwiseError(f"{name}: {when}{found[0]}{more}; nothing was written: {fresh}")


def write_record(out: Path, rec: dict) -> Path:
    return atomic_write_text(Path(out) / RECORD_FILE, json.dumps(rec, indent=1, sort_keys=True) + "\n")


def read_record(out: Path) -> dict | None:
    path = Path(out) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LayerwiseError(f"{path} is unreadable ({exc}): the run's inputs cannot be "
                             "checked") from exc
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        raise LayerwiseError(f"{path} is not an inputs record of this layerwise "
                             f"(version {rec.get('version') if isinstance(rec, dict) else '?'})")
    return rec
