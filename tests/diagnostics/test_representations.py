"""Hidden-state metrics: definitions checked on constructed tensors, and on a traced tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from layerwise.diagnostics.representations import (
    angular_distance, angular_metric, block_influence, block_influence_metric, delta_corr_metric,
    delta_correlation, linear_r2_metric, ridge_r2,
)


def test_angular_distance_and_block_influence_on_known_vectors():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # 90 and 180 degrees
    assert angular_distance(a, b) == pytest.approx((0.5 + 1.0) / 2)
    assert block_influence(a[None], a[None]) == pytest.approx(0.0, abs=1e-12)
    assert block_influence(a[None], b[None]) == pytest.approx(1 - (0 + -1) / 2)


def test_ridge_r2_is_one_for_a_linear_map_and_low_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 8, generator=g)
    W = torch.randn(8, 8, generator=g)
    assert ridge_r2(x, x @ W + 3.0, ridge=1e-6) == pytest.approx(1.0, abs=1e-4)
    assert ridge_r2(x, torch.randn(4, 64, 8, generator=g), ridge=1e-3) < 0.2


def test_delta_correlation_signs():
    g = torch.Generator().manual_seed(1)
    d = torch.randn(2, 16, 32, generator=g)
    assert delta_correlation(d, -d) == pytest.approx(-1.0)
    assert delta_correlation(d, 2 * d + 5) == pytest.approx(1.0)


def test_metrics_on_a_traced_model_use_its_boundaries(ctx):
    xs = [ctx.trace.boundary(i) for i in range(ctx.num_blocks + 1)]
    ang = angular_metric(ctx)
    assert ang.per_block["angular_distance"][1] == pytest.approx(angular_distance(xs[1][:, -1], xs[2][:, -1]))
    assert len(ang.extra["runs"]["2"]) == ctx.num_blocks - 1
    bi = block_influence_metric(ctx).per_block["block_influence"]
    assert bi[0] == pytest.approx(block_influence(xs[0], xs[1]))
    r2 = linear_r2_metric(ctx).per_block["linear_r2"]
    assert all(v <= 1.0 for v in r2) and len(r2) == ctx.num_blocks
    dc = delta_corr_metric(ctx)
    assert dc.per_block["delta_corr"][-1] is None
    assert dc.per_block["delta_corr"][0] == pytest.approx(delta_correlation(xs[1] - xs[0], xs[2] - xs[1]))
    assert math.isfinite(dc.summary["mean_delta_corr"])
