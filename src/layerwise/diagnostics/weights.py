"""Metrics that read only the weights: no data, no forward pass.

- `snr`: Spectrum's signal-to-noise ratio of every weight matrix inside a block (the score Spectrum
  ranks matrices by before it chooses what to train), averaged per block. A matrix whose spectrum
  stands far above a random-matrix noise bulk carries more learned structure.
- `weight-depth-r2`: the SmolLM2 anatomy paper's "weight predictability": how much of a block's
  weights a smooth function of depth explains. The paper reports one pooled R^2 (0.91 on
  SmolLM2-135M, from secondary summaries only) and no exact recipe; the recipe here is ours and is
  written out in docs/metrics/weights.md.

Both work in float32 whatever the model's dtype (SVD and least squares are not defined for bf16
on every device, and bf16 would be too coarse for them anyway), one tensor at a time.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import MetricResult, register_metric
from layerwise.models.arch import LayerMap

IQR_OF_STANDARD_NORMAL = 1.349
DEPTH_DEGREE = 2
DEPTH_RIDGE = 1e-3  # relative to the mean diagonal of X^T X, so it does not depend on L
CHUNK_ENTRIES = 1 << 24  # L x chunk floats per stacked slice (64 MiB): memory stays flat


# --------------------------------------------------------------------------------------------
# snr: Spectrum's signal-to-noise ratio


def spectrum_snr(singular_values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Spectrum's SNR from the singular values (..., k) of matrices of `shape` -> (...)."""
    s = singular_values
    quartiles = torch.tensor([0.25, 0.75], dtype=s.dtype, device=s.device)
    q1, q3 = torch.quantile(s, quartiles, dim=-1)  # linear interpolation, as torch/numpy default
    # sigma = IQR(S) / 1.349: a robust noise scale (1.349 is the IQR of a standard normal)
    sigma = (q3 - q1) / IQR_OF_STANDARD_NORMAL
    # tau = sigma (1 + sqrt(beta)), beta = min/max dim: the Marchenko-Pastur edge of the noise bulk
    beta = min(shape) / max(shape)
    tau = (sigma * (1 + math.sqrt(beta))).unsqueeze(-1)
    above = s > tau
    signal = (s * above).sum(-1)  # sum of S > tau
    noise = (s * ~above).sum(-1)  # sum of S <= tau
    # SNR = (signal / noise) / max(S); nothing at or below tau means no noise at all: inf
    ratio = torch.where(noise > 0, signal / noise, torch.full_like(signal, math.inf))
    return ratio / s.amax(-1)


def singular_values(batch: torch.Tensor) -> torch.Tensor:
    """Singular values (..., k) of finite (..., m, n) matrices, k = min(m, n), ascending.

    From the eigenvalues of the smaller Gram matrix, W W^T or W^T W, in float64: s = sqrt(eig).
    Squaring the spectrum costs precision only where s_i / s_max nears sqrt(eps64) = 1.5e-8, far
    below float32 weights' own resolution, so the values equal float32 `svdvals`' to ~1e-6 of
    s_max; and a symmetric eigensolve of k x k is cheaper than an SVD of m x n. Both steps need
    float64: a float32 Gram matrix or a float32 eigensolve moves SmolLM2's SNRs by 5e-6 to 3e-5
    (docs/measurements.md), against the 1e-5 this path is held to.
    """
    w = batch.to(torch.float64)
    m, n = w.shape[-2:]
    gram = w @ w.transpose(-1, -2) if m <= n else w.transpose(-1, -2) @ w
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()


def _singular_values_numpy(w: torch.Tensor) -> torch.Tensor:
    """`singular_values` of one CPU matrix through numpy's LAPACK (OpenBLAS): the same float64
    Gram matrix and symmetric eigensolve, the same values to ~1e-15 of s_max; on this project's
    CPUs (AMD EPYC) OpenBLAS's float64 GEMM is about 2x and its eigensolve 1.5x faster than the
    MKL that torch's CPU build calls (bench/bench_snr.py)."""
    import numpy as np

    a = w.detach().to(torch.float64).numpy()
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return torch.from_numpy(np.linalg.eigvalsh(gram)).clamp_min(0).sqrt()


