"""Closed forms and properties for Frechet distance, total variation and the LPIPS-style distance."""
import numpy as np
import pytest
import torch

from vlmlab.metrics import (answer_distribution, frechet_distance, perceptual_distance,
                            total_variation)


def _exact_moments(n, mean, cov, seed):
    """Samples whose sample mean and (unbiased) covariance equal ``mean`` and ``cov`` exactly."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    w = np.linalg.cholesky(np.cov(x, rowvar=False))
    x = x @ np.linalg.inv(w).T  # sample covariance now I
    return x @ np.linalg.cholesky(cov).T + mean


def test_frechet_of_a_set_with_itself_is_zero():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_diagonal_gaussians_closed_form():
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    xa = _exact_moments(300, mu_a, np.diag(sd_a ** 2), seed=1)
    xb = _exact_moments(400, mu_b, np.diag(sd_b ** 2), seed=2)
    # ||mu_a - mu_b||^2 + sum (s_a^2 + s_b^2 - 2 s_a s_b) = 1 + 6.25 + (4 + 2.25 + 0)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    assert frechet_distance(xa, xb) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(xa, xb) == pytest.approx(frechet_distance(xb, xa), rel=1e-8)


def test_frechet_equal_covariances_and_mean_shift():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    x = _exact_moments(100, np.zeros(5), a @ a.T + np.eye(5), seed=4)  # full covariance
    v = rng.normal(size=5)
    prev = -1.0
    for s in (0.0, 0.5, 1.0, 2.0):  # same covariance: FD = s^2 ||v||^2, growing with s
        fd = frechet_distance(torch.from_numpy(x), torch.from_numpy(x + s * v))
        assert fd == pytest.approx(s ** 2 * v @ v, abs=1e-6)
        assert fd > prev
        prev = fd


def test_frechet_more_dims_than_samples_is_finite():
    x = torch.randn(4, 10, generator=torch.Generator().manual_seed(5))
    fd = frechet_distance(x, x + 1.0)
    assert np.isfinite(fd) and fd == pytest.approx(10.0, abs=1e-2)
    with pytest.raises(ValueError, match="feature dims differ"):
        frechet_distance(x, torch.randn(4, 3))


def test_total_variation_closed_forms():
    p = torch.tensor([0.2, 0.3, 0.5])
    assert total_variation(p, p).item() == 0.0
    assert total_variation([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]).item() == 1.0
    assert total_variation([0.5, 0.5], [1.0, 0.0]).item() == pytest.approx(0.5)
    rows_p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    rows_q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    torch.testing.assert_close(total_variation(rows_p, rows_q), torch.tensor([1.0, 0.0]))
    q = torch.softmax(torch.randn(3), -1)
    assert total_variation(p, q).item() == pytest.approx(total_variation(q, p).item())


def test_total_variation_rejects_bad_input():
    with pytest.raises(ValueError, match="negative"):
        total_variation([1.2, -0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        total_variation([0.5, 0.4], [0.5, 0.5])
    with pytest.raises(ValueError, match="same shape"):
        total_variation([1.0, 0.0], [1.0, 0.0, 0.0])


def test_answer_distribution():
    d = answer_distribution(torch.tensor([0, 2, 2, 3]), n_options=5)
    torch.testing.assert_close(d, torch.tensor([0.25, 0.0, 0.5, 0.25, 0.0], dtype=torch.float64))
    uniform = answer_distribution([0, 1, 2, 3], 4)
    assert total_variation(d[:4] / d[:4].sum(), uniform).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="n_options"):
        answer_distribution([0, 4], 4)


def test_perceptual_distance_closed_forms():
    e = torch.eye(2).reshape(2, 2, 1, 1)  # image 0: (1, 0), image 1: (0, 1), 1 x 1 maps
    # orthogonal unit vectors: mean over 2 channels of (1, 1) = 1; opposite: mean of (4, 0) = 2
    torch.testing.assert_close(perceptual_distance([e[:1]], [e[1:]]), torch.tensor([1.0]))
    torch.testing.assert_close(perceptual_distance([e[:1]], [-3 * e[:1]]), torch.tensor([2.0]))
    # mean over layers
    torch.testing.assert_close(perceptual_distance([e[:1], e[:1]], [e[1:], -e[:1]]),
                               torch.tensor([1.5]))


def test_perceptual_distance_properties():
    g = torch.Generator().manual_seed(6)
    fa = [torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 8, 2, 2, generator=g)]
    fb = [torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 8, 2, 2, generator=g)]
    torch.testing.assert_close(perceptual_distance(fa, fa), torch.zeros(3))
    d = perceptual_distance(fa, fb)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(d, perceptual_distance(fb, fa))
    scale = [f.abs().sum(1, keepdim=True) + 0.5 for f in fa]  # positive per-position scale
    torch.testing.assert_close(perceptual_distance(fa, [f * s for f, s in zip(fa, scale)]),
                               torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="layer 1"):
        perceptual_distance(fa, [fb[0], fb[1][:, :4]])
