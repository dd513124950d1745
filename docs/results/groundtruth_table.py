"""Tables and plot of the ground-truth sweeps and of the estimators against them (issue 15).

    .venv/bin/python docs/results/groundtruth_table.py docs/results/groundtruth

Reads the kept sweeps (DEST/sweeps/NAME/runs.jsonl, written by groundtruth_keep.py save) and
the kept estimates (DEST/estimates/NAME/seedS-bB.json, written by `run_groundtruth.sh
estimates`: `layerwise estimate` with gradient seed S and B gradient batches; seedS-profile.json:
the profile estimator with seed S; delta.json: the delta estimator, where it has a file of its
own), and writes
DEST/table.md and DEST/contribution.png:

1. per sweep: the base and full scores, the best single block and its C, how many blocks reach
   C >= 1 (seed claim 1), and how well one sweep seed predicts the other (Spearman and top-1
   regret of seed a's ranking against seed b's C): the sweep's own repeatability, not a bound
   for an estimator judged against the mean of both seeds (depth alone beats it on two sweeps);
2. per estimator and sweep: Spearman with the measured C(k) (the mean over the sweep seeds),
   top-1 regret, both as mean ± sd over the estimate's gradient seeds with the worst seed
   beside them (a deterministic row, `metric:*` and `prior:*`, is one value: "1 run"), and the
   cost in
   single-block runs (the estimator's seconds over the sweep's median single-block run; the
   profile's, whose runs record their step seconds, counted in steps at the speed it ran at);
3. per sweep: its own single-block runs cut after s steps, as an estimator (`truncated_rows`):
   how many steps of training every block the ranking needs before it appears.
A sweep still in progress is reported on the blocks it has (the count is shown).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tablekit import mean_sd  # noqa: E402

from layerwise.diagnostics.agreement import spearman  # noqa: E402
from layerwise.sweeps.contribution import contributions  # noqa: E402
from layerwise.sweeps.estimators import depth_priors, metric_seconds  # noqa: E402

# the diagnostics run the estimates were given (run_groundtruth.sh's DIAG): a metric's cost is its
# own seconds there (estimates kept before `estimate` charged each metric the whole run's)
DIAG = Path(__file__).resolve().parent / "smollm2-135m-wikitext2" / "diagnostics.json"

# estimate file -> estimator names as shown: one batch (the issue's "gradient norm at the
# start"), or the mean of B batches
_SUFFIX = {1: " (1 batch)"}


def _rows(name_dir: Path) -> list[dict]:
    path = name_dir / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def _regret(rank_by: dict[int, float], judge: dict[int, float]) -> float:
    shared = [b for b in judge if b in rank_by and math.isfinite(rank_by[b])]
    if not shared:
        return math.nan
    first = max(shared, key=lambda b: (rank_by[b], b))  # ties: the deepest, as `estimate` does
    return max(judge[b] for b in shared) - judge[first]


def _num_blocks(rows: list[dict]) -> int | None:
    """The swept model's depth: its runs' specs say it only through their blocks, so the deepest
    block any run trained + 1 (a sweep kept over `--layers each` covers every block)."""
    blocks = [b for r in rows for b in (r.get("spec") or {}).get("blocks") or []]
    return max(blocks) + 1 if blocks else None


def sweep_summary(name: str, rows: list[dict]) -> dict | None:
    try:
        s_base, full, table = contributions(rows)
    except ValueError:
        return None
    single = [c for c in table if len(c.blocks) == 1 and c.label != "full"]
    per_seed: dict[int, dict[int, float]] = {}
    for c in single:
        for seed, v in c.contribution_per_seed.items():
            if math.isfinite(v):
                per_seed.setdefault(seed, {})[c.blocks[0]] = v
    mean_c = {c.blocks[0]: c.contribution_mean for c in single
              if math.isfinite(c.contribution_mean)}
    # C is the mean over the seeds that have measured every block; a sweep in progress, where no
    # seed is complete yet, is judged on the blocks every seed it has reached has measured (one
    # seed complete and the next begun: that seed alone, on every block)
    depth = _num_blocks(rows)
    measured_seeds = ([s for s in sorted(per_seed) if len(per_seed[s]) == depth]
                      or sorted(per_seed))
    complete = {b: statistics.mean(per_seed[s][b] for s in measured_seeds) for b in mean_c
                if all(b in per_seed[s] for s in measured_seeds)}
    seeds = sorted(per_seed)
    seed_vs_seed = []
    for a in seeds:
        for b in seeds:
            if a != b:
                blocks = sorted(set(per_seed[a]) & set(per_seed[b]))
                rho, _ = spearman([per_seed[a][k] for k in blocks], [per_seed[b][k] for k in blocks])
                seed_vs_seed.append((rho, _regret(per_seed[a], {k: per_seed[b][k] for k in blocks})))
    walls = [c.wall_seconds for c in single if c.wall_seconds]
    # a single-block run in its own median steps (wall seconds over median step seconds): the
    # same at any machine speed, where its seconds are not (the GRPO sweep's seed-1 steps took
    # 1.4-2.2x seed 0's, on an idle machine both times)
    in_steps = [r["metrics"]["wall_seconds"] / r["metrics"]["step_seconds_median"] for r in rows
                if len((r.get("spec") or {}).get("blocks") or []) == 1
                and (r.get("metrics") or {}).get("wall_seconds")
                and (r.get("metrics") or {}).get("step_seconds_median")]
    best = max(complete, key=lambda b: complete[b]) if complete else None
    return {"name": name, "s_base": s_base, "num_blocks": depth, "full": full,
            "measured_seeds": measured_seeds, "seeds_begun": sorted(per_seed),
            "mean_c": mean_c, "complete": complete, "per_seed": per_seed, "best": best, "seed_vs_seed": seed_vs_seed,
            "run_seconds": statistics.median(walls) if walls else None,
            "run_in_steps": statistics.median(in_steps) if in_steps else None,
            "steps": (rows[0]["spec"].get("train") or {}).get("steps") if rows else None}


PROFILE = ("profile", "profile:logp")  # the profile's estimators (the same short runs)


def estimator_rows(sweep: dict, est_dir: Path) -> dict[str, list[dict]]:
    """{estimator: [{spearman, regret, seconds}, one per gradient seed]} against sweep's mean C."""
    measured = sweep["complete"]
    out: dict[str, list[dict]] = {}
    diag_seconds = metric_seconds(json.loads(DIAG.read_text())) if DIAG.is_file() else {}
    files = (sorted(est_dir.glob("seed*-b*.json")) + sorted(est_dir.glob("seed*-profile.json"))
             + sorted(est_dir.glob("delta.json")))
    for path in files:
        doc = json.loads(path.read_text())
        only = (set(PROFILE) if path.name.endswith("-profile.json")  # in files of their own
                else {"delta"} if path.name == "delta.json" else None)
        batches = int(doc.get("gradient_batches") or 1)
        times = {r["estimator"]: r.get("seconds") for r in doc["rows"]}
        times.update({k: v for k, v in diag_seconds.items() if k in times})
        # the profile's runs record their step seconds: its cost in single-block runs at the
        # speed the machine had then (its seconds in its own steps, over a run's), not against
        # runs timed in another sitting
        step_s = [t for t in (doc.get("profile") or {}).get("step_seconds") or [] if t]
        matched = ({n: times[n] / statistics.mean(step_s) / sweep["run_in_steps"]
                    for n in PROFILE if times.get(n)}
                   if step_s and sweep.get("run_in_steps") else {})
        for name, values in doc["estimates"].items():
            if (only is not None and name not in only) or (only is None and name in PROFILE):
                continue
            shown = name
            if batches in _SUFFIX and name in ("gradient", "adam-gain", "adam-val"):
                shown = name + _SUFFIX[batches]
            elif batches > 1 and name in ("gradient", "adam-gain", "adam-val"):
                shown = f"{name} ({batches} batches)"
            elif name == "probe":
                shown = f"probe ({doc.get('probe_steps')} steps)"
            elif name in PROFILE:
                prof = doc.get("profile") or {}
                shown = f"{name} ({len(prof.get('blocks') or [])} blocks x {prof.get('steps')} steps)"
            blocks = sorted(measured)
            est = {b: values[b] for b in blocks if b < len(values) and values[b] is not None}
            rho, _ = spearman([est.get(b) for b in blocks], [measured[b] for b in blocks])
            out.setdefault(shown, []).append({
                "spearman": rho, "regret": _regret(est, measured), "seconds": times.get(name),
                "cost": matched.get(name), "file": path.name})
    if out and sweep.get("num_blocks"):  # depth alone (estimates kept before `estimate` wrote
        blocks = sorted(measured)         # the priors): one value each, no seed, no cost
        for name, values in depth_priors(sweep["num_blocks"]).items():
            if name not in out:
                rho, _ = spearman([values[b] for b in blocks], [measured[b] for b in blocks])
                out[name] = [{"spearman": rho, "regret": _regret(
                    {b: values[b] for b in blocks}, measured), "seconds": 0.0, "file": None}]
    return out


