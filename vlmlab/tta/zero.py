"""ZERO, test-time augmentation voted at zero temperature (Farina et al., NeurIPS 2024, arXiv:2405.18330).

For the N = 64 views of one image (view 0 the image itself, 63 random resized crops + flips),
with unscaled logits l_v = f_v T^T and p_v = softmax(s * l_v):
    keep the int(gamma * N) views of lowest entropy H(p_v)    (gamma = 0.3 -> 19 views)
    votes_c = sum_kept softmax(l_v / eps)_c,  eps = float32 machine epsilon   (one vote per view)
    predict argmax_c votes_c
Ties (two or more classes with the top count): the first view among l[k:] (k = int(gamma N), the
views from position k in their original order, as ``greedy_break(ties, l[k:])`` is called in
``ttas/zero.py``) whose argmax is a tied class; else the tied class with the largest logit in view k.
Reference checked: FarinaMatteo/zero c609f7c (``ttas/zero.py``, ``utils/tools.py``). Departures:
float32 throughout (the original runs under fp16 autocast, which makes ties more frequent); the
last-resort tie-break keeps the stated intent (best tied logit): the reference's ``logit[~ties]``
applies a bitwise NOT to the class indices. Episodic, no backprop; the returned "logits" are the
vote counts (+1 for a tie winner), as the reference returns them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlmlab.metrics import softmax_entropy_from_logits
from vlmlab.tta.base import Batch, TTAConfig, TTAMethod


@dataclass(frozen=True)
class ZeroConfig(TTAConfig):
    n_views: int = 64
    gamma: float = 0.3
    logit_scale: float | None = None      # None = bundle's exp(logit_scale) (the reference's model.temp)


def zero_vote(logits: Tensor, scale: float, gamma: float) -> Tensor:
    """ZERO's decision for one image: unscaled view logits (V, C) -> vote counts (C,), float32."""
    l = logits.float()
    ent = softmax_entropy_from_logits(scale * l)                                 # (V,)
    k = int(l.shape[0] * gamma)
    kept = l[torch.argsort(ent)[:k]]                                              # (k, C)
    eps = torch.finfo(torch.float32).eps
    votes = (kept / eps).softmax(1).sum(0)                                        # (C,)
    top = votes.max()
    ties = torch.nonzero(votes == top).flatten()
    if len(ties) > 1:
        winner = None
        for pred in l[k:].argmax(1).tolist():
            if pred in ties.tolist():
                winner = pred
                break
        if winner is None:
            winner = int(ties[l[k, ties].argmax()])
        votes = votes.clone()
        votes[winner] += 1
    return votes


class Zero(TTAMethod):
    """Filtered majority vote over augmented views; nothing is trained."""

    config_cls = ZeroConfig
    regime = "episodic"
    inputs = ("views",)

    def predict(self, batch: Batch) -> Tensor:
        scale = self.logit_scale
        text = self.ctx.text.to(batch.views)
        return torch.stack([zero_vote(v @ text.T, scale, self.config.gamma) for v in batch.views])
