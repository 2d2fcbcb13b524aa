"""Closed forms, naive O(N^2) references and POT / scipy cross-checks for uniformity and gap."""
import logging
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import torch
import torch.nn.functional as F

import vlmlab.metrics.embedding as emb
from vlmlab.metrics import (modality_gap_centroid, modality_gap_emd, uniformity_loss,
                            uniformity_per_batch)


def _sphere(n, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


def _naive(z, t, log, include_self):
    """Direct double loop over ordered pairs, written independently of the blockwise code."""
    n = z.shape[0]
    terms = [torch.exp(-t * (z[i] - z[j]).pow(2).sum())
             for i in range(n) for j in range(n) if include_self or i != j]
    u = torch.stack(terms).mean()
    return u.log() if log else u


def test_uniformity_closed_forms():
    z = F.normalize(torch.randn(1, 4), dim=-1)
    assert uniformity_loss(z.repeat(5, 1)).item() == pytest.approx(1.0)  # collapsed
    for t in (0.5, 1.0, 2.0):
        anti = torch.cat([z, -z])  # ||z - (-z)||^2 = 4
        assert uniformity_loss(anti, t=t).item() == pytest.approx(math.exp(-4 * t))
        assert uniformity_loss(anti, t=t, log=True).item() == pytest.approx(-4 * t)
        # with the diagonal: (2 * 1 + 2 * exp(-4t)) / 4
        assert uniformity_loss(anti, t=t, include_self=True).item() == pytest.approx(
            (1 + math.exp(-4 * t)) / 2)


def test_wang_isola_equals_pdist_reference():
    z = _sphere(40, d=8, seed=1)
    ref = torch.pdist(z, p=2).pow(2).mul(-2).exp().mean().log()  # ssnl/align_uniform
    torch.testing.assert_close(uniformity_loss(z, t=2, log=True), ref)


@pytest.mark.parametrize("t,log,include_self", [(1.0, False, False), (2.0, True, False),
                                                 (0.5, True, True), (0.5, False, True)])
@pytest.mark.parametrize("block_size", [1, 3, 7, 4096])
def test_uniformity_matches_naive_for_every_block_size(t, log, include_self, block_size):
    z = _sphere(13, seed=2)
    got = uniformity_loss(z, t=t, log=log, include_self=include_self, block_size=block_size)
    torch.testing.assert_close(got, _naive(z, t, log, include_self))


def test_blockwise_equals_direct_on_unnormalised_float32():
    z = torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
    direct = uniformity_loss(z, t=0.3)
    blocked = uniformity_loss(z, t=0.3, block_size=8)
    assert direct.dtype == torch.float32
    torch.testing.assert_close(blocked, direct, rtol=1e-6, atol=0)


def test_blocks_are_bounded(monkeypatch):
    seen = []
    orig = emb._block_logsumexp

    def spy(zi, zj, *args):
        seen.append((zi.shape[0], zj.shape[0]))
        return orig(zi, zj, *args)

    monkeypatch.setattr(emb, "_block_logsumexp", spy)
    z = _sphere(10, seed=4)
    got = uniformity_loss(z, block_size=3)
    assert max(max(s) for s in seen) <= 3
    assert len(seen) == 9  # 4 x 4 upper triangle = 10 blocks, minus the empty 1 x 1 diagonal
    torch.testing.assert_close(got, _naive(z, 1.0, False, False))


def test_uniformity_permutation_invariant():
    z = _sphere(21, seed=5)
    perm = torch.randperm(21, generator=torch.Generator().manual_seed(0))
    for kw in ({}, {"t": 2, "log": True}, {"t": 0.5, "log": True, "include_self": True}):
        torch.testing.assert_close(uniformity_loss(z[perm], block_size=4, **kw),
                                   uniformity_loss(z, **kw))


@pytest.mark.parametrize("block_size", [4096, 4, 5])  # direct, blockwise+checkpoint, 1-row tail
def test_uniformity_gradient_matches_naive_autograd(block_size):
    base = torch.randn(11, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for kw in ({"t": 1.0, "log": False, "include_self": False},
               {"t": 0.5, "log": True, "include_self": True}):
        z1 = base.clone().requires_grad_(True)
        uniformity_loss(F.normalize(z1, dim=-1), block_size=block_size, **kw).backward()
        z2 = base.clone().requires_grad_(True)
        _naive(F.normalize(z2, dim=-1), kw["t"], kw["log"], kw["include_self"]).backward()
        assert torch.isfinite(z1.grad).all()
        torch.testing.assert_close(z1.grad, z2.grad)


def test_uniformity_errors_name_the_fix():
    with pytest.raises(ValueError, match="include_self=True"):
        uniformity_loss(_sphere(1))
    assert uniformity_loss(_sphere(1), include_self=True).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        uniformity_loss(_sphere(3), t=0.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        uniformity_loss(torch.zeros(2, 3, 4))


def test_uniformity_per_batch():
    z = _sphere(21, seed=7)  # batches 8, 8, 5
    kw = {"t": 0.5, "log": True, "include_self": True}
    ref = torch.stack([_naive(z[k:k + 8], **{"t": 0.5, "log": True, "include_self": True})
                       for k in (0, 8, 16)]).mean()
    torch.testing.assert_close(uniformity_per_batch(z, 8, **kw), ref)
    torch.testing.assert_close(uniformity_per_batch(z, 64), uniformity_loss(z))
    with pytest.raises(ValueError, match="last batch of 1"):
        uniformity_per_batch(z, 10)  # 10, 10, 1


def test_modality_gap_centroid_closed_form():
    e = torch.eye(3)
    img = torch.stack([3 * e[0], 0.5 * e[1]])  # normalised: mean (0.5, 0.5, 0)
    txt = -2 * e[0:1]  # normalised: (-1, 0, 0)
    assert modality_gap_centroid(img, txt).item() == pytest.approx(math.sqrt(2.5))
    assert modality_gap_centroid(e[:1].repeat(4, 1), e[1:2]).item() == pytest.approx(math.sqrt(2))
    x = torch.randn(7, 4)
    assert modality_gap_centroid(x, 5 * x).item() == pytest.approx(0.0, abs=1e-6)


def test_emd_equals_optimal_assignment():
    rng = np.random.default_rng(0)
    for n in (1, 4, 7):
        x, y = rng.normal(size=(n, 5)), rng.normal(size=(n, 5)) + 0.3
        cost = scipy.spatial.distance.cdist(x, y)  # Euclidean, not squared
        r, c = scipy.optimize.linear_sum_assignment(cost)
        got = modality_gap_emd(torch.from_numpy(x), torch.from_numpy(y))
        assert got == pytest.approx(cost[r, c].sum() / n, rel=1e-9)


def test_emd_self_shift_and_weights():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    assert modality_gap_emd(x, x) == pytest.approx(0.0, abs=1e-6)
    v = torch.tensor([0.3, -1.2, 0.5, 2.0], dtype=torch.float64)
    assert modality_gap_emd(x, x + v) == pytest.approx(v.norm().item(), rel=1e-7)
    # one source point, two targets at distances 1 and 3 with weights 1/4, 3/4
    src, tgt = torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert modality_gap_emd(src, tgt, b=[0.25, 0.75]) == pytest.approx(0.25 + 2.25)
    with pytest.raises(ValueError, match="summing to 1"):
        modality_gap_emd(src, tgt, b=[0.5, 0.6])


def test_emd_logs_when_not_converged(caplog):
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(60, 3, generator=g), torch.randn(60, 3, generator=g)
    with caplog.at_level(logging.WARNING, logger="vlmlab.metrics.embedding"):
        modality_gap_emd(x, y, max_iter=2)
    assert "max_iter" in caplog.text
