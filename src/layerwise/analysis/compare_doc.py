"""compare.json: what fine-tuning changed in each tuned checkpoint, as one document, and its files.

`layerwise compare` and `layerwise.compare()` both build the document here from a `Comparison`
(analysis/diff.py), so the command and the Python API write the same compare.json: per run its
global sparsity, mean update rank, block / module / tensor rows and a selection check, then the
overlap of every pair. The selection check is against `expect_layers` when given, else against
the `--layers` a `layerwise train` run was made with (read from its metrics.json).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from layerwise.analysis.diff import Comparison
from layerwise.errors import LayerwiseError
from layerwise.fileio import read_json

log = logging.getLogger(__name__)


def run_labels(tuned: list[str], given: Iterable[str] | None, *, name: str = "labels") -> list[str]:
    """One unique name per tuned checkpoint: `given`, or the run directory (RUN/model -> RUN).

    A repeated name gets `#2`, `#3`, ... `name` is how the caller spells the argument in the
    error for a wrong count ("--labels" on the command line).
    """
    if given is not None:
        labels = [str(x).strip() for x in given]
        if len(labels) != len(tuned) or not all(labels):
            raise LayerwiseError(f"{name} gives {len(labels)} names for {len(tuned)} tuned checkpoints")
    else:  # out/demo/grpo-full-s0/model -> grpo-full-s0
        labels = [Path(t).parent.name if Path(t).name in ("model", "merged") else Path(t).name or t
                  for t in tuned]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # keep names unique
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label}#{seen[label]}"
    return labels


def own_selection(tuned: str) -> str | None:
    """The --layers spec a `layerwise train` run was made with (metrics.json beside model/).

    None for anything else: another checkpoint, a full or LoRA run, or a merged model.
    """
    metrics = Path(tuned).parent / "metrics.json"
    if Path(tuned).name != "model" or not metrics.is_file():
        return None
    config = (read_json(metrics) or {}).get("config") or {}
    if config.get("layers") and not config.get("full") and not config.get("lora"):
        return str(config["layers"])
    return None


def trained_from_other_base(base: str, tuned: str) -> str | None:
    """Why BASE is not the model a `layerwise train` run started from (its RUN/inputs.json), or
    None (the same weight files, or nothing recorded to tell). A changed-outside count against
    another base counts what differs between the two bases as well."""
    from layerwise.analysis.checkpoints import resolve_checkpoint
    from layerwise.fingerprint import changed_files, fingerprint_files
    from layerwise.inputs import read_record

    run = Path(tuned).parent if Path(tuned).name in ("model", "merged") else Path(tuned)
    try:
        record = read_record(run)
    except LayerwiseError:
        return None
    model = (record or {}).get("model") or {}
    if model.get("kind") != "dir" or not model.get("files"):
        return None
    ours = resolve_checkpoint(base).resolve()
    weights = {k: v for k, v in model["files"].items() if k.endswith(".safetensors")}
    files = [ours / name for name in weights if (ours / name).is_file()]
    if len(files) != len(weights):
        return f"{run} was trained from {model.get('path')}; BASE {base} has other weight files"
    diffs = changed_files(weights, fingerprint_files(files, ours, weights))
    return f"{run} was trained from {model.get('path')}; BASE {base}: {diffs[0]}" if diffs else None


def compare_document(base: str, tuned: list[str], labels: list[str], comparison: Comparison,
                     rounding: str, expect_layers: str | None, *,
                     expect_name: str = "expect_layers") -> tuple[dict, list[str]]:
    """(compare.json as a dict, the labels whose changes left `expect_layers`).

    `tuned` and `labels` are in the order of `comparison.diffs`. Without `expect_layers`, each
    `layerwise train` run is checked against its own selection, which never fails the check.
    `expect_name` is how the caller spells `expect_layers` in errors ("--expect-layers").
    """
    from layerwise.analysis.diff import REL_RANK_TOL
    from layerwise.analysis.summary import (block_index_map, group_rows, meta_layers,
                                            selection_check, tensor_rows)
    from layerwise.selection.resolve import resolve_selection

    tols = comparison.diffs[0].tols
    layers = meta_layers(base)  # one meta-device model for grouping and selection checks
    groups = block_index_map(layers)
    if expect_layers and layers is None:
        raise LayerwiseError(f"{expect_name}: cannot find the blocks of {base} (no config.json or "
                             "an unknown architecture)")
    doc: dict = {"base": base, "tolerances": list(tols), "precision": "float32 differences",
                 "rounding": rounding, "rel_rank_tol": REL_RANK_TOL, "runs": [], "overlap": []}
    failed = []
    for label, path, diff in zip(labels, tuned, comparison.diffs):
        ranks = [t.rank_fraction for t in diff.tensors
                 if t.rank_fraction is not None and t.changed[tols[0]] > 0]
        spec = expect_layers or (own_selection(path) if layers is not None else None)
        other_base = trained_from_other_base(base, path)
        if other_base:
            log.warning("%s (changes are counted against BASE, which is not its starting point)",
                        other_base)
        check = None
        if spec:
            check = {"spec": spec, **selection_check(diff, resolve_selection(layers, spec).names, tols[0])}
            if expect_layers and not check["ok"]:
                failed.append(label)
        doc["runs"].append({
            "label": label, "tuned": path, "tuned_dtypes": diff.tuned_dtypes,
            "base_rounded_to": diff.base_rounded_to, "tuned_rounded_to": diff.tuned_rounded_to,
            "global_sparsity": {f"{t:g}": diff.sparsity(t) for t in tols}, "missing": diff.missing,
            "mean_rank_fraction_of_updated_matrices": sum(ranks) / len(ranks) if ranks else None,
            "magnitude_ratio": diff.magnitude_ratio, "selection_check": check,
            "trained_from_other_base": other_base,
            "blocks": group_rows(diff, groups, "block"), "modules": group_rows(diff, groups, "module"),
            "tensors": tensor_rows(diff)})
    for (i, j), o in comparison.overlaps.items():
        doc["overlap"].append({"a": labels[i], "b": labels[j], **o})
    if len(labels) > 1:
        doc["overlap_matrix"] = {"labels": labels, "tol": comparison.overlap_tol,
                                 "o1": comparison.overlap_matrix("o1"),
                                 "chance": comparison.overlap_matrix("o1_rand")}
    return doc, failed


def write_compare(doc: dict, out: Path) -> Path:
    """Write compare.json, per-run CSVs, overlap.csv, plots and report.html to `out`.

    CSVs left in `out` by an earlier compare with more runs (or with an overlap) are removed, so
    the directory describes this document only. Returns the path of report.html.
    """
    from layerwise.analysis.summary import to_csv, to_json
    from layerwise.fileio import atomic_write_text
    from layerwise.reporting.compare_report import compare_html, write_plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("run*_*.csv"):  # from an earlier compare with more runs into this dir
        index = stale.name[3:].split("_", 1)[0]
        if index.isdigit() and int(index) >= len(doc["runs"]):
            stale.unlink()
    if not doc["overlap"]:
        (out / "overlap.csv").unlink(missing_ok=True)
    for i, run in enumerate(doc["runs"]):
        for part in ("tensors", "blocks", "modules"):
            atomic_write_text(out / f"run{i}_{part}.csv", to_csv(run[part]))
    if doc["overlap"]:
        atomic_write_text(out / "overlap.csv", to_csv(doc["overlap"]))
    atomic_write_text(out / "compare.json", to_json(doc))
    return compare_html(doc, write_plots(doc, out), out / "report.html")
