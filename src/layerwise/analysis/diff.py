"""What fine-tuning changed: update sparsity, update rank and overlap (PAPERS.md section 3).

- Update sparsity at tolerance tol: 1 - ||theta_1 - theta_0||_0 / n, an entry counting as unchanged
  when |delta| <= tol (default 1e-5; the paper also reports 1e-6..1e-8 and tol = 0 is exact).
  Differences are always taken in float32, whatever the checkpoints' dtype.
- Update rank of each 2-D matrix: torch.linalg.matrix_rank(delta) with PyTorch's default tolerance,
  and with a relative tolerance (singular values above rel x the largest), as rank / min(shape);
  plus the effective rank exp(H(p)), p = normalised singular values.
- Overlap of two runs' updated sets I1, I2: o1 = |I1 ∩ I2| / |I1|, o2 = |I1 ∩ I2| / |I2|, with the
  chance baselines o1_rand = 1 - s2 and o2_rand = 1 - s1 (s = sparsity).
Everything streams: one tensor (of each checkpoint) in memory at a time, and `compare_many` reads
the base once for any number of tuned runs.

Precision: a run trained in bf16 started from the base rounded to bf16, so by default ("auto") a
base tensor stored in more bits than the tuned one is rounded to the tuned dtype before the fp32
subtraction; otherwise every entry would count as changed by the rounding alone. `rounding` may
also name a dtype to round both sides to ("what would this diff be had both been saved in bf16"),
or "none" for the raw difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from layerwise.analysis.checkpoints import PRECISION, ROUNDING, Checkpoint
from layerwise.errors import LayerwiseError

DEFAULT_TOLS = (1e-5,)
REL_RANK_TOL = 1e-3
ROUNDING_MODES = ("auto", "none", *ROUNDING)


@dataclass
class TensorDiff:
    name: str
    shape: tuple[int, ...]
    numel: int
    changed: dict[float, int]  # tol -> entries with |delta| > tol
    rank: int | None = None
    rank_rel: int | None = None
    effective_rank: float | None = None
    abs_base_sum: float = 0.0  # sum of |theta_0| over all entries
    abs_base_changed_sum: float = 0.0  # ... over the entries changed at the first tolerance

    @property
    def magnitude_ratio(self) -> float | None:
        """mean |theta_0| of the changed entries / mean |theta_0| of all entries (first tol)."""
        first = next(iter(self.changed.values()), 0)  # changed is keyed by tols, in their order
        return _ratio(self.abs_base_changed_sum, first, self.abs_base_sum, self.numel)

    def sparsity(self, tol: float) -> float:
        return 1.0 - self.changed[tol] / self.numel if self.numel else 1.0

    @property
    def rank_fraction(self) -> float | None:
        return None if self.rank is None else self.rank / min(self.shape)


@dataclass
class CheckpointDiff:
    tols: tuple[float, ...]
    tensors: list[TensorDiff] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # side -> names only on the other
    rounding: str = "auto"
    base_rounded_to: list[str] = field(default_factory=list)  # dtypes the base was rounded to
    tuned_rounded_to: list[str] = field(default_factory=list)
    tuned_dtypes: list[str] = field(default_factory=list)  # dtypes the tuned tensors are stored in

    def sparsity(self, tol: float) -> float:
        n = sum(t.numel for t in self.tensors)
        return 1.0 - sum(t.changed[tol] for t in self.tensors) / n if n else 1.0

    @property
    def magnitude_ratio(self) -> float | None:
        """Mean over the changed entries (first tol) of |theta_0| / mean |theta_0| of its tensor:
        the per-tensor ratios weighted by their changed counts, so tensors of different scale
        (norm weights near 1, projections near 0.02) do not bias it. About 1 when updates land
        anywhere; far below 1 when only entries near zero changed, which is what rounding to a
        low-precision dtype leaves (a step under half the dtype's spacing at |theta_0| is lost)."""
        weighted = n_changed = 0.0
        for t in self.tensors:
            r = t.magnitude_ratio
            if r is not None:
                c = t.changed[self.tols[0]]
                weighted += r * c
                n_changed += c
        return weighted / n_changed if n_changed else None


def _ratio(changed_sum: float, n_changed: int, total_sum: float, n: int) -> float | None:
    if not n_changed or not n or total_sum <= 0:
        return None
    return (changed_sum / n_changed) / (total_sum / n)


def _abs_sums(w: torch.Tensor, changed: torch.Tensor, chunk: int = 1 << 22) -> tuple[float, float]:
    """(sum |w|, sum |w| where changed), in chunks so no full-size temporary is made."""
    fw, fm = w.reshape(-1), changed.reshape(-1)
    total = inside = 0.0
    for start in range(0, fw.numel(), chunk):
        a = fw[start:start + chunk].abs()
        total += float(a.sum(dtype=torch.float64))
        inside += float(a[fm[start:start + chunk]].sum(dtype=torch.float64))
    return total, inside


def check_tols(tols) -> tuple[float, ...]:
    tols = tuple(float(t) for t in tols)
    if not tols:
        raise LayerwiseError("no tolerance given")
    bad = [t for t in tols if not t >= 0 or math.isnan(t)]
    if bad:
        raise LayerwiseError(f"tolerance {bad[0]} is invalid: tolerances must be >= 0")
    return tols


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDING_MODES:
        raise LayerwiseError(f"rounding {rounding!r} is invalid: use one of {', '.join(ROUNDING_MODES)}")
    return rounding


def _pair_names(base: Checkpoint, tuned: Checkpoint) -> tuple[list[str], dict[str, list[str]]]:
    b, t = set(base.names), set(tuned.names)
    missing = {"tuned": sorted(b - t), "base": sorted(t - b)}
    if b and t and not b & t:
        raise LayerwiseError(f"{base.path} and {tuned.path} share no tensor name (e.g. "
                             f"{min(b)} vs {min(t)}): checkpoints of different models, nothing to "
                             "compare")
    for name in sorted(b & t):
        if base.shape(name) != tuned.shape(name):
            raise LayerwiseError(f"checkpoints differ in shape at tensor {name}: "
                                 f"{base.shape(name)} vs {tuned.shape(name)} (different architectures?)")
    return sorted(b & t), missing


def rounding_for(base: Checkpoint, tuned: Checkpoint, name: str, rounding: str = "auto"
                 ) -> tuple[torch.dtype | None, torch.dtype | None]:
    """(dtype to round the base tensor to, dtype to round the tuned one to) before subtracting."""
    if rounding == "none":
        return None, None
    if rounding != "auto":
        return ROUNDING[rounding], ROUNDING[rounding]
    bd, td = base.dtype(name), tuned.dtype(name)
    if bd.is_floating_point and td.is_floating_point and PRECISION[td] < PRECISION[bd]:
        return td, None
    return None, None


def fp32_delta(base: Checkpoint, tuned: Checkpoint, name: str, rounding: str = "auto") -> torch.Tensor:
    """tuned - base for one tensor, in float32, with the base rounded as `rounding_for` says."""
    rb, rt = rounding_for(base, tuned, name, rounding)
    return tuned.tensor(name, rt) - base.tensor(name, rb)


def _rank_stats(delta: torch.Tensor) -> tuple[int, int, float]:
    """(rank at torch.linalg.matrix_rank's default tolerance, rank at REL_RANK_TOL, effective rank)
    from one SVD: the default keeps singular values > max(shape) x eps(float32) x the largest."""
    s = torch.linalg.svdvals(delta)
    top = float(s[0]) if s.numel() else 0.0
    rank = int((s > max(delta.shape) * torch.finfo(delta.dtype).eps * top).sum()) if top > 0 else 0
    rank_rel = int((s > REL_RANK_TOL * top).sum()) if top > 0 else 0
    p = s / s.sum() if float(s.sum()) > 0 else s
    nz = p[p > 0]
    eff = float(torch.exp(-(nz * nz.log()).sum())) if nz.numel() else 0.0
    return rank, rank_rel, eff


def _open(c: str | Checkpoint) -> Checkpoint:
    return c if isinstance(c, Checkpoint) else Checkpoint(c)


@dataclass
class Comparison:
    """One base against several tuned runs: a diff per run, an overlap per pair of runs."""

    diffs: list[CheckpointDiff]
    overlaps: dict[tuple[int, int], dict[str, float]]  # (i, j), i < j -> overlap at overlap_tol
    overlap_tol: float

    def overlap_matrix(self, key: str = "o1") -> list[list[float]]:
        """m[i][j] = o1 of runs i, j (share of i's updated entries also updated in j); diagonal 1."""
        n = len(self.diffs)
        m = [[1.0 if i == j else math.nan for j in range(n)] for i in range(n)]
        for (i, j), o in self.overlaps.items():
            m[i][j] = o[key]
            m[j][i] = o["o2" if key == "o1" else "o2_rand" if key == "o1_rand" else key]
        return m


def compare_many(base: str | Checkpoint, tuned: list, tols=DEFAULT_TOLS, ranks: bool = True,
                 rounding: str = "auto", overlap_tol: float | None = None) -> Comparison:
    """Diff every tuned checkpoint against `base` and intersect their updated sets pairwise, in one
    streaming pass: per tensor name, the base tensor and each run's tensor are read once."""
    tols = check_tols(tols)
    check_rounding(rounding)
    (otol,) = check_tols([tols[0] if overlap_tol is None else overlap_tol])
    base = _open(base)
    runs = [_open(t) for t in tuned]
    names, diffs = [], []
    for run in runs:  # metadata only: shape mismatches fail before any tensor is read
        common, missing = _pair_names(base, run)
        names.append(set(common))
        diffs.append(CheckpointDiff(tols=tols, missing=missing, rounding=rounding))
    counts = {(i, j): [0, 0, 0, 0] for i in range(len(runs)) for j in range(i + 1, len(runs))}
    for name in base.names:
        masks = {}
        for i, run in enumerate(runs):
            if name not in names[i]:
                continue
            rb, rt = rounding_for(base, run, name, rounding)
            for dtype, seen in ((rb, diffs[i].base_rounded_to), (rt, diffs[i].tuned_rounded_to),
                                (run.dtype(name), diffs[i].tuned_dtypes)):
                if dtype is not None and str(dtype).removeprefix("torch.") not in seen:
                    seen.append(str(dtype).removeprefix("torch."))
            # the base tensor is re-read per run on purpose: keeping it across runs costs one more
            # tensor of peak memory (measured: +131 MiB with 6 runs) and saves no time (page cache)
            w0 = base.tensor(name, rb)
            delta = run.tensor(name, rt)
            delta.sub_(w0)  # in place: one tensor pair in memory at a time
            td = TensorDiff(name=name, shape=tuple(delta.shape), numel=delta.numel(), changed={})
            if ranks and delta.ndim == 2 and min(delta.shape) > 0:  # no SVD for an untouched matrix
                td.rank, td.rank_rel, td.effective_rank = _rank_stats(delta) if delta.any() else (0, 0, 0.0)
            mag = delta.abs_()
            first = mag > tols[0]  # count_nonzero, not .sum(): a bool sum makes an int64 copy
            td.changed = {t: int(torch.count_nonzero(first if t == tols[0] else mag > t)) for t in tols}
            td.abs_base_sum, td.abs_base_changed_sum = _abs_sums(w0, first)
            diffs[i].tensors.append(td)
            if counts:
                masks[i] = first if otol == tols[0] else mag > otol
            del w0, delta, mag, first
        for (i, j), c in counts.items():
            if i in masks and j in masks:
                c[0] += masks[i].numel()
                c[1] += int(torch.count_nonzero(masks[i]))
                c[2] += int(torch.count_nonzero(masks[j]))
                c[3] += int(torch.count_nonzero(masks[i] & masks[j]))
    return Comparison(diffs=diffs, overlaps={k: _overlap_stats(otol, *c) for k, c in counts.items()},
                      overlap_tol=otol)


def _overlap_stats(tol: float, n: int, n1: int, n2: int, both: int) -> dict[str, float]:
    s1 = 1 - n1 / n if n else 1.0
    s2 = 1 - n2 / n if n else 1.0
    return {"tol": tol, "entries": n, "updated_a": n1, "updated_b": n2, "both": both,
            "o1": both / n1 if n1 else math.nan, "o2": both / n2 if n2 else math.nan,
            "o1_rand": 1 - s2, "o2_rand": 1 - s1, "sparsity_a": s1, "sparsity_b": s2}


def diff_checkpoints(base: str | Checkpoint, tuned: str | Checkpoint, tols=DEFAULT_TOLS,
                     ranks: bool = True, rounding: str = "auto") -> CheckpointDiff:
    """Per-tensor changed counts at each tolerance, and ranks of the 2-D updates."""
    return compare_many(base, [tuned], tols, ranks, rounding).diffs[0]


def overlap(base: str | Checkpoint, tuned_a: str | Checkpoint, tuned_b: str | Checkpoint,
            tol: float = 1e-5, rounding: str = "auto") -> dict[str, float]:
    """o1, o2 and their chance baselines for the updated sets of two runs from the same base."""
    return compare_many(base, [tuned_a, tuned_b], [tol], ranks=False, rounding=rounding,
                        overlap_tol=tol).overlaps[(0, 1)]
