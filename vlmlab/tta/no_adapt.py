"""No-adapt: zero-shot CLIP (Radford et al., ICML 2021, arXiv:2103.00020), the table's first row.

    logits = s * f T^T,   f: (B, D) unit image features, T: (C, D) unit class text embeddings
s = the model's exp(logit_scale) unless ``logit_scale`` is set (UniInfo's evaluator uses 1/0.01 = 100;
the argmax, and so the accuracy, does not depend on s). Reads cached single-view features.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vlmlab.tta.base import Batch, TTAConfig, TTAMethod


@dataclass(frozen=True)
class NoAdaptConfig(TTAConfig):
    logit_scale: float | None = None   # None = bundle.logit_scale


class NoAdapt(TTAMethod):
    """Zero-shot prediction with the frozen model and the run's prompt."""

    config_cls = NoAdaptConfig
    regime = "static"
    inputs = ("feats",)

    def predict(self, batch: Batch) -> Tensor:
        scale = self.logit_scale
        return scale * batch.feats @ self.ctx.text.to(batch.feats).T            # (B, C)