def _value(values: list[float]) -> str:
    """The one value of a deterministic row (its copies, one per gradient seed, are equal)."""
    if not values:
        return "–"
    if max(values) - min(values) > 1e-12:
        raise SystemExit(f"a deterministic estimator gave different values: {values}")
    return f"{values[0]:.3f}"


def truncated_rows(rows: list[dict], sweep: dict) -> list[dict]:
    """The sweep's own single-block runs cut short, as an estimator: after s steps, rank the
    blocks by the training signal of steps s/2..s (SFT: minus the loss; GRPO: the reward; the
    kept 10-step window means where the run was kept with them, else the kept 10th-step values).
    What a probe that trains every block for s steps of the real run (fresh batches, the sweep's
    rate) would see. One row per kept step s: Spearman and top-1 regret of each seed's cut runs
    against the other seeds' mean C (the runs' own end shares their noise), mean ± sd over the
    sweep seeds, and the cost: L blocks x s steps of single-block training, in
    single-block runs (their median training seconds over the median wall seconds: the
    evaluations and the loading a run also pays are not charged)."""
    measured = sweep["complete"]
    hist: dict[int, dict[int, list[dict]]] = {}
    trains, walls = [], []
    for r in rows:
        spec = r.get("spec") or {}
        blocks = spec.get("blocks") or []
        m = r.get("metrics") or {}
        if spec.get("kind") == "full" or len(blocks) != 1 or not m.get("history"):
            continue
        hist.setdefault(r["seed"], {})[blocks[0]] = m["history"]
        if m.get("train_seconds") and m.get("wall_seconds"):
            trains.append(m["train_seconds"])
            walls.append(m["wall_seconds"])
    if not hist or not measured:
        return []
    steps = sweep["steps"] or max(h["step"] for hs in hist.values() for v in hs.values()
                                  for h in v)
    grpo = any("reward" in h for hs in hist.values() for v in hs.values() for h in v)
    key, sign = ("reward", 1.0) if grpo else ("loss", -1.0)
    train_share = statistics.median(trains) / statistics.median(walls) if walls else 1.0
    marks = sorted({h["step"] for hs in hist.values() for v in hs.values() for h in v
                    if key in h})
    per_c = sweep["per_seed"]

    def judge(seed: int) -> dict[int, float]:
        """C(k) to judge seed's cut runs by: the other sweep seeds' mean, since the same runs'
        own end would share their noise (one sweep seed: those, flagged as optimistic)."""
        others = [per_c[o] for o in per_c if o != seed]
        if not others:
            return per_c.get(seed, measured)
        return {b: statistics.mean(o[b] for o in others) for b in measured
                if all(b in o for o in others)}

    out = []
    for s in marks:
        per_seed = []
        for seed, by_block in sorted(hist.items()):
            measured = judge(seed)
            score = {}
            for b, h in by_block.items():
                vals = [e.get(f"{key}_window_mean", e[key]) for e in h
                        if key in e and s / 2 < e["step"] <= s]
                if vals and b in measured:
                    score[b] = sign * statistics.mean(vals)
            blocks = sorted(score)
            if len(blocks) >= 3:
                rho, _ = spearman([score[b] for b in blocks], [measured[b] for b in blocks])
                per_seed.append((rho, _regret(score, measured)))
        if per_seed:
            out.append({"step": s, "signal": key, "per_seed": per_seed,
                        "cost": len(sweep["complete"]) * s / steps * train_share,
                        "same_runs": len(per_c) < 2})
    return out


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/groundtruth")
    sweeps = [s for d in sorted((dest / "sweeps").glob("*/"))
              if (s := sweep_summary(d.name, _rows(d))) is not None]
    if not sweeps:
        raise SystemExit(f"no kept sweep with a completed base run under {dest / 'sweeps'}")
    lines = ["| sweep | steps | blocks (both seeds) | S_base | S_full per seed | best block: C "
             "| max C of any block, any seed | blocks with mean C ≥ 1 | seed vs seed: Spearman "
             "| seed vs seed: top-1 regret |", "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for s in sweeps:
        full = ", ".join(f"{v:.3f}" for _, v in sorted(s["full"].items()))
        best = f"{s['best']}: {s['complete'][s['best']]:.3f}" if s["best"] is not None else "–"
        top = max((v for seed in s["per_seed"].values() for v in seed.values()), default=math.nan)
        over = sum(1 for v in s["complete"].values() if v >= 1.0)
        lines.append(f"| {s['name']} | {s['steps']} | {len(s['complete'])} | {s['s_base']:.3f} "
                     f"| {full} | {best} | {top:.3f} | {over} "
                     f"| {mean_sd([r for r, _ in s['seed_vs_seed'] if math.isfinite(r)])} "
                     f"| {mean_sd([g for _, g in s['seed_vs_seed'] if math.isfinite(g)])} |")
    est_lines, footnote = [], False
    for s in sweeps:
        est_dir = dest / "estimates" / s["name"]
        table = estimator_rows(s, est_dir) if est_dir.is_dir() else {}
        if not table:
            continue
        est_lines += [f"\n**{s['name']}** ({len(s['complete'])} blocks; measured C: the mean of "
                      f"{len(s['measured_seeds'])} sweep seed(s)"
                      + (f" (of {len(s['seeds_begun'])} begun: the sweep is in progress)"
                         if len(s['seeds_begun']) > len(s['measured_seeds']) else "")
                      + "; a single-block run: "
                      f"{s['run_seconds']:.0f} s, median)\n",
                      "| estimator | Spearman | top-1 regret | runs | worst run: Spearman, "
                      "regret | cost in single-block runs |",
                      "|---|---:|---:|---:|---|---:|"]
        order = sorted(table, key=lambda n: -statistics.mean(
            [r["spearman"] for r in table[n] if math.isfinite(r["spearman"])] or [-9]))
        for name in order:
            rs = table[name]
            secs = [r["seconds"] for r in rs if r["seconds"]]
            matched = [r["cost"] for r in rs if r.get("cost")]
            cost = ("0" if name.startswith("prior:") else
                    f"{statistics.median(matched):.2f}¹" if matched and len(matched) == len(rs)
                    else f"{statistics.median(secs) / s['run_seconds']:.2f}"
                    if secs and s["run_seconds"] else "–")
            footnote = footnote or cost.endswith("¹")
            rhos = [r["spearman"] for r in rs if math.isfinite(r["spearman"])]
            regrets = [r["regret"] for r in rs if math.isfinite(r["regret"])]
            if name.startswith(("prior:", "metric:")) or len(rs) == 1:
                # one deterministic computation (depth; a diagnostics file the gradient seeds do
                # not touch) or one run: a value, not a mean over seeds
                runs = ("– (free)" if name.startswith("prior:") else "1 run")
                est_lines.append(f"| {name} | {_value(rhos)} | {_value(regrets)} | {runs} | – "
                                 f"| {cost} |")
                continue
            worst_cost = max(matched) if matched and len(matched) == len(rs) else None
            worst = (f"{min(rhos):.3f}, {max(regrets):.3f}"
                     + (f", {worst_cost:.2f} runs" if worst_cost is not None else ""))
            est_lines.append(f"| {name} | {mean_sd(rhos)} | {mean_sd(regrets)} | "
                             f"{len(rs)} seeds | {worst} | {cost} |")
    trunc_lines = []
    for s in sweeps:
        trows = truncated_rows(_rows(dest / "sweeps" / s["name"]), s)
        if not trows:
            continue
        judged = ("judged by the same runs' C: one sweep seed, optimistic" if trows[0]["same_runs"]
                  else "each seed's cut runs judged by the other seed's C")
        trunc_lines += [f"\n**{s['name']}**, every single-block run cut after s steps, blocks "
                        f"ranked by the {trows[0]['signal']} of steps s/2..s "
                        f"({len(trows[0]['per_seed'])} sweep seeds; {judged})\n",
                        "| s (steps of every block) | Spearman | top-1 regret "
                        "| cost in single-block runs |", "|---:|---:|---:|---:|"]
        for t in trows:
            trunc_lines.append(
                f"| {t['step']} | {mean_sd([r for r, _ in t['per_seed'] if math.isfinite(r)])} "
                f"| {mean_sd([g for _, g in t['per_seed'] if math.isfinite(g)])} "
                f"| {t['cost']:.1f} |")
    if footnote:
        est_lines.append("\n¹ at the machine's speed when it ran: the estimate's seconds in its "
                         "own training steps (its runs' median step seconds) over a single-block "
                         "run's seconds in its steps; the other costs are seconds over the "
                         "sweep's median run seconds, which can come from another sitting")
    text = ("\n".join(lines) + "\n" + "\n".join(est_lines) + "\n"
            + ("\n".join(trunc_lines) + "\n" if trunc_lines else ""))
    (dest / "table.md").write_text(text)
    sys.stdout.write(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 3.4), squeeze=False)
    for ax, s in zip(axes[0], sweeps):
        for seed, values in sorted(s["per_seed"].items()):
            ks = sorted(values)
            ax.plot(ks, [values[k] for k in ks], ".", alpha=0.6, label=f"seed {seed}")
        ks = sorted(s["complete"])
        ax.plot(ks, [s["complete"][k] for k in ks], "-", color="black", label="mean")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{s['name']} ({s['steps']} steps)", fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylabel("C(k)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest / "contribution.png", dpi=110)


if __name__ == "__main__":
    main()
