"""Embedding geometry: uniformity (three variants) and the image-text modality gap.

Uniformity (../shared/papers/uniinfo_tta.md §3; lower = more uniform in every variant).
With d_ij = ||z_i - z_j||_2 and P the set of pairs:
    U = (1/|P|) sum_{(i,j) in P} exp(-t d_ij^2),   reported as U, or as log U when log=True
    poster metric (default)   t = 1,   no log, P = ordered pairs i != j   (seed 000 table)
    Wang & Isola 2020         t = 2,   log,    P = pairs i != j           (arXiv:2005.10242)
    UniInfo training loss     t = 0.5, log,    P = all N^2 pairs incl. i == j (util/loss.py)
The mean over i != j equals the mean over i < j (d is symmetric). Checked against
``ssnl/align_uniform`` (pdist -> square -> *(-t) -> exp -> mean -> log). Embeddings are used as
given: L2-normalise them first for the sphere forms (then d^2 = 2 - 2 cos).
Computation: blocks of ``block_size`` rows in float64, log U = logsumexp(-t d^2) - log|P|
accumulated over the upper-triangle blocks (off-diagonal blocks count twice), so memory is
O(block_size^2) and never N x N. With grad enabled each block is checkpointed, so the backward
pass is blockwise too. ``uniformity_per_batch`` averages U over consecutive batches, as UniInfo
logs ``unif_loss`` (B = 64 online, 128 offline).

Modality gap (§6). Centroid form (Liang et al., NeurIPS 2022, arXiv:2203.02053,
``Weixin-Liang/Modality-Gap`` get_gap_stats.ipynb):
    gap = || mean_i normalize(x_i) - mean_j normalize(y_j) ||_2
EMD form (the poster's "Modality gap (EMD)"): exact optimal transport between
a = sum_i a_i delta_{x_i} and b = sum_c b_c delta_{y_c} with Euclidean cost M_ic = ||x_i - y_c||_2,
    EMD = min_{P >= 0, P 1 = a, P^T 1 = b} <P, M>,   POT ``ot.emd2`` in float64.
Departure guarded against: ``ot.dist`` defaults to squared Euclidean (W2^2); we pass
``metric='euclidean'``. The EMD form uses embeddings as given (normalise them first).
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["uniformity_loss", "uniformity_per_batch", "modality_gap_centroid",
           "modality_gap_emd"]

logger = logging.getLogger(__name__)


def _block_logsumexp(zi: Tensor, zj: Tensor, t: float, diagonal: bool,
                     include_self: bool) -> Tensor:
    """logsumexp of -t ||zi_a - zj_b||^2 over one (b_i, b_j) block; float64 inputs."""
    d2 = (zi.pow(2).sum(-1)[:, None] + zj.pow(2).sum(-1)[None, :]
          - 2.0 * zi @ zj.T).clamp_min(0.0)  # (b_i, b_j)
    s = -t * d2
    if diagonal:  # zi is zj: the diagonal holds the i == j pairs
        eye = torch.eye(zi.shape[0], dtype=torch.bool, device=zi.device)
        s = s.masked_fill(eye, 0.0 if include_self else float("-inf"))
    return torch.logsumexp(s.flatten(), dim=0)


def uniformity_loss(z: Tensor, t: float = 1.0, log: bool = False, include_self: bool = False,
                    block_size: int = 4096) -> Tensor:
    """Uniformity of a set of embeddings, mean of exp(-t ||z_i - z_j||^2) over pairs.

    Args:
        z: (N, D) embeddings (L2-normalised by the caller for the sphere forms).
        t: temperature, > 0. 1 = poster metric, 2 = Wang & Isola, 0.5 = UniInfo loss.
        log: return log of the mean (Wang & Isola, UniInfo) instead of the mean (poster).
        include_self: average over all N^2 pairs including i == j (UniInfo) instead of the
            N (N - 1) pairs of distinct embeddings.
        block_size: rows per block; peak memory ~ a few block_size^2 float64 values.

    Returns:
        0-dim tensor in ``z``'s dtype and device; differentiable when ``z`` requires grad.
    """
    if z.dim() != 2:
        raise ValueError(f"uniformity_loss: z must be (N, D), got shape {tuple(z.shape)}; "
                         "flatten the embeddings first")
    n = z.shape[0]
    if n < 1 or (n < 2 and not include_self):
        raise ValueError(f"uniformity_loss: {n} embedding(s) give no pairs of distinct "
                         "embeddings; pass at least 2, or include_self=True")
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"uniformity_loss: t must be a finite positive number, got {t}")
    if block_size < 1:
        raise ValueError(f"uniformity_loss: block_size must be >= 1, got {block_size}")
    out_dtype = z.dtype if z.is_floating_point() else torch.float64
    z64 = z.to(torch.float64)  # (N, D)
    use_ckpt = z.requires_grad and torch.is_grad_enabled() and n > block_size
    starts = range(0, n, block_size)
    terms = []
    for i0 in starts:
        zi = z64[i0:i0 + block_size]
        for j0 in starts:
            if j0 < i0:
                continue  # symmetric: the (j, i) block is counted via the log 2 below
            diagonal = i0 == j0
            if diagonal and zi.shape[0] == 1 and not include_self:
                continue  # a 1 x 1 diagonal block holds no distinct pair
            zj = z64[j0:j0 + block_size]
            args = (zi, zj, float(t), diagonal, include_self)
            lse = (checkpoint(_block_logsumexp, *args, use_reentrant=False) if use_ckpt
                   else _block_logsumexp(*args))
            terms.append(lse if diagonal else lse + math.log(2.0))
    n_pairs = n * n if include_self else n * (n - 1)
    log_u = torch.logsumexp(torch.stack(terms), dim=0) - math.log(n_pairs)
    return (log_u if log else log_u.exp()).to(out_dtype)


def uniformity_per_batch(z: Tensor, batch_size: int, **kw) -> Tensor:
    """Unweighted mean of ``uniformity_loss`` over consecutive batches of ``z``.

    The last batch may be smaller (UniInfo's online run ends on 16 of 64); order ``z`` as the
    batches were drawn.

    Args:
        z: (N, D) embeddings in batch order.
        batch_size: rows per batch.
        **kw: ``t``, ``log``, ``include_self``, ``block_size`` for ``uniformity_loss``.

    Returns:
        0-dim tensor, the mean over ceil(N / batch_size) batch values.
    """
    if batch_size < 1:
        raise ValueError(f"uniformity_per_batch: batch_size must be >= 1, got {batch_size}")
    n = z.shape[0]
    if n % batch_size == 1 and not kw.get("include_self", False):
        raise ValueError(f"uniformity_per_batch: N = {n} leaves a last batch of 1 embedding, "
                         "which has no distinct pairs; pass z[:-1], another batch_size, or "
                         "include_self=True")
    values = [uniformity_loss(z[k:k + batch_size], **kw) for k in range(0, n, batch_size)]
    return torch.stack(values).mean()


def modality_gap_centroid(image_emb: Tensor, text_emb: Tensor) -> Tensor:
    """Centroid modality gap ||mean(normalize(img)) - mean(normalize(text))||_2 (Liang 2022).

    Args:
        image_emb: (N, D) image embeddings (normalised here).
        text_emb: (M, D) text embeddings (normalised here); for classification pass the
            label's class embedding per image, t_{y_i}.

    Returns:
        0-dim tensor, in [0, 2].
    """
    if image_emb.dim() != 2 or text_emb.dim() != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"modality_gap_centroid: need (N, D) and (M, D) with the same D, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    delta = F.normalize(image_emb, dim=-1).mean(0) - F.normalize(text_emb, dim=-1).mean(0)
    return delta.norm()


def _weights(w, n: int, name: str) -> np.ndarray:
    """Uniform weights, or the given ones checked to be a length-n probability vector."""
    if w is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(w.detach().cpu() if isinstance(w, Tensor) else w, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"modality_gap_emd: {name} must be {n} nonnegative weights summing to 1, "
                         f"got shape {w.shape}, sum {w.sum():.6g}; normalise with w / w.sum()")
    return w


def modality_gap_emd(image_emb: Tensor, text_emb: Tensor, a=None, b=None,
                     max_iter: int = 1_000_000) -> float:
    """Exact earth mover's distance (Euclidean ground cost) between two embedding sets.

    Args:
        image_emb: (N, D) embeddings, used as given.
        text_emb: (C, D) embeddings, used as given.
        a: (N,) weights of the image points; default uniform 1/N.
        b: (C,) weights of the text points; default uniform 1/C (or label frequencies).
        max_iter: network simplex iteration cap (POT ``numItermax``); a warning is logged if
            it is reached before optimality.

    Returns:
        EMD as a Python float (same units as the embeddings).
    """
    import ot  # POT; imported here so that `import vlmlab.metrics` stays light

    x = image_emb.detach().to("cpu", torch.float64).numpy()
    y = text_emb.detach().to("cpu", torch.float64).numpy()
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(f"modality_gap_emd: need nonempty (N, D) and (C, D) with the same D, "
                         f"got {x.shape} and {y.shape}")
    wa, wb = _weights(a, len(x), "a"), _weights(b, len(y), "b")
    cost = ot.dist(x, y, metric="euclidean")  # (N, C), not the squared default
    with warnings.catch_warnings():  # POT warns itself; we log instead, with the fix
        warnings.simplefilter("ignore", UserWarning)
        value, info = ot.emd2(wa, wb, cost, numItermax=int(max_iter), log=True)
    if info.get("warning"):
        logger.warning("modality_gap_emd: POT network simplex did not converge (%s) for N=%d, "
                    "C=%d; raise max_iter (now %d) or subsample N", info["warning"], len(x),
                    len(y), max_iter)
    return float(value)
