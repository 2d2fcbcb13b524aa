"""ZERO, test-time augmentation voted at zero temperature (Farina et al., NeurIPS 2024, arXiv:2405.18330).

For the N = 64 views of one image (view 0 the image itself, 63 random resized crops + flips),
with unscaled logits l_v = f_v T^T and p_v = softmax(s * l_v):
    keep the int(gamma * N) views of lowest entropy H(p_v)    (gamma = 0.3 -> 19 views)
    votes_c = sum_kept softmax(l_v / eps)_c,  eps = the vote dtype's machine epsilon   (one vote per view)
    predict argmax_c votes_c
Ties (two or more classes with the top count): the first *discarded* view, in confidence order
(ascending entropy, as ``greedy_break(ties, l[sorted_idx][k:])`` in ``ttas/zero.py`` since the
"bugfix greedy_break" commit), whose argmax is a tied class; else the tied class with the largest
logit in the most confident discarded view (``last_resort``, below).
Reference checked: FarinaMatteo/zero c609f7c (``ttas/zero.py``, ``utils/tools.py``). Precision
(``vote_dtype``): the reference runs under fp16 autocast, so its "zero" temperature is fp16's
machine epsilon (9.8e-4) on fp16 logits, which leaves near-equal logits a soft, split vote and
makes ties rarer; ``"float16"`` (default) reproduces that, and the filter's as well: the reference's
``(l / temp).softmax(1)`` divides fp16 logits by a 0-dim fp32 temperature, so the scaled logits are
rounded to fp16 before the (fp32) softmax that ranks the views. ``"float32"`` gives a hard vote
(eps 1.2e-7) and ranks on fp32 scaled logits. Last resort (``last_resort``): the reference's
``break_sample_tie`` sets
``logit[~ties] = -inf`` and takes the argmax over all classes; ``~`` on the integer class indices is a
bitwise NOT (t -> -t - 1), so it masks the classes C - 1 - t counted from the front, not the untied
ones, and the winner can be a class outside the tie. ``"reference"`` (default) does exactly that;
``"tied"`` takes the stated intent, the tied class with the largest logit. Episodic, no backprop;
the returned "logits" are the vote counts (+1 for a tie winner), as the reference returns them.
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
    vote_dtype: str = "float16"           # float16: the reference's autocast vote; float32: a hard vote
    last_resort: str = "reference"        # reference: logit[~ties] = -inf, argmax of all; tied: best tied logit


LAST_RESORTS = ("reference", "tied")


def last_resort_winner(logit: Tensor, ties: list[int], rule: str = "reference") -> int:
    """The class a tie goes to when no discarded view votes a tied class; ``logit`` (C,) is the most
    confident discarded view's. ``"reference"``: ``break_sample_tie``'s ``logit[~ties] = -inf`` (masks
    classes C - 1 - t) and the argmax of all C; ``"tied"``: the tied class with the largest logit."""
    if rule == "tied":
        return ties[int(logit[ties].argmax())]
    if rule == "reference":
        masked = logit.clone()
        masked[[-t - 1 for t in ties]] = -torch.inf
        return int(masked.argmax())
    raise ValueError(f"ZERO last_resort {rule!r}: use one of {LAST_RESORTS}")


def zero_vote(logits: Tensor, scale: float, gamma: float, vote_dtype: str = "float16",
              last_resort: str = "reference") -> Tensor:
    """ZERO's decision for one image: unscaled view logits (V, C) -> vote counts (C,), float32."""
    dtype = {"float16": torch.float16, "float32": torch.float32}.get(vote_dtype)
    if dtype is None:
        raise ValueError(f"ZERO vote_dtype {vote_dtype!r}: use 'float16' (the reference) or 'float32'")
    if last_resort not in LAST_RESORTS:
        raise ValueError(f"ZERO last_resort {last_resort!r}: use one of {LAST_RESORTS}")
    l = logits.to(dtype)
    if dtype == torch.float16:    # the reference's l / temp: fp16 logits over a 0-dim fp32 temp stay fp16
        scaled = (l / (1 / torch.tensor(scale, dtype=torch.float32))).float()
    else:
        scaled = scale * l.float()
    ent = softmax_entropy_from_logits(scaled)                                     # (V,)
    order = torch.argsort(ent, stable=True)                                       # most confident first
    k = int(l.shape[0] * gamma)
    kept, discarded = l[order[:k]], l[order[k:]]                                  # (k, C), (V - k, C)
    votes = (kept / torch.finfo(dtype).eps).float().softmax(1).sum(0)            # (C,)
    ties = torch.nonzero(votes == votes.max()).flatten().tolist()
    if len(ties) > 1:
        winner = next((p for p in discarded.argmax(1).tolist() if p in ties), None)
        if winner is None:
            winner = last_resort_winner(discarded[0], ties, last_resort)
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
        return torch.stack([zero_vote(v @ text.T, scale, self.config.gamma, self.config.vote_dtype,
                                      self.config.last_resort) for v in batch.views])
