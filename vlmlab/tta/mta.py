"""MTA, MeanShift for test-time augmentation (Zanella & Ben Ayed, CVPR 2024, arXiv:2405.02266).

For the N = 64 unit view embeddings x_i of one image (view 0 the image itself), logits
l_i = s x_i T^T, affinity A = softmax(l) softmax(l)^T, per-point bandwidth
h_i = sqrt(0.5 * mean of the k = int(0.3 (N - 1)) smallest squared distances to other views), and
K_i(m) = exp(-||x_i - m||^2 / (2 h_i^2)), alternate ``outer_iters`` = 5 times:
    inlierness (up to 5 times, stop when ||dy|| < 1e-6):  y = softmax((K(m) + lambda_q A y) / lambda_y)
    mode       (up to 5 times, stop when ||dm|| < 1e-6):  m = normalize( sum_i K_i(m) y_i x_i / sum_i K_i(m) y_i )
with y = 1/N and m = x_0 at the start; predict s m T^T. lambda_y = 0.2, lambda_q = 4.
Reference checked: MaxZanella/MTA cafafdf (``mta.py solve_mta``; ``main.py`` defaults). Training-free,
episodic. Precision: the bundle's (the reference runs the encoder under fp16 autocast; notebook 02's
paper profile runs fp32, UniInfo's precision, for every row: docs/fidelity.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.tta.base import Batch, TTAConfig, TTAMethod


@dataclass(frozen=True)
class MTAConfig(TTAConfig):
    n_views: int = 64
    lambda_y: float = 0.2
    lambda_q: float = 4.0
    neighbours: float = 0.3          # k = int(neighbours * (N - 1)) -> 18 of 63
    outer_iters: int = 5
    inner_iters: int = 5
    tol: float = 1e-6
    logit_scale: float | None = None


def bandwidths(x: Tensor, frac: float) -> Tensor:
    """h_i = sqrt(0.5 * mean of the k smallest squared distances from x_i to the other points), (N,)."""
    d = torch.cdist(x, x).sort(dim=1).values                                     # (N, N), column 0 = self
    k = max(int(frac * (x.shape[0] - 1)), 1)
    return torch.sqrt(0.5 * d[:, 1:k + 1].pow(2).mean(1))


def kernel(m: Tensor, x: Tensor, h: Tensor) -> Tensor:
    return torch.exp(-(x - m).norm(dim=-1).pow(2) / (2 * h.pow(2)))              # (N,)


def mode_update(m: Tensor, x: Tensor, h: Tensor, y: Tensor) -> Tensor:
    """One weighted MeanShift step on the sphere."""
    w = kernel(m, x, h) * y
    return F.normalize((w[:, None] * x).sum(0) / w.sum(), dim=-1)


def solve_mta(x: Tensor, logits: Tensor, cfg: MTAConfig) -> tuple[Tensor, Tensor]:
    """Mode (D,) and inlierness (N,) of the views ``x`` (N, D) with scaled logits (N, C)."""
    h = bandwidths(x, cfg.neighbours)
    p = logits.softmax(1)
    affinity = p @ p.T                                                            # (N, N)
    y = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    m = x[0]
    for _ in range(cfg.outer_iters):
        density = kernel(m, x, h)
        for _ in range(cfg.inner_iters):
            old = y
            y = F.softmax((density + cfg.lambda_q * (affinity * y[None]).sum(1)) / cfg.lambda_y, dim=-1)
            if (old - y).norm() < cfg.tol:
                break
        for _ in range(cfg.inner_iters):
            old = m
            m = mode_update(m, x, h, y)
            if (old - m).norm() < cfg.tol:
                break
    return m, y


class MTA(TTAMethod):
    """The mode of the view embeddings, weighted by inlierness; nothing is trained."""

    config_cls = MTAConfig
    regime = "episodic"
    inputs = ("views",)

    def predict(self, batch: Batch) -> Tensor:
        scale = self.logit_scale
        text = self.ctx.text.to(batch.views.float())
        out = []
        for x in batch.views.float():                                            # (N, D)
            m, _ = solve_mta(x, scale * x @ text.T, self.config)
            out.append(scale * m @ text.T)
        return torch.stack(out)
