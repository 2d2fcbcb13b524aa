"""TPT, test-time prompt tuning (Shu et al., NeurIPS 2022, arXiv:2209.07511).

Per test image (episodic: the prompt and the optimiser state are reset before every image):
    views: the image + 63 random resized crops with flips (64 unit features f_v from the frozen tower)
    T(ctx) = normalize(text features of "[ctx_1..ctx_4] {class}."), ctx initialised from "a photo of a"
    keep the int(0.1 * 64) = 6 views with the lowest entropy of softmax(s f_v T^T), chosen once
    L = H( mean_{v kept} softmax(s f_v T^T) )          (marginal entropy, computed with logsumexp)
    one AdamW step (lr 5e-3, weight decay 0.01) on ctx, then predict s f_0 T(ctx)^T on the image itself
s = the model's exp(logit_scale). Reference checked: azshue/TPT 63ecbac (``tpt_classification.py``
``test_time_tuning``, ``select_confident_samples``, ``avg_entropy``; ``clip/custom_clip.py``).
The learnable context is ``vlmlab.prompts.PromptLearner`` (shared with CoOp). Precision: the context is
float32 (as the reference's: its CLIP weights stay fp32) and both towers run under the bundle's autocast
(the reference: fp16 autocast around the tuning step and the prediction, with a GradScaler, which leaves the
AdamW update unchanged up to rounding, except a step it skips on an fp16 overflow). Departures
(docs/fidelity.md):
views are crops of the model input (``vlmlab.tta.base``); the run's class names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.prompts import PromptLearner
from vlmlab.tta.base import Batch, Context, TTAConfig, TTAMethod


@dataclass(frozen=True)
class TPTConfig(TTAConfig):
    n_views: int = 64
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    selection: float = 0.1            # fraction of lowest-entropy views kept
    lr: float = 5e-3
    weight_decay: float = 0.01        # torch AdamW default, as in the reference
    steps: int = 1
    logit_scale: float | None = None  # None = bundle's exp(logit_scale)


def select_confident(logits: Tensor, fraction: float) -> Tensor:
    """Indices of the int(V * fraction) views (rows of (V, C) logits) with the lowest entropy."""
    ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    return torch.argsort(ent)[:max(int(logits.shape[0] * fraction), 1)]


def marginal_entropy(logits: Tensor) -> Tensor:
    """H(mean_v softmax(logits_v)) for (V, C) logits, stably (the reference's ``avg_entropy``)."""
    log_p = logits - logits.logsumexp(dim=-1, keepdim=True)                       # (V, C)
    avg = log_p.logsumexp(dim=0) - math.log(logits.shape[0])                      # (C,)
    avg = avg.clamp(min=torch.finfo(avg.dtype).min)
    return -(avg * avg.exp()).sum()


class TPT(TTAMethod):
    """One entropy step on a learned prompt context per image; the image tower stays frozen."""

    config_cls = TPTConfig
    regime = "episodic"
    inputs = ("views",)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        cfg = self.config
        self.learner = PromptLearner(ctx.bundle, ctx.classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init)

    def reset(self) -> None:
        self.learner.reset()
        self.opt = torch.optim.AdamW([self.learner.ctx], lr=self.config.lr, weight_decay=self.config.weight_decay)

    def _text(self) -> Tensor:
        with self.learner.bundle.autocast():                                        # the reference's AMP
            text = self.learner()
        return F.normalize(text.float(), dim=-1)                                    # (C, D)

    def predict(self, batch: Batch) -> Tensor:
        views = batch.views[0].float()                                              # (V, D); one image
        selected = None
        for _ in range(self.config.steps):
            logits = self.logit_scale * views @ self._text().T                      # (V, C)
            if selected is None:
                selected = select_confident(logits.detach(), self.config.selection)
            loss = marginal_entropy(logits[selected])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        with torch.no_grad():
            return self.logit_scale * views[:1] @ self._text().T                    # (1, C)
