"""Tip-Adapter, training-free few-shot cache model (Zhang et al., ECCV 2022, arXiv:2207.09519).

For a unit test feature f (1, D), class texts T (C, D), cache keys K (NK, D) and one-hot values L (NK, C):
    logits = 100 * f T^T + alpha * exp(-beta * (1 - f K^T)) L
Keys: each support image encoded in ``augment_epochs`` = 10 passes of RandomResizedCrop(scale 0.5-1)
+ flip; the *raw* image-encoder outputs are averaged over passes, then L2-normalised
(``utils.py: build_cache_model``; ``key_average="normalized"`` averages unit vectors instead).
alpha/beta: ImageNet init alpha 1.17, beta 1 (``configs/imagenet.yaml``), then a grid search
(``search_hp``: beta in 200 steps over [0.1, 7), alpha in 20 steps over [0.1, 3), first best kept).
Reference checked: gaopengcuhk/Tip-Adapter d0e2d6f. Departure: the search runs on the few-shot
*validation* set (min(K, 4) shots per class), never on test; ``main_imagenet.py`` searches on the
test set (``search_hp(..., test_features, test_labels, ...)``) and reports the grid's best test accuracy
(its ``main.py``, for the other datasets, searches on their whole validation split):
``search_on="test"`` does that (the runner hands the stream's features and labels to ``search_test``
before the stream; per corruption, each being its own test set). Text: the run's prompt (the reference uses the 7-template ensemble:
``templates="imagenet7"``). Support views, as the reference's (``datasets/imagenet.py``'s ``train_preprocess``):
RandomResizedCrop(S, scale 0.5-1, bicubic) + flip of the *raw* support image (the decoded file; the world's
array), drawn per (run seed, support item, augment epoch) (``ImageSource.crops``); ``support_crops="served"``
(vlmlab until 2026-12-04) cropped the model input instead (the 224 centre crop on real data; bilinear
``roi_align``, ``make_views``). Tip-Adapter-F
(fine-tuned keys) is not included: the poster's row is the training-free adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.tta.base import Batch, Context, TTAConfig, TTAMethod, encode_single, make_views, view_seed


@dataclass(frozen=True)
class TipAdapterConfig(TTAConfig):
    shots: int = 1
    alpha: float = 1.17
    beta: float = 1.0
    augment_epochs: int = 10                 # 0 = keys are the plain support features
    augment_scale: tuple[float, float] = (0.5, 1.0)
    key_average: str = "raw"                 # raw: mean of encoder outputs, then normalise (reference)
    support_crops: str = "raw"               # raw: crops of the raw image (reference); served: of the S x S input
    search: bool = True                      # grid-search alpha/beta (on ``search_on``)
    search_on: str = "val"                   # "val": the validation shots; "test": the test labels (main_imagenet.py)
    beta_search: tuple[float, float, int] = (0.1, 7.0, 200)
    alpha_search: tuple[float, float, int] = (0.1, 3.0, 20)
    logit_scale: float = 100.0
    templates: str = "run"                   # "run": the run's prompt (departure); "imagenet7": the reference's ensemble


SEARCH_ON = ("val", "test")
SUPPORT_CROPS = ("raw", "served")


def grid(lo: float, hi: float, steps: int) -> list[float]:
    """The reference's search list: lo + i (hi - lo) / steps, i = 0..steps-1."""
    return [lo + i * (hi - lo) / steps for i in range(int(steps))]


