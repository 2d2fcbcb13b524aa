"""TDA, training-free dynamic adapter (Karmanov et al., CVPR 2024, arXiv:2403.18293).

For a unit-norm image feature f and zero-shot logits z = 100 f T^T:
    logits = z + A_p(f Q_p^T) L_p - A_n(f Q_n^T) L_n,   A(x) = alpha * exp(-beta * (1 - x))
Q_p, L_p: positive cache, per pseudo-class (argmax z) the ``pos_shots`` lowest-entropy features and
one-hot labels. Q_n, L_n: negative cache, filled only when the normalised entropy is inside
``entropy_band``; L_n = 1[mask_band[0] < p_c < mask_band[1]] of the stored probabilities.
A new item joins its class if there is room, else replaces the class's highest-entropy item when
its own entropy is lower; the item enters the caches before its own prediction; caches persist
over the whole stream (online) and are emptied per (corruption, severity).
Defaults: kdiAAA/TDA e697fb0 ``configs/imagenet.yaml`` (the ImageNet "I" setting: one view).
``views="augmix"`` is the reference's ImageNet-A/V/R/S setting (``utils.py get_ood_preprocess``,
``get_clip_logits``): the image and 63 AugMix views of its raw file (``vlmlab.data.augmix``); the int(0.1 V) = 6
views of lowest entropy are kept, f = their features' mean (not renormalised), z = their logits' mean, the
cached entropy is that of their mean probability (``avg_entropy``) and the negative cache stores their mean
probability; f, z and that entropy then enter the caches and the logits as above.
Kept quirk: the reference divides an entropy in nats by log2(C) (``utils.py get_entropy``); we match
it so the bands mean the same (for any C the band is the same fraction of ln C).
Departure: the run's prompt instead of the 7-template ensemble (``templates="imagenet7"`` restores it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vlmlab.metrics import softmax_entropy_from_logits
from vlmlab.tta.base import Batch, TTAConfig, TTAMethod
from vlmlab.tta.tpt import marginal_entropy

VIEWS = ("single", "augmix")


@dataclass(frozen=True)
class TDAConfig(TTAConfig):
    pos_shots: int = 3
    pos_alpha: float = 2.0
    pos_beta: float = 5.0
    neg_shots: int = 2
    neg_alpha: float = 0.117
    neg_beta: float = 1.0
    entropy_band: tuple[float, float] = (0.2, 0.5)
    mask_band: tuple[float, float] = (0.03, 1.0)
    logit_scale: float = 100.0
    batch_size: int = 1                   # the reference streams one image at a time
    templates: str = "run"                # "run": the run's prompt (departure); "imagenet7": the reference's ensemble
    views: str = "single"                 # "single": the reference's ImageNet setting; "augmix": its A/V/R/S setting
    n_views: int = 64                     # with views="augmix": the image and 63 AugMix views
    view_fraction: float = 0.1            # with views="augmix": the lowest-entropy fraction kept

    def __post_init__(self):
        if self.views not in VIEWS:
            raise ValueError(f"TDA views={self.views!r}: expected one of {VIEWS}")
        if self.views == "augmix" and int(self.n_views * self.view_fraction) < 1:
            raise ValueError(f"TDA keeps int(n_views * view_fraction) views: n_views={self.n_views}, "
                             f"view_fraction={self.view_fraction} keeps none")


class Cache:
    """Per-class slots: keys (C, K, D), entropies (C, K) with +inf marking an empty slot, extras (C, K, E).

    ``add`` follows the reference's policy (``tda_runner.py update_cache``): fill a free slot of the class,
    else replace the class's highest-entropy entry when the new entropy is lower. The reference keeps each
    list sorted by a stable sort after appending or overwriting its last item, so among entries of equal
    entropy the one that entered last sits last and is the one replaced; ``stamp`` (the order entries
    entered) breaks ties the same way, so both hold the same entries even then.
    """

    def __init__(self, capacity: int, n_classes: int, dim: int, extra_dim: int = 0):
        self.capacity = capacity
        self.keys = torch.zeros(n_classes, capacity, dim)
        self.entropy = torch.full((n_classes, capacity), math.inf)
        self.extra = torch.zeros(n_classes, capacity, extra_dim)
        self.stamp = torch.zeros(n_classes, capacity, dtype=torch.long)
        self._clock = 0

    def add(self, cls: int, feat: Tensor, ent: float, extra: Tensor | None = None) -> None:
        row = self.entropy[cls]
        free = torch.isinf(row)
        if free.any():
            slot = int(free.nonzero()[0])
        elif ent < float(row.max()):
            worst = (row == row.max()).nonzero()[:, 0]                      # ties: the latest to enter
            slot = int(worst[self.stamp[cls, worst].argmax()])
        else:
            return
        self._clock += 1
        self.keys[cls, slot] = feat
        self.entropy[cls, slot] = ent
        self.stamp[cls, slot] = self._clock
        if extra is not None:
            self.extra[cls, slot] = extra

    def __len__(self) -> int:
        return int((~torch.isinf(self.entropy)).sum())

    def state(self) -> dict:
        """What the cache holds (``TDA.resume_state``)."""
        return {"keys": self.keys, "entropy": self.entropy, "extra": self.extra, "stamp": self.stamp,
                "clock": self._clock}

    def load(self, state: dict) -> None:
        self.keys, self.entropy, self.extra, self.stamp = (state[k].clone()
                                                           for k in ("keys", "entropy", "extra", "stamp"))
        self._clock = int(state["clock"])

    def entries(self, cls: int) -> list[float]:
        """The entropies held for ``cls``, ascending."""
        row = self.entropy[cls]
        return sorted(row[~torch.isinf(row)].tolist())

    def affinity_weights(self, f: Tensor, beta: float) -> Tensor:
        """exp(-beta (1 - f k^T)) for every slot, 0 for empty ones: (1, D) -> (C, K)."""
        sims = (self.keys @ f[0]).to(f.dtype)                                       # (C, K)
        return torch.exp(-beta * (1.0 - sims)) * (~torch.isinf(self.entropy)).to(f.dtype)


class TDA(TTAMethod):
    """Positive and negative caches over the stream; no backpropagation."""

    config_cls = TDAConfig
    regime = "online"
    inputs = ("feats",)           # the default config's; an instance with views="augmix" reads "augmix_views"

    def __init__(self, config: TDAConfig | None = None):
        super().__init__(config)
        self.inputs = ("augmix_views",) if self.config.views == "augmix" else ("feats",)

    @property
    def n_views(self) -> int:
        return self.config.n_views if self.config.views == "augmix" else 1

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.text = ctx.class_text(self.config.templates).float()                   # (C, D)

    def reset(self) -> None:
        c, d = self.ctx.n_classes, self.ctx.text.shape[1]
        self.pos = Cache(self.config.pos_shots, c, d)
        self.neg = Cache(self.config.neg_shots, c, d, extra_dim=c)

    def resume_state(self) -> dict:
        """The two caches part-way through a stream: all TDA learns (a stopped stream resumes from them)."""
        return {"pos": self.pos.state(), "neg": self.neg.state()}

    def load_resume_state(self, state: dict) -> None:
        self.pos.load(state["pos"])
        self.neg.load(state["neg"])

    def confident_views(self, x: Tensor) -> tuple[Tensor, Tensor, float, Tensor]:
        """The reference's multi-view readout of one image's unit view features x (V, D): the mean feature
        and mean logits of the int(fraction V) lowest-entropy views, (1, D) and (1, C), the entropy of their
        mean probability, and that mean probability (C,)."""
        z = self.config.logit_scale * x @ self.text.T                              # (V, C)
        keep = torch.argsort(softmax_entropy_from_logits(z))[:int(len(x) * self.config.view_fraction)]
        return x[keep].mean(0, keepdim=True), z[keep].mean(0, keepdim=True), float(marginal_entropy(z[keep])), \
            z[keep].softmax(1).mean(0)

    def step(self, f: Tensor, views: Tensor | None = None) -> Tensor:
        """One image: f (1, D) -> logits (1, C), after adding it to the caches; with ``views`` (V, D) the
        reference's multi-view readout replaces f, its logits, entropy and probabilities."""
        cfg, c = self.config, self.ctx.n_classes
        if views is None:
            z = cfg.logit_scale * f @ self.text.T                                   # (1, C)
            ent = float(softmax_entropy_from_logits(z)[0])
            prob = None
        else:
            f, z, ent, prob = self.confident_views(views)
        pred = int(z.argmax(1))
        self.pos.add(pred, f[0], ent)
        normalised = ent / math.log2(c)
        if cfg.entropy_band[0] < normalised < cfg.entropy_band[1]:
            self.neg.add(pred, f[0], ent, z.softmax(1)[0] if prob is None else prob)
        # positive values are the slot's class (one-hot): sum each class's row of weights
        out = z + cfg.pos_alpha * self.pos.affinity_weights(f, cfg.pos_beta).sum(1)[None]
        lo, hi = cfg.mask_band
        neg_values = ((self.neg.extra > lo) & (self.neg.extra < hi)).to(f.dtype)   # (C, K, C)
        w = self.neg.affinity_weights(f, cfg.neg_beta)                             # (C, K)
        return out - cfg.neg_alpha * torch.einsum("ck,ckj->j", w, neg_values)[None]

    def predict(self, batch: Batch) -> Tensor:
        if self.config.views == "augmix":
            v = batch.views.float().cpu()
            return torch.cat([self.step(None, v[i]) for i in range(len(v))])
        f = batch.feats.float().cpu()
        return torch.cat([self.step(f[i:i + 1]) for i in range(len(f))])
