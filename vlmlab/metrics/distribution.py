"""Distances between distributions: Frechet (Gaussian), total variation, LPIPS-style features.

Frechet distance between Gaussian fits N(mu_a, S_a), N(mu_b, S_b) of two feature sets
(Dowson & Landau 1982; as FID, Heusel et al. 2017, arXiv:1706.08500):
    FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})
Written for vlmlab after the recipe of ``mseitzer/pytorch-fid`` (fid_score.py): unbiased
covariances, scipy.linalg.sqrtm, eps * I added to both covariances when the product is
singular (sqrtm not finite), imaginary part from rounding dropped if the diagonal's is < 1e-3.
Total variation: TV(p, q) = 1/2 sum_k |p_k - q_k|, in [0, 1].
Perceptual distance: an *unlearned* LPIPS-style distance (Zhang et al., CVPR 2018,
arXiv:1801.03924) with the learned per-channel linear heads replaced by a plain mean:
    d(x, y) = mean_l mean_{c,h,w} (f^l_chw(x)/||f^l_hw(x)|| - f^l_chw(y)/||f^l_hw(y)||)^2
where ||f^l_hw|| is the norm over channels at one position. LPIPS proper weights channels with
learned w_l and sums over layers; values here are therefore not comparable to LPIPS numbers.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = ["frechet_distance", "total_variation", "answer_distribution", "perceptual_distance"]

logger = logging.getLogger(__name__)


def _as_2d_numpy(x, name: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"frechet_distance: {name} must be (N, D) with N >= 2 to fit a "
                         f"covariance, got shape {x.shape}")
    return x


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussian fits of two feature sets.

    Args:
        feats_a: (N, D) features (Tensor or array).
        feats_b: (M, D) features, same D.
        eps: offset added to both covariance diagonals when their product is singular.

    Returns:
        FD as a Python float (>= 0 up to rounding).
    """
    xa, xb = _as_2d_numpy(feats_a, "feats_a"), _as_2d_numpy(feats_b, "feats_b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"frechet_distance: feature dims differ ({xa.shape[1]} vs "
                         f"{xb.shape[1]}); extract both sets with the same encoder")
    mu_a, mu_b = xa.mean(0), xb.mean(0)  # (D,)
    s_a = np.atleast_2d(np.cov(xa, rowvar=False))  # (D, D)
    s_b = np.atleast_2d(np.cov(xb, rowvar=False))
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        logger.warning("frechet_distance: singular covariance product; adding %g to the "
                       "diagonals (use more samples than dimensions to avoid this)", eps)
        offset = np.eye(s_a.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s_a + offset) @ (s_b + offset))
    if np.iscomplexobj(covmean):
        max_imag = np.abs(np.diagonal(covmean).imag).max()
        if max_imag > 1e-3:
            raise ValueError(f"frechet_distance: sqrtm has imaginary diagonal up to {max_imag:.3g}"
                             "; the covariances are ill-conditioned, use more samples or a "
                             "larger eps")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def _check_simplex(x: Tensor, name: str, tol: float) -> None:
    if (x < 0).any():
        raise ValueError(f"total_variation: {name} has negative entries (min {x.min().item():.3g})"
                         "; pass probabilities, e.g. softmax or counts / counts.sum()")
    err = (x.sum(-1) - 1.0).abs().max().item()
    if err > tol:
        raise ValueError(f"total_variation: {name} rows must sum to 1 (off by up to {err:.3g} > "
                         f"tol {tol}); normalise with x / x.sum(-1, keepdim=True)")


def total_variation(p, q, tol: float = 1e-5) -> Tensor:
    """Total variation distance 1/2 sum_k |p_k - q_k| between probability vectors.

    Args:
        p: (K,) distribution or (N, K) rows of distributions (Tensor or array).
        q: same shape as ``p``.
        tol: allowed |sum - 1| per row.

    Returns:
        0-dim tensor for (K,) inputs, (N,) for rows; values in [0, 1].
    """
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if p.shape != q.shape or p.dim() not in (1, 2) or p.shape[-1] == 0:
        raise ValueError(f"total_variation: p and q must both be (K,) or (N, K) with the same "
                         f"shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    dtype = torch.promote_types(torch.promote_types(p.dtype, q.dtype), torch.float32)
    p, q = p.to(dtype), q.to(dtype=dtype, device=p.device)
    _check_simplex(p, "p", tol)
    _check_simplex(q, "q", tol)
    return 0.5 * (p - q).abs().sum(-1)


def answer_distribution(preds, n_options: int) -> Tensor:
    """Normalised histogram of predicted option indices.

    Args:
        preds: (N,) integer predictions in [0, n_options).
        n_options: number of answer options K.

    Returns:
        (K,) float64 tensor of frequencies summing to 1.
    """
    preds = torch.as_tensor(np.ascontiguousarray(preds) if isinstance(preds, np.ndarray) else preds).reshape(-1)
    if preds.numel() == 0:
        raise ValueError("answer_distribution: no predictions (N = 0)")
    if preds.is_floating_point() or preds.min() < 0 or preds.max() >= n_options:
        raise ValueError(f"answer_distribution: preds must be integers in [0, {n_options}), got "
                         f"dtype {preds.dtype}, range [{preds.min().item()}, "
                         f"{preds.max().item()}]; raise n_options or map answers to indices")
    counts = torch.bincount(preds.long(), minlength=n_options)  # (K,)
    return counts.to(torch.float64) / preds.numel()


def perceptual_distance(feats_a: list[Tensor], feats_b: list[Tensor],
                        eps: float = 1e-10) -> Tensor:
    """Unlearned LPIPS-style distance between paired images from per-layer feature maps.

    Args:
        feats_a: L tensors, layer l of shape (N, C_l, *spatial) (e.g. (N, C, H, W)).
        feats_b: L tensors, same shapes; image i of ``feats_a`` is paired with image i here.
        eps: added to the channel norm before dividing (as LPIPS ``normalize_tensor``).

    Returns:
        (N,) distances, >= 0, 0 for identical features, symmetric in (a, b).
    """
    if len(feats_a) == 0 or len(feats_a) != len(feats_b):
        raise ValueError(f"perceptual_distance: need the same nonzero number of layers, got "
                         f"{len(feats_a)} and {len(feats_b)}")
    per_layer = []
    for l, (fa, fb) in enumerate(zip(feats_a, feats_b)):
        if fa.shape != fb.shape or fa.dim() < 2:
            raise ValueError(f"perceptual_distance: layer {l} shapes must match and be "
                             f"(N, C, ...), got {tuple(fa.shape)} and {tuple(fb.shape)}")
        na = fa / (fa.norm(dim=1, keepdim=True) + eps)  # unit norm over channels
        nb = fb / (fb.norm(dim=1, keepdim=True) + eps)
        per_layer.append((na - nb).pow(2).flatten(1).mean(1))  # (N,)
    return torch.stack(per_layer).mean(0)