class TipAdapter(TTAMethod):
    """Cache model over the support set; static at test time."""

    config_cls = TipAdapterConfig
    regime = "static"
    inputs = ("feats",)
    needs_support = True

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        s, cfg = ctx.support, self.config
        if s.shots != cfg.shots:
            raise ValueError(f"tip_adapter has shots={cfg.shots} but the support set holds {s.shots} per class")
        if cfg.search_on not in SEARCH_ON:
            raise ValueError(f"tip_adapter search_on={cfg.search_on!r}; use one of {SEARCH_ON}")
        if cfg.support_crops not in SUPPORT_CROPS:
            raise ValueError(f"tip_adapter support_crops={cfg.support_crops!r}; use one of {SUPPORT_CROPS}")
        self.text = ctx.class_text(cfg.templates)                                  # (C, D)
        self.keys = self._keys(ctx)                                               # (NK, D)
        self.values = F.one_hot(s.labels.long(), ctx.n_classes).float()          # (NK, C)
        self.alpha, self.beta = cfg.alpha, cfg.beta
        if cfg.search and cfg.search_on == "val":
            self.alpha, self.beta, self.val_acc = self._search(s.val_feats.float(), s.val_labels)

    @property
    def searches_on_test(self) -> bool:
        """Whether the runner must call ``search_test`` with the stream's labels before the stream."""
        return self.config.search and self.config.search_on == "test"

    def search_test(self, feats: Tensor, labels: Tensor) -> float:
        """``search_on="test"``, the reference's ImageNet protocol: alpha/beta set to the grid's best on the
        test set itself (features (N, D), labels (N,)); returns that best test accuracy (%)."""
        if not self.searches_on_test:
            raise RuntimeError("tip_adapter.search_test is for search_on='test' (with search on)")
        self.alpha, self.beta, self.test_acc = self._search(feats.float(), labels)
        return self.test_acc

    def _keys(self, ctx: Context) -> Tensor:
        s, cfg = ctx.support, self.config
        if cfg.key_average not in ("raw", "normalized"):
            raise ValueError(f"tip_adapter key_average {cfg.key_average!r}: use 'raw' (the reference) or 'normalized'")
        if cfg.augment_epochs == 0:
            return F.normalize(s.feats.float(), dim=-1)
        if s.images is None:
            raise ValueError("tip_adapter with augment_epochs > 0 needs the support images (Support.images)")
        idx = torch.arange(len(s.labels))
        total = 0.0
        for epoch in range(cfg.augment_epochs):
            parts = []
            for chunk in idx.split(256):
                if cfg.support_crops == "raw":                                    # the reference's train transform
                    v = s.images.crops(chunk, [epoch] * len(chunk), ctx.seed, scale=cfg.augment_scale)
                else:                                                             # crops of the served S x S input
                    seeds = [view_seed(ctx.seed * 1000 + epoch, i) for i in chunk.tolist()]
                    v = make_views(s.images(chunk), 1, seeds, scale=cfg.augment_scale, keep_original=False)[:, 0]
                parts.append(encode_single(ctx.bundle, v, normalize=cfg.key_average == "normalized").cpu())
            total = total + torch.cat(parts)
        return F.normalize(total / cfg.augment_epochs, dim=-1)

    def cache_logits(self, f: Tensor, beta: float) -> Tensor:
        """exp(-beta (1 - f K^T)) L: (B, D) -> (B, C)."""
        affinity = f @ self.keys.to(f).T                                          # (B, NK)
        return torch.exp(-beta * (1.0 - affinity)) @ self.values.to(f)

    def _search(self, f: Tensor, y: Tensor) -> tuple[float, float, float]:
        cfg = self.config
        clip = cfg.logit_scale * f @ self.text.to(f).T
        best = (-1.0, cfg.alpha, cfg.beta)
        for beta in grid(*cfg.beta_search):
            cache = self.cache_logits(f, beta)
            for alpha in grid(*cfg.alpha_search):
                acc = float(((clip + alpha * cache).argmax(1) == y.to(f.device)).float().mean()) * 100
                if acc > best[0]:
                    best = (acc, alpha, beta)
        return best[1], best[2], best[0]

    def predict(self, batch: Batch) -> Tensor:
        f = batch.feats.float()
        clip = self.config.logit_scale * f @ self.text.to(f).T               # (B, C)
        return clip + self.alpha * self.cache_logits(f, self.beta)
