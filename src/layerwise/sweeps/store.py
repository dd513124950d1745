"""The results store of a sweep: one SQLite file that a crash can never corrupt.

Each run is a row keyed by its stable id (a hash of its full spec). The driver alone writes,
each write is one transaction, and the database runs in WAL mode with synchronous=FULL: a
`kill -9` at any moment loses at most the run in flight, and a rerun of the same sweep skips every
run whose row says `completed`. A store remembers the spec of the sweep that created it, so a
different sweep pointed at the same directory is refused instead of silently mixing results.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from layerwise.errors import LayerwiseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,          -- completed | failed
    metrics TEXT,                  -- JSON of the run's metrics (completed and failed runs)
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    finished REAL NOT NULL
);
"""
STORE_NAME = "sweep.sqlite"


class SweepStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise LayerwiseError(f"{self.path} is not a layerwise sweep store: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "SweepStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the sweep this store belongs to -------------------------------------------------------
    def claim(self, sweep_id: str, description: dict[str, Any], force: bool = False) -> None:
        """Tie the store to `sweep_id`; a store of another sweep is refused unless `force`."""
        row = self._db.execute("SELECT value FROM sweep WHERE key = 'sweep_id'").fetchone()
        known = self.identity()
        new = description.get("identity")
        if known and new and not force and (known.get("structure"), known.get("weights")) != (
                new.get("structure"), new.get("weights")):
            from layerwise.models.identity import describe

            raise LayerwiseError(
                f"{self.path.parent} holds runs of {describe(known)} (structure "
                f"{known.get('structure')}, weights {known.get('weights')}); the model now is "
                f"{describe(new)} (structure {new.get('structure')}, weights {new.get('weights')}): "
                "its runs cannot be mixed with these; use another --out (or --force)")
        if row and row[0] != sweep_id and not force:
            other = self._db.execute("SELECT value FROM sweep WHERE key = 'description'").fetchone()
            what = json.loads(other[0]).get("summary", "") if other else ""
            raise LayerwiseError(
                f"{self.path.parent} holds the store of a different sweep ({what or row[0]}); "
                "use another --out, or --force to add this sweep's runs to it")
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO sweep VALUES ('sweep_id', ?)", (sweep_id,))
            self._db.execute("INSERT OR REPLACE INTO sweep VALUES ('description', ?)",
                             (json.dumps(description, sort_keys=True),))

    def description(self) -> dict | None:
        row = self._db.execute("SELECT value FROM sweep WHERE key = 'description'").fetchone()
        return json.loads(row[0]) if row else None

    def inputs(self) -> dict | None:
        """The record of what the store's latest sweep read (layerwise.inputs; None: an older
        store, or a new one)."""
        return (self.description() or {}).get("inputs")

    def current_runs(self) -> list[dict[str, Any]]:
        """The runs of the store's latest sweep inputs: a store that --force gave a second model
        or data set keeps the first one's runs, which C(k) and the estimates never mix in."""
        key = (self.description() or {}).get("inputs_key")
        return [r for r in self.runs() if (r["spec"] or {}).get("inputs") == key]

    def identity(self) -> dict | None:
        """The identity of the model this store's runs were made with (None: an older store)."""
        row = self._db.execute("SELECT value FROM sweep WHERE key = 'description'").fetchone()
        return json.loads(row[0]).get("identity") if row else None

    # -- runs ---------------------------------------------------------------------------------
    def record(self, run_id: str, label: str, seed: int, spec: dict, status: str,
               metrics: dict | None, error: str | None = None) -> None:
        with self._transaction():
            prev = self._db.execute("SELECT attempts FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, label, seed, json.dumps(spec, sort_keys=True), status,
                 json.dumps(metrics, allow_nan=True) if metrics is not None else None, error,
                 (prev[0] + 1) if prev else 1, time.time()))

    def has_runs(self) -> bool:
        return self._db.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None

    def completed_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT run_id FROM runs WHERE status = 'completed'")}

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for run_id, label, seed, spec, status, metrics, error, attempts, finished in self._db.execute(
                "SELECT * FROM runs ORDER BY finished"):
            out.append({"run_id": run_id, "label": label, "seed": seed, "spec": json.loads(spec),
                        "status": status, "metrics": json.loads(metrics) if metrics else None,
                        "error": error, "attempts": attempts, "finished": finished})
        return out

    def _transaction(self) -> "_Tx":
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def open_store(out: str | Path) -> SweepStore:
    return SweepStore(Path(out) / STORE_NAME)
