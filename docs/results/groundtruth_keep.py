"""Keep the ground-truth sweeps in the repository, and put them back, so that a sweep spread over
several sittings survives a machine whose out/ is lost (issue 15).

    # after (or during) a sitting: every completed run of every store under OUT, as text
    .venv/bin/python docs/results/groundtruth_keep.py save out/groundtruth docs/results/groundtruth/sweeps
    # on a fresh machine, before resuming: rebuild the stores from the kept runs
    .venv/bin/python docs/results/groundtruth_keep.py restore docs/results/groundtruth/sweeps out/groundtruth
    TASKS=arithmetic bash docs/results/run_groundtruth.sh sweeps out/groundtruth   # resumes

DEST/<sweep>/sweep.json holds the store's identity (its sweep id and description: the spec the
sweep command hashes, so the resumed command is recognised as the same sweep) and
DEST/<sweep>/runs.jsonl one completed run per line (its row; the training history is cut to
every 10th step to keep the file small, each kept entry with the 10-step mean of the loss or
reward). `save` rewrites a run already kept only from the store that ran it (it holds the full
history: the kept line is the original, cut again); `restore` never overwrites a run already in
a store, and refuses a store that belongs to a different sweep (the store's own check).
Only the stores go into the repository; the full run's saved model (full-seed*/) does not.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

from layerwise.sweeps.store import STORE_NAME, SweepStore


# history keys averaged over each kept window (the SFT loss, GRPO's reward): a 10-step mean is
# what groundtruth_table.py ranks blocks by when it truncates the runs
_WINDOWED = ("loss", "reward")


def _thin(metrics: dict | None) -> dict | None:
    """The history entries of every 10th step (and the last entry), each with `<key>_window_mean`:
    the mean of that key over the entries since the previous kept one. Cut by step, not by
    position, so cutting a kept (already cut) history again changes nothing."""
    if metrics and isinstance(metrics.get("history"), list):
        hist = metrics["history"]
        kept, window = [], []
        for i, h in enumerate(hist):
            window.append(h)
            step = h.get("step")
            if (isinstance(step, int) and step % 10 == 0) or i == len(hist) - 1:
                entry = dict(h)
                for key in _WINDOWED:
                    vals = [w[key] for w in window if isinstance(w.get(key), (int, float))]
                    if len(vals) > 1 and key in h:  # a mean of one value is no window mean
                        entry[f"{key}_window_mean"] = sum(vals) / len(vals)
                kept.append(entry)
                window = []
        metrics = {**metrics, "history": kept}
    return metrics


def _history_len(metrics: dict | None) -> int:
    return len((metrics or {}).get("history") or [])


def save(out: Path, dest: Path) -> None:
    for db in sorted(out.glob(f"*/{STORE_NAME}")):
        con = sqlite3.connect(db)
        try:
            meta = dict(con.execute("SELECT key, value FROM sweep"))
        finally:
            con.close()
        with SweepStore(db) as store:
            rows = [r for r in store.runs() if r["status"] == "completed"]
        target = dest / db.parent.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "sweep.json").write_text(json.dumps(
            {"sweep_id": meta.get("sweep_id"),
             "description": json.loads(meta["description"]) if "description" in meta else None},
            indent=1, sort_keys=True) + "\n")
        kept = target / "runs.jsonl"
        before = {json.loads(line)["run_id"]: line for line in kept.read_text().splitlines()
                  if line.strip()} if kept.exists() else {}
        for r in rows:
            if r["run_id"] in before and _history_len(r["metrics"]) <= _history_len(
                    json.loads(before[r["run_id"]])["metrics"]):
                continue  # kept already: a restored run's row would come back re-thinned and
                #           with the restore's time as `finished`; the kept line is the original.
                #           A store that ran it itself (its full history) re-keeps it.
            r["metrics"] = _thin(r["metrics"])
            before[r["run_id"]] = json.dumps(r, sort_keys=True, separators=(",", ":"),
                                             allow_nan=True)
        kept.write_text("".join(line + "\n" for line in before.values()))
        print(f"{db.parent.name}: {len(rows)} completed runs in the store, {len(before)} kept "
              f"in {kept}")


def restore(dest: Path, out: Path) -> None:
    for meta_file in sorted(dest.glob("*/sweep.json")):
        meta = json.loads(meta_file.read_text())
        runs_file = meta_file.parent / "runs.jsonl"
        rows = [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()] \
            if runs_file.exists() else []
        with SweepStore(out / meta_file.parent.name / STORE_NAME) as store:
            store.claim(meta["sweep_id"], meta["description"])
            have = store.completed_ids()
            added = 0
            for r in rows:
                if r["run_id"] in have:
                    continue
                store.record(r["run_id"], r["label"], r["seed"], r["spec"], r["status"],
                             r["metrics"], r.get("error"))
                added += 1
        print(f"{meta_file.parent.name}: {added} runs restored into "
              f"{out / meta_file.parent.name} ({len(rows) - added} were already there)")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("save", "restore"):
        sys.exit("usage: groundtruth_keep.py save OUT DEST | restore DEST OUT")
    (save if sys.argv[1] == "save" else restore)(Path(sys.argv[2]), Path(sys.argv[3]))
