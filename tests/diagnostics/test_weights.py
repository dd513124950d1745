"""Weight-only metrics (Spectrum SNR, weight-depth R^2) on constructed matrices and tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerwise.diagnostics import weights
from layerwise.diagnostics.context import DiagnosticContext
from layerwise.diagnostics.registry import METRICS
from layerwise.models import discover_layers, load_model
from tests.conftest import fresh_tiny


def context(model) -> DiagnosticContext:
    return DiagnosticContext(model=model, layers=discover_layers(model),
                             windows=torch.zeros(1, 8, dtype=torch.long), progress=False)


def with_singular_values(s: list[float], rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T with random orthonormal U (rows x k) and V (cols x k), k = len(s)."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=gen, dtype=torch.float64))
    return (u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T).float()


def set_block_param(model, block: int, local: str, value: torch.Tensor) -> None:
    with torch.no_grad():
        dict(discover_layers(model).blocks[block].named_parameters())[local].copy_(value)


# ---------------------------------------------------------------------------------------- snr


def test_snr_matches_a_hand_computation():
    # S = 10, 5, 3, 2, 1, 0.5 of a 6 x 10 matrix. Sorted: 0.5 1 2 3 5 10; linear quantiles at
    # positions 1.25 and 3.75: q1 = 1.25, q3 = 4.5, IQR = 3.25, sigma = 3.25/1.349 = 2.409;
    # beta = 0.6, tau = 2.409 (1 + 0.7746) = 4.275 -> signal = 10 + 5, noise = 3 + 2 + 1 + 0.5.
    matrix = with_singular_values([10, 5, 3, 2, 1, 0.5], 6, 10)
    assert weights.matrix_snrs(matrix) == pytest.approx([15 / 6.5 / 10], rel=1e-5)
    assert weights.matrix_snrs(matrix.T) == pytest.approx([15 / 6.5 / 10], rel=1e-5)
    # SNR is not scale-free: it divides by max(S), so doubling the matrix halves it.
    assert weights.matrix_snrs(2 * matrix) == pytest.approx([15 / 6.5 / 20], rel=1e-5)


def test_snr_is_inf_when_no_singular_value_is_noise():
    # An orthogonal matrix: all S equal, IQR = 0, tau = 0, nothing is <= tau.
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    assert weights.matrix_snrs(q) == [math.inf]


def test_snr_of_non_finite_weights_is_nan_not_a_crash():
    stack = torch.randn(3, 8, 8)
    stack[1, 2, 3] = math.nan
    values = weights.matrix_snrs(stack)
    assert math.isnan(values[1]) and math.isfinite(values[0]) and math.isfinite(values[2])


def test_snr_metric_reports_each_matrix_and_block_means():
    model = fresh_tiny("llama")
    # block 2's q_proj (64 x 64): S = 10, 2 (x31), 1 (x32). Quartiles at positions 15.75 and 47.25
    # are 1 and 2: sigma = 1/1.349, beta = 1, tau = 1.483 -> signal 10 + 62 = 72, noise 32.
    constructed = with_singular_values([10] + [2] * 31 + [1] * 32, 64, 64)
    set_block_param(model, 2, "self_attn.q_proj.weight", constructed)
    # block 1's o_proj: orthogonal, SNR inf, so block 1's mean is inf (reported as it is).
    set_block_param(model, 1, "self_attn.o_proj.weight", torch.linalg.qr(torch.randn(64, 64))[0])
    result = weights.snr_metric(context(model))

    snr = result.per_block["snr"]
    assert len(snr) == 4 and snr[1] == math.inf
    assert all(math.isfinite(v) for i, v in enumerate(snr) if i != 1)
    rows = result.extra["per_matrix"]
    assert len(rows) == 4 * 7 == result.summary["matrices"] and result.summary["infinite"] == 1
    q2 = next(r for r in rows if r["block"] == 2 and r["name"] == "self_attn.q_proj.weight")
    assert q2["snr"] == pytest.approx(72 / 32 / 10, rel=1e-5)
    assert q2["param"] == "model.layers.2.self_attn.q_proj.weight"
    block2 = [r["snr"] for r in rows if r["block"] == 2]
    assert snr[2] == pytest.approx(sum(block2) / len(block2))
    down = [r["snr"] for r in rows if r["name"] == "mlp.down_proj.weight"]
    assert result.extra["per_module_type"]["mlp.down_proj.weight"] == pytest.approx(sum(down) / 4)


def test_snr_treats_each_expert_as_a_matrix():
    model = load_model("tiny:qwen2_moe").model
    result = weights.snr_metric(context(model))
    names = {r["name"] for r in result.extra["per_matrix"] if r["block"] == 0}
    assert {f"mlp.experts.gate_up_proj[{e}]" for e in range(4)} <= names
    assert {f"mlp.experts.down_proj[{e}]" for e in range(4)} <= names
    # the 1 x 64 shared-expert gate is a vector: one singular value, no spectrum
    assert result.summary["skipped_vectors"] == ["mlp.shared_expert_gate.weight"]
    experts = model.model.layers[3].mlp.experts.down_proj
    expected = [weights.matrix_snrs(experts[e])[0] for e in range(4)]
    got = [r["snr"] for r in result.extra["per_matrix"]
           if r["block"] == 3 and r["name"].startswith("mlp.experts.down_proj")]
    assert got == pytest.approx(expected)


# ------------------------------------------------------------------------------ weight-depth-r2


def set_quadratic_in_depth(model, seed: int = 0) -> None:
    """Every tensor of block l = A + B t + C t^2, t = l / (L-1), with random A, B, C per type."""
    layers = discover_layers(model)
    gen = torch.Generator().manual_seed(seed)
    depth = layers.num_blocks
    with torch.no_grad():
        for local, first in layers.blocks[0].named_parameters():
            a, b, c = (torch.randn(first.shape, generator=gen) for _ in range(3))
            for i, block in enumerate(layers.blocks):
                t = i / (depth - 1)
                dict(block.named_parameters())[local].copy_(a + b * t + c * t * t)


def test_weight_depth_r2_is_one_for_weights_quadratic_in_depth():
    model = fresh_tiny("llama", num_hidden_layers=8)
    set_quadratic_in_depth(model)
    result = weights.weight_depth_r2_metric(context(model))
    assert result.summary["r2_global"] > 0.999
    assert len(result.per_block["weight_depth_r2"]) == 8
    # the ridge shrinks t and t^2 a little, which costs a held-out block up to ~1%
    assert min(result.per_block["weight_depth_r2"]) > 0.98
    assert min(result.extra["per_module_type"].values()) > 0.999
    exact = weights.weight_depth_r2(discover_layers(model), ridge=0.0)
    assert exact.summary["r2_global"] > 1 - 1e-6
    assert min(exact.per_block["weight_depth_r2"]) > 1 - 1e-5


def test_weight_depth_r2_is_chance_for_independent_blocks(llama30):
    # Random init: blocks are independent, so depth explains nothing beyond what 2 free
    # coefficients fit into 30 noise samples (E[R^2] = 2/29) and held-out blocks are not predicted.
    result = weights.weight_depth_r2(discover_layers(llama30))
    chance = result.summary["r2_chance"]
    assert chance == pytest.approx(2 / 29)
    assert abs(result.summary["r2_global"] - chance) < 0.03
    loo = result.per_block["weight_depth_r2"]
    assert len(loo) == 30 and max(loo) < 0.05
    # norms start at exactly 1 in every block: nothing to explain, R^2 is NaN, not a crash
    assert math.isnan(result.extra["per_module_type"]["input_layernorm.weight"])


def test_weight_depth_r2_agrees_with_numpy_polyfit():
    # Without the ridge, a degree-1 fit is ordinary least squares: check both R^2 against polyfit.
    model = fresh_tiny("llama", num_hidden_layers=5, hidden_size=16, intermediate_size=32)
    set_quadratic_in_depth(model, seed=3)
    layers = discover_layers(model)
    with torch.no_grad():  # noise on top, so that nothing is fitted exactly
        for p in layers.blocks.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    result = weights.weight_depth_r2(layers, degree=1, ridge=0.0)

    y = np.stack([np.concatenate([p.detach().numpy().ravel() for p in b.parameters()])
                  for b in layers.blocks]).astype(np.float64)  # (L, P)
    t = np.arange(5) / 4
    coef = np.polyfit(t, y, 1)  # (2, P): slope, intercept
    fitted = np.outer(t, coef[0]) + coef[1]
    r2 = 1 - ((y - fitted) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert result.summary["r2_global"] == pytest.approx(r2, rel=1e-4)
    for held in range(5):
        others = [k for k in range(5) if k != held]
        slope, icpt = np.polyfit(t[others], y[others], 1)
        sse = ((y[held] - (slope * t[held] + icpt)) ** 2).sum()
        sst = ((y[held] - y[others].mean(0)) ** 2).sum()
        assert result.per_block["weight_depth_r2"][held] == pytest.approx(1 - sse / sst, rel=1e-4)


def test_weight_depth_r2_needs_three_blocks():
    result = weights.weight_depth_r2_metric(context(fresh_tiny("llama", num_hidden_layers=2)))
    assert all(math.isnan(v) for v in result.per_block["weight_depth_r2"])
    assert math.isnan(result.summary["r2_global"]) and "3 blocks" in result.summary["note"]


# ------------------------------------------------------------------------------ every family


def test_both_metrics_give_one_value_per_block_on_every_family(tiny):
    ctx = context(tiny.model)
    for metric in (weights.snr_metric, weights.weight_depth_r2_metric):
        result = metric(ctx)
        for values in result.per_block.values():
            assert len(values) == ctx.num_blocks
    assert weights.weight_depth_r2_metric(ctx).summary["tensor_types"] > 0


def test_bf16_model_is_read_in_float32():
    model = load_model("tiny:llama", dtype="bfloat16").model
    assert model.dtype == torch.bfloat16
    ctx = context(model)
    snr = weights.snr_metric(ctx)
    q = model.model.layers[0].self_attn.q_proj.weight
    expected = weights.matrix_snrs(q.detach().float())[0]
    first = next(r["snr"] for r in snr.extra["per_matrix"] if r["block"] == 0)
    assert first == pytest.approx(expected)
    r2 = weights.weight_depth_r2_metric(ctx)
    assert math.isfinite(r2.summary["r2_global"])
    assert all(math.isfinite(v) for v in r2.per_block["weight_depth_r2"])


def test_registered_with_their_orientation():
    assert METRICS["snr"].fn is weights.snr_metric
    assert METRICS["snr"].fields == {"snr": True}
    assert METRICS["weight-depth-r2"].fn is weights.weight_depth_r2_metric
    assert METRICS["weight-depth-r2"].fields == {"weight_depth_r2": None}


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (3, 40, 24), (2, 24, 40)])
def test_the_gram_path_equals_spectrums_svd_path(shape):
    """The float64 Gram eigensolve gives Spectrum's float32-SVD SNRs to 1e-5, on noise with a
    low-rank signal (a trained matrix's shape of spectrum) and on plain noise."""
    gen = torch.Generator().manual_seed(sum(shape))
    m, n = shape[-2:]
    noise = torch.randn(*shape, generator=gen) * 0.02
    signal = torch.randn(*shape[:-1], 3, generator=gen) @ torch.randn(3, n, generator=gen) * 0.05
    for weight in (noise, noise + signal):
        fast, reference = weights.matrix_snrs(weight), weights.spectrum_reference_snrs(weight)
        assert len(fast) == len(reference) == (shape[0] if len(shape) == 3 else 1)
        assert fast == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32)])