def matrix_snrs(weight: torch.Tensor) -> list[float]:
    """SNR of each matrix in `weight`: (m, n) -> 1 value; (E, m, n) fused experts -> E values."""
    m, n = weight.shape[-2:]
    return snrs_of(list(weight.detach().reshape(-1, m, n)))


def _one_snr(w: torch.Tensor) -> float:
    if not bool(torch.isfinite(w).all()):  # an eigensolve of NaN/inf fails: report NaN
        return math.nan
    s = _singular_values_numpy(w) if w.device.type == "cpu" else singular_values(w)
    return float(spectrum_snr(s, tuple(w.shape)))


def snrs_of(matrices: list[torch.Tensor], workers: int | None = None) -> list[float]:
    """SNR of each 2-D matrix, in order.

    One single-threaded float64 solve per matrix, `workers` at a time (default: torch's thread
    count). At these sizes (k of a few hundred to a few thousand) LAPACK's symmetric
    tridiagonalisation is half matrix-vector work and scales poorly over threads: on 2 cores two
    matrices at once with one thread each are 1.6x faster than one matrix with two threads,
    and batching by shape gains nothing (bench/bench_snr.py). Each matrix is solved alone in one
    thread, so the values do not depend on the scheduling or the worker count.
    """
    workers = workers or torch.get_num_threads()
    if workers <= 1 or len(matrices) <= 1 or matrices[0].device.type != "cpu":
        return [_one_snr(w) for w in matrices]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # numpy's BLAS/LAPACK (the CPU path) one thread per solve, too; numpy releases the GIL
        # inside them, so the workers run in parallel
        with threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(workers, thread_name_prefix="snr") as pool:
            return list(pool.map(_one_snr, matrices))
    finally:
        torch.set_num_threads(threads)


def spectrum_reference_snrs(weight: torch.Tensor) -> list[float]:
    """The same SNRs the way Spectrum computes them: one float32 `svdvals` per matrix (for the
    bench and the tests that hold the fast path to it)."""
    m, n = weight.shape[-2:]
    return [float(spectrum_snr(torch.linalg.svdvals(w.float()), (m, n)))
            for w in weight.detach().reshape(-1, m, n)]


def has_spectrum(param: torch.Tensor) -> bool:
    """A matrix (or stack of them) with at least two singular values.

    A 1 x n "matrix" is a vector: its single singular value has no noise bulk to compare against,
    and its SNR would always be inf.
    """
    return param.dim() >= 2 and min(param.shape[-2:]) >= 2


def mean(values: list[float]) -> float | None:
    """Plain mean; NaN and inf propagate (they are reported, never dropped); None when empty."""
    return sum(values) / len(values) if values else None


@register_metric(
    "snr",
    fields={"snr": True},
    help="Spectrum's signal-to-noise ratio of each weight matrix (singular values above a "
    "Marchenko-Pastur noise edge over those below, divided by the largest), mean per block",
)
def snr_metric(ctx: DiagnosticContext) -> MetricResult:
    layers = ctx.layers
    per_matrix: list[dict] = []
    by_type: dict[str, list[float]] = {}
    skipped: set[str] = set()
    # Every matrix of every block (an expert stack gives one per expert), solved in parallel.
    slices: list[torch.Tensor] = []  # one (m, n) view per matrix (an expert stack gives several)
    owners: list[tuple[int, str, str, int, bool]] = []  # (block, local, name, slices, plain 2-D)
    for i, block in enumerate(layers.blocks):
        for local, param in block.named_parameters():
            if param.dim() < 2:
                continue
            if not has_spectrum(param):
                skipped.add(local)
                continue
            m, n = param.shape[-2:]
            views = param.detach().reshape(-1, m, n)
            slices += list(views)
            owners.append((i, local, layers.param_names[id(param)], len(views), param.dim() == 2))
    snr_of = snrs_of(slices)
    cursor = 0
    per_block_values: list[list[float]] = [[] for _ in layers.blocks]
    for i, local, name, count, plain in owners:
        snrs = snr_of[cursor:cursor + count]
        cursor += count
        names = [local] if plain else [f"{local}[{e}]" for e in range(count)]
        for row_name, value in zip(names, snrs):
            per_matrix.append({"block": i, "name": row_name, "param": name, "snr": value})
        by_type.setdefault(local, []).extend(snrs)
        per_block_values[i] += snrs
    block_snr = [mean(v) for v in per_block_values]
    return MetricResult(
        per_block={"snr": block_snr},
        extra={
            "per_matrix": per_matrix,
            "per_module_type": {t: mean(v) for t, v in by_type.items()},
        },
        summary={
            "matrices": len(per_matrix),
            "infinite": sum(math.isinf(m["snr"]) for m in per_matrix),
            "skipped_vectors": sorted(skipped),
        },
    )


