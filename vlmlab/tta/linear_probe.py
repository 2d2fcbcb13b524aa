"""Linear probe on frozen features, the few-shot baseline of the poster's Table 2 (1/5/10 shots).

    logits = f W^T + b,  (W, b) = L2-regularised multinomial logistic regression on the support set
Radford et al. (arXiv:2103.00020, CLIP README: sklearn LogisticRegression, C swept on validation);
CoOp's protocol (Zhou et al., arXiv:2109.01134, ``lpclip/linear_probe.py``): C searched over
{1e6, ..., 1e-6} on a few-shot validation set of min(K, 4) shots per class, then 8 rounds of
lpclip's end-point search in log space (``vlmlab.probe.search_C``). C is never chosen on test data.
Features: the image encoder's output before normalisation, as lpclip's (``clip_model.visual(x)``) and
CLIP's linear-probe example (``features: normalized`` fits the unit embeddings, vlmlab until fidelity row #17).
The fit is float64, as lpclip's (``dtype: float32``: vlmlab before 2026-12-04).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vlmlab.probe import check_features, fit_linear_probe
from vlmlab.tta.base import Batch, Context, TTAConfig, TTAMethod


@dataclass(frozen=True)
class LinearProbeConfig(TTAConfig):
    shots: int = 1               # shots per class in the support set (the poster: 1, 5, 10)
    refine: int = 8              # CoOp's bisection rounds after the coarse C grid
    max_iter: int = 1000
    C: float | None = None       # fixed C (skips the search)
    dtype: str = "float64"       # the fit's feature dtype: lpclip's float64, or "float32" (vlmlab.probe)
    features: str = "raw"        # "raw": the encoder's output (lpclip's) | "normalized": unit embeddings


class LinearProbe(TTAMethod):
    """Logistic regression fitted once on the support set; static at test time."""

    config_cls = LinearProbeConfig
    regime = "static"
    inputs = ("raw_feats",)      # the default config's; an instance with features="normalized" reads "feats"
    needs_support = True

    def __init__(self, config: LinearProbeConfig | None = None):
        super().__init__(config)
        self.raw = check_features(self.config.features, "linear_probe: features") == "raw"
        self.inputs = ("raw_feats",) if self.raw else ("feats",)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        s = ctx.support
        if s.shots != self.config.shots:
            raise ValueError(f"linear_probe has shots={self.config.shots} but the support set holds {s.shots} "
                             "per class; build the support with the method's shots")
        x, xv = (s.raw("train"), s.raw("val")) if self.raw else (s.feats, s.val_feats)
        self.probe = fit_linear_probe(x, s.labels, xv, s.val_labels, C=self.config.C,
                                      refine=self.config.refine, max_iter=self.config.max_iter,
                                      seed=ctx.seed, n_classes=ctx.n_classes, dtype=self.config.dtype)

    def predict(self, batch: Batch) -> Tensor:
        x = batch.raw_feats if self.raw else batch.feats
        return self.probe.logits(x).to(x.device)                                      # (B, C)