def test_the_numpy_and_torch_gram_paths_give_the_same_singular_values(shape):
    """CPU matrices go through numpy's LAPACK, others (CUDA, batches) through torch's: the same
    float64 Gram eigensolve, so the same values to float64 rounding."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(*shape, generator=gen) * 0.02
    fast, torch_path = weights._singular_values_numpy(w), weights.singular_values(w)
    assert fast.dtype == torch_path.dtype == torch.float64
    assert torch.allclose(fast, torch_path, rtol=0, atol=1e-12 * float(torch_path.max()))
    # against a float64 SVD: squaring the spectrum costs ~sqrt(eps64) of s_max at the bottom
    svd = torch.linalg.svdvals(w.double()).flip(0)
    assert torch.allclose(fast, svd, rtol=1e-9, atol=1e-7 * float(svd.max()))


def test_the_metric_batches_by_shape_and_keeps_each_matrix_its_value():
    model = fresh_tiny("llama")
    rows = weights.snr_metric(context(model)).extra["per_matrix"]
    layers = discover_layers(model)
    for row in rows:
        param = dict(model.named_parameters())[row["param"]]
        assert row["snr"] == pytest.approx(weights.spectrum_reference_snrs(param)[0], rel=1e-5)
    assert [r["block"] for r in rows] == sorted(r["block"] for r in rows)
    assert len(rows) == 7 * layers.num_blocks