# --------------------------------------------------------------------------------------------
# weight-depth-r2: how well depth predicts a block's weights


def depth_design(num_blocks: int, degree: int) -> torch.Tensor:
    """(L, degree+1) polynomial features of normalised depth t = l/(L-1): 1, t, t^2, ..."""
    t = torch.arange(num_blocks, dtype=torch.float64) / (num_blocks - 1)
    return t[:, None] ** torch.arange(degree + 1, dtype=torch.float64)


def ridge_solver(x: torch.Tensor, ridge: float) -> torch.Tensor:
    """(degree+1, n) matrix A with coefficients B = A Y for targets Y (n, P) on design x (n, d+1).

    B = (X^T X + lam D)^-1 X^T Y with lam = ridge x mean(diag X^T X) and D = diag(0, 1, .., 1): the
    intercept is not shrunk, so a tensor that does not change with depth is fitted exactly.
    """
    gram = x.T @ x
    penalty = torch.eye(gram.shape[0], dtype=x.dtype)
    penalty[0, 0] = 0.0
    lam = ridge * gram.diagonal().mean()
    return torch.linalg.solve(gram + lam * penalty, x.T)


def depth_residual_operators(num_blocks: int, degree: int, ridge: float) -> torch.Tensor:
    """(4, L, L) linear maps that turn the stacked tensors Y (L, P) into residuals:

    0: Y - H Y, in-sample fit (H = X A, the ridge hat matrix)
    1: Y - mean_l Y, around each entry's mean over depth (the SST of the in-sample R^2)
    2: Y_l - x_l^T B_(-l), block l predicted by a fit on the other blocks (leave one block out)
    3: Y_l - mean_(k != l) Y_k, around the other blocks' mean (the SST of the LOO R^2)
    """
    n = num_blocks
    x = depth_design(n, degree)
    eye = torch.eye(n, dtype=torch.float64)
    hat = x @ ridge_solver(x, ridge)
    loo = torch.zeros(n, n, dtype=torch.float64)
    for held_out in range(n):
        others = [k for k in range(n) if k != held_out]
        loo[held_out, others] = x[held_out] @ ridge_solver(x[others], ridge)
    other_mean = (1 - eye) / (n - 1)
    return torch.stack([eye - hat, eye - 1.0 / n, eye - loo, eye - other_mean])


def depth_tensor_types(blocks: nn.ModuleList) -> tuple[list[str], list[str]]:
    """Local names present in every block with one shape (fitted), and the others (skipped)."""
    params = [dict(block.named_parameters()) for block in blocks]
    fitted, skipped = [], []
    for local, first in params[0].items():
        same = all(local in p and p[local].shape == first.shape for p in params)
        (fitted if same else skipped).append(local)
    skipped += sorted({n for p in params[1:] for n in p} - set(params[0]))
    return fitted, skipped


