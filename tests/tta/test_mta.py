from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmlab.tta.mta import MTAConfig, bandwidths, mode_update, solve_mta


def _views(seed=0, n=64, d=16):
    g = torch.Generator().manual_seed(seed)
    centre = F.normalize(torch.randn(d, generator=g), dim=-1)
    return F.normalize(centre + 0.3 * torch.randn(n, d, generator=g), dim=-1)


def test_mode_is_a_fixed_point_of_its_update():
    x = _views()
    logits = 10.0 * x @ F.normalize(torch.randn(5, 16), dim=-1).T
    cfg = MTAConfig(outer_iters=50, inner_iters=50, tol=1e-9)
    m, y = solve_mta(x.double(), logits.double(), cfg)
    h = bandwidths(x.double(), cfg.neighbours)
    torch.testing.assert_close(mode_update(m, x.double(), h, y), m, atol=1e-8, rtol=0)
    assert abs(float(y.sum()) - 1.0) < 1e-9 and float(m.norm()) == pytest.approx(1.0, abs=1e-9)


def test_bandwidth_uses_the_18_nearest_other_views():
    x = _views()
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    expected = torch.sqrt(0.5 * d2.sort(1).values[:, :18].mean(1))
    torch.testing.assert_close(bandwidths(x, 0.3), expected, atol=1e-5, rtol=1e-5)


def test_identical_views_give_that_view():
    x = F.normalize(torch.randn(1, 16), dim=-1).repeat(8, 1) + 1e-4 * torch.randn(8, 16)
    m, _ = solve_mta(x, x @ torch.randn(16, 3), MTAConfig())
    torch.testing.assert_close(m, F.normalize(x.mean(0), dim=-1), atol=1e-3, rtol=0)
