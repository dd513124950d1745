"""Layer contribution C(k) from a sweep's results (PAPERS.md section 1).

    C(k) = (S_k - S_base) / (S_full - S_base)

S is the task score (held-out accuracy; for the `lm` task the held-out loss, for which the same
ratio of differences holds): of the base model, of full training, and of training selection k
alone. C is computed per seed, against the full run of the same seed, then averaged;
C > 1 means the selection beat full training. When full training did not move the score
(S_full == S_base) C is undefined for that seed and reported as NaN, never as a made-up number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field

from layerwise.fileio import json_safe
from layerwise.sweeps.spec import BASE_LABEL, FULL_LABEL
from layerwise.training.result import RunResult, Scores


@dataclass
class Contribution:
    label: str
    blocks: list[int]
    seeds: list[int]
    score_mean: float
    score_sd: float
    contribution_mean: float
    contribution_sd: float
    contribution_per_seed: dict[int, float]
    trainable_params: int | None
    trainable_share: float | None
    step_seconds: float | None
    wall_seconds: float | None
    failed: list[str] = field(default_factory=list)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def contributions(rows: list[dict]) -> tuple[float, dict[int, float], list[Contribution]]:
    """(S_base, {seed: S_full}, one Contribution per selection, in run order)."""
    base = next((r for r in rows if r["label"] == BASE_LABEL and r["status"] == "completed"), None)
    if base is None:
        raise ValueError("the sweep has no completed base run")
    s_base = Scores.from_dict(base["metrics"]).score
    results = {id(r): RunResult.from_dict(r["metrics"]) for r in rows
               if r["label"] != BASE_LABEL and r["status"] == "completed" and r["metrics"]}
    full = {r["seed"]: results[id(r)].final.score for r in rows
            if r["label"] == FULL_LABEL and id(r) in results}
    order: list[str] = []
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        if r["label"] == BASE_LABEL:
            continue
        if r["label"] not in by_label:
            order.append(r["label"])
            by_label[r["label"]] = []
        by_label[r["label"]].append(r)
    out = []
    for label in order:
        group = sorted(by_label[label], key=lambda r: r["seed"])
        ok = [r for r in group if id(r) in results]
        per_seed = {}
        for r in ok:
            s_k, s_full = results[id(r)].final.score, full.get(r["seed"])
            denom = None if s_full is None else s_full - s_base
            per_seed[r["seed"]] = (s_k - s_base) / denom if denom else math.nan
        score = _mean_sd([results[id(r)].final.score for r in ok])
        c = _mean_sd(list(per_seed.values()))
        first = results[id(ok[0])] if ok else None
        out.append(Contribution(
            label=label, blocks=list(group[0]["spec"]["blocks"]), seeds=[r["seed"] for r in ok],
            score_mean=score[0], score_sd=score[1], contribution_mean=c[0], contribution_sd=c[1],
            contribution_per_seed=per_seed,
            trainable_params=first.trainable.params if first else None,
            trainable_share=first.trainable.share if first else None,
            step_seconds=_mean_sd([results[id(r)].step_seconds_median for r in ok])[0] if ok else None,
            wall_seconds=_mean_sd([results[id(r)].wall_seconds for r in ok])[0] if ok else None,
            failed=[f"seed {r['seed']}: {r['error']}" for r in group if id(r) not in results]))
    return s_base, full, out


def sweep_notes(rows: list[dict], s_base: float, full: dict[int, float],
                table: list[Contribution]) -> list[str]:
    """Why a sweep's C(k) are missing or undefined, in words (report, contribution.json, CLI)."""
    notes = []
    for seed, s_full in sorted(full.items()):
        if s_full is not None and s_base is not None and s_full == s_base:
            notes.append(f"seed {seed}: full training left the score where it was (S_full = S_base "
                         f"= {s_base:.4g}), so C(k) = (S_k - S_base) / (S_full - S_base) is "
                         "undefined (NaN) for that seed")
    trained = [r for r in rows if r["label"] != BASE_LABEL and r["status"] == "completed"
               and r.get("metrics")]
    silent = [r for r in trained if ((r["metrics"].get("learning_signal") or {}).get("none_at_all"))]
    if silent:
        notes.append(f"{len(silent)} of {len(trained)} training runs had no learning signal: in every "
                     "logged step each group's completions got equal rewards, so every advantage "
                     "and the gradient were zero and nothing trained (a task too hard or too easy "
                     "for the model at this temperature; more --num-generations or another task "
                     "setting gives the groups different rewards)")
    if table and not any(math.isfinite(r.contribution_mean) for r in table):
        notes.append("no selection has a finite C(k)" + (": see above" if notes else ""))
    return notes


def to_json(s_base: float, full: dict[int, float], rows: list[Contribution],
            sweep: dict | None = None, notes: list[str] | None = None,
            identity: dict | None = None, inputs: dict | None = None) -> str:
    doc = {"formula": "C(k) = (S_k - S_base) / (S_full - S_base), per seed, then mean and sd",
           "identity": identity, "inputs": inputs, "notes": notes or [],
           "sweep": sweep or {}, "base_score": s_base, "full_score": {str(k): v for k, v in full.items()},
           "selections": [json_safe(asdict(r), "null") for r in rows]}
    return json.dumps(doc, indent=2) + "\n"


def to_csv(rows: list[Contribution]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["label", "blocks", "seeds", "score_mean", "score_sd", "contribution_mean",
                "contribution_sd", "trainable_params", "trainable_share", "step_seconds",
                "wall_seconds", "failed"])
    for r in rows:
        w.writerow([r.label, " ".join(map(str, r.blocks)), " ".join(map(str, r.seeds)),
                    f"{r.score_mean:.6g}", f"{r.score_sd:.6g}", f"{r.contribution_mean:.6g}",
                    f"{r.contribution_sd:.6g}", r.trainable_params, r.trainable_share,
                    r.step_seconds, r.wall_seconds, "; ".join(r.failed)])
    return buf.getvalue()