def depth_squared_residuals(tensors: list[torch.Tensor], operators: torch.Tensor) -> torch.Tensor:
    """(4, L) sums over entries of the squared residuals of each operator, for one tensor type.

    The entries are streamed in slices of CHUNK_ENTRIES / L, so memory stays near one slice.
    """
    n = len(tensors)
    ops = operators.to(device=tensors[0].device, dtype=torch.float32)
    flat = [t.detach().reshape(-1) for t in tensors]
    chunk = max(1, CHUNK_ENTRIES // n)
    total = torch.zeros(4, n, dtype=torch.float64)
    for start in range(0, flat[0].numel(), chunk):
        y = torch.stack([f[start:start + chunk] for f in flat]).float()  # (L, P_chunk)
        # Every operator maps a constant to 0, so centring first changes nothing in exact
        # arithmetic; in float32 it keeps a tensor that is the same in every block (norms at
        # init) at exactly 0.
        y = y - y.mean(dim=0)
        residuals = ops @ y  # (4, L, P_chunk)
        total += residuals.square().sum(-1).double().cpu()
    return total


def r_squared(sse: float, sst: float) -> float:
    """1 - SSE/SST; NaN when nothing varies (SST = 0: there is nothing to explain)."""
    return 1.0 - sse / sst if sst > 0 else math.nan


def weight_depth_r2(
    layers: LayerMap, degree: int = DEPTH_DEGREE, ridge: float = DEPTH_RIDGE
) -> MetricResult:
    """Ridge regression of every weight entry on a polynomial of depth; see the module docstring."""
    n = layers.num_blocks
    fitted, skipped = depth_tensor_types(layers.blocks)
    summary = {"degree": degree, "ridge": ridge, "tensor_types": len(fitted),
               "skipped_types": skipped}
    if n < 3:
        summary.update(r2_global=math.nan, r2_chance=math.nan,
                       note=f"needs at least 3 blocks to fit on depth, the model has {n}")
        return MetricResult(per_block={"weight_depth_r2": [math.nan] * n}, summary=summary)
    operators = depth_residual_operators(n, degree, ridge)
    params = [dict(block.named_parameters()) for block in layers.blocks]
    pooled = torch.zeros(4, n, dtype=torch.float64)
    rms_sse = rms_sst = 0.0
    per_type: dict[str, float] = {}
    entries = 0
    for local in fitted:
        tensors = [p[local] for p in params]
        # A coarser reading of "weight predictability": the RMS of each tensor type over depth.
        rms = torch.stack([t.detach().float().pow(2).mean().sqrt().cpu() for t in tensors]).double()
        rms_sse += (operators[0] @ rms).square().sum().item()
        rms_sst += (operators[1] @ rms).square().sum().item()
        sq = depth_squared_residuals(tensors, operators)
        per_type[local] = r_squared(sq[0].sum().item(), sq[1].sum().item())
        pooled += sq
        entries += tensors[0].numel()
    # LOO R^2 of block l, pooled over its tensors: 1 - sum (Y_l - Y^_l)^2 / sum (Y_l - mean_-l)^2
    loo = [r_squared(pooled[2, l].item(), pooled[3, l].item()) for l in range(n)]
    summary.update(
        r2_global=r_squared(pooled[0].sum().item(), pooled[1].sum().item()),
        # E[R^2] of an OLS fit of pure noise with `degree` predictors on L samples: the floor
        # that r2_global has to beat before it says anything about depth
        r2_chance=degree / (n - 1),
        # the same fit on each tensor type's per-block RMS (one number per block and type):
        # scales and norms drift smoothly with depth even where individual entries do not
        r2_rms=r_squared(rms_sse, rms_sst),
        entries_per_block=entries,
    )
    return MetricResult(per_block={"weight_depth_r2": loo}, extra={"per_module_type": per_type},
                        summary=summary)


@register_metric(
    "weight-depth-r2",
    fields={"weight_depth_r2": None},
    help="how well a quadratic in depth predicts each block's weights (ridge regression): global "
    "in-sample R^2 in the summary, leave-one-block-out R^2 per block",
)
def weight_depth_r2_metric(ctx: DiagnosticContext) -> MetricResult:
    return weight_depth_r2(ctx.layers)
