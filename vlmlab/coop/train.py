"""CoOp training: learn the prompt context on K shots per class (Zhou et al., IJCV 2022, arXiv:2109.01134).

    p(y = i | x) = exp(s cos(g(t_i), f(x))) / sum_j exp(s cos(g(t_j), f(x))),   loss = CE, only ctx trained
t_i: the prompt of class i (``vlmlab.prompts.PromptLearner``), g: the frozen text encoder, f: the frozen
image encoder, s: CLIP's exp(logit_scale). Optimisation as KaiyangZhou/CoOp ff61507 (configs
``rn50*.yaml``) on Dassl c61a1b5 (``coop.md`` §6): SGD lr 0.002, momentum 0.9, weight decay 5e-4;
batch 32 (drop_last only when the set has >= 32 items); one warm-up epoch at constant lr 1e-5, then
cosine annealing stepped per epoch with T_max = all epochs:
    lr(0) = 1e-5,   lr(k >= 1) = 0.001 * (1 + cos(pi * (k - 1) / E))
epochs 50 (1 shot), 100 (2, 4), 200 (8, 16); ImageNet 50 for every K; the last epoch's context is kept.

Two modes:
    exact   every step encodes the batch's CoOp augmentations (``vlmlab.coop.augment``): CoOp's protocol
    cached  features of V augmented views per image are computed once; each step samples a view
``cached`` is a departure, not just a cheaper route: each image is seen through V fixed crops where
CoOp draws a fresh crop every epoch (up to 200 at 16 shots). Measured on the world (objects, 16
shots, V = 16, crops 50-100 %, 3 seeds, CoOp's 200 epochs; ``benchmarks/bench_coop.py``): world 2
74.27 vs 74.37 % (-0.10 points); world 1 82.20 vs 82.53 % (-0.33); docs/fidelity.md.
The paper profile uses ``exact``. ``ctx_dtype``: the context's storage and SGD arithmetic. CoOp
creates it in the model's dtype (``trainers/coop.py``: fp16 under ``PREC: fp16``, fp32 under ``fp32``
and ``amp``, which autocasts an fp32 model); ``"auto"`` (default) follows that rule with the bundle's
effective ``precision``: fp16 autocast -> float16 (the paper profile on a GPU), fp32 or bf16 autocast
(the embedded profile, CoOp's ``amp`` with bf16) -> float32. Departures: the order of samples comes
from a torch generator seeded per run, not from Dassl's sampler; a CSC variant with a phrase init stays
class-specific, where CoOp ignores CSC under CTX_INIT (``csc_with_phrase="unified"`` does as CoOp).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.checkpoints import Checkpoint
from vlmlab.coop.augment import encode_augmented
from vlmlab.coop.text_batch import text_features
from vlmlab.models.bundle import ClipBundle
from vlmlab.prompts import PromptLearner
from vlmlab.runtime import effective_precision, get_logger

log = get_logger("vlmlab.coop")

MODES = ("cached", "exact")
PAPER_EPOCHS = ((1, 50), (2, 100), (4, 100), (8, 200), (16, 200))
IMAGENET_EPOCHS = ((1, 50),)
CTX_DTYPES = {"float32": torch.float32, "float16": torch.float16}
CSC_WITH_PHRASE = ("per_class", "unified")


@dataclass(frozen=True)
class CoOpConfig:
    """CoOp's hyperparameters (paper defaults; ``coop.md`` §5-6).

    ``ctx_init`` "" or None = random N(0, 0.02^2) init; a phrase fixes M to its word count (CoOp's
    ``len(ctx_init.split(" "))``; ``PromptLearner``'s ``ctx_init_length``).
    ``epochs``: (shots, epochs) pairs; K uses the entry of the largest shots <= K.
    ``n_views`` / ``view_sampling`` ("random" | "cycle"): the cached mode's views per image and how a
    step picks one ("cycle": view = epoch mod V, which equals the exact mode when V >= epochs).
    ``crop_scale``: area range of the random resized crop (Dassl's 0.08-1).
    ``ctx_dtype`` ("auto" | "float32" | "float16"): the context's dtype, in which SGD steps it ("auto":
    float16 under an fp16 bundle, as CoOp's PREC fp16; else float32; ``context_dtype``).
    ``csc_with_phrase`` ("per_class" | "unified"): what ``csc`` means under a phrase init. "per_class": one
    copy of the phrase per class, trained class-specifically; "unified": CoOp's ``trainers/coop.py``, which
    reads ``CSC`` only in its random-init branch, so ``CTX_INIT`` with ``CSC=True`` trains one unified
    context (``csc`` is then False here, and a variant's label still says CSC, as CoOp's output folder does).
    """

    n_ctx: int = 16
    ctx_init: str | None = None
    csc: bool = False
    position: str = "end"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    batch_size: int = 32
    epochs: tuple = PAPER_EPOCHS
    mode: str = "cached"
    n_views: int = 32
    view_sampling: str = "random"
    logit_scale: float | None = None
    crop_scale: tuple = (0.08, 1.0)
    ctx_dtype: str = "auto"
    csc_with_phrase: str = "per_class"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"CoOpConfig.mode={self.mode!r}; use one of {MODES}")
        if self.view_sampling not in ("random", "cycle"):
            raise ValueError(f"CoOpConfig.view_sampling={self.view_sampling!r}; use 'random' or 'cycle'")
        if self.ctx_dtype not in ("auto", *CTX_DTYPES):
            raise ValueError(f"CoOpConfig.ctx_dtype={self.ctx_dtype!r}; use 'auto' or one of {tuple(CTX_DTYPES)}")
        if self.csc_with_phrase not in CSC_WITH_PHRASE:
            raise ValueError(f"CoOpConfig.csc_with_phrase={self.csc_with_phrase!r}; use one of {CSC_WITH_PHRASE}")
        if self.csc and self.ctx_init and self.csc_with_phrase == "unified":
            object.__setattr__(self, "csc", False)             # CoOp ignores CSC under CTX_INIT
        object.__setattr__(self, "epochs", tuple(sorted((int(k), int(e)) for k, e in dict(self.epochs).items())))
        object.__setattr__(self, "crop_scale", tuple(float(x) for x in self.crop_scale))

    def replace(self, **overrides) -> "CoOpConfig":
        """A copy with ``overrides``; an unknown key raises naming it."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise KeyError(f"CoOpConfig has no field(s) {bad}; known: {sorted(known)}")
        return CoOpConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **overrides})

    def epochs_for(self, shots: int) -> int:
        """Epochs for K shots: the entry of the largest table key <= K (the smallest key below it)."""
        table = dict(self.epochs)
        keys = [k for k in sorted(table) if k <= shots] or [min(table)]
        return table[keys[-1]]


def lr_at(epoch: int, total: int, cfg: CoOpConfig) -> float:
    """Dassl's ConstantWarmupScheduler + CosineAnnealingLR(T_max=total), value during ``epoch``."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    k = epoch - cfg.warmup_epochs
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * k / total))


@dataclass
class TrainSet:
    """What a run trains on.

    Attributes:
        labels: (N,) class of each shot.
        view_feats: (N, V, D) unit features of V augmented views (the cached mode).
        data, indices: the images and the item ids of the shots in ``data`` (the exact mode; the ids
            also seed the views, so both modes crop the same way).
        view_seed: seed of the augmentation draws.
    """

    labels: Tensor
    view_feats: Tensor | None = None
    data: Any = None
    indices: Tensor | None = None
    view_seed: int = 0


@dataclass
class CoOpResult:
    """A trained context: the learner, per-epoch mean loss and lr, wall seconds and optimiser steps."""

    learner: PromptLearner
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def context_dtype(bundle: ClipBundle, cfg: CoOpConfig) -> torch.dtype:
    """The context's dtype: ``cfg.ctx_dtype``, or for "auto" CoOp's rule (the model's dtype): float16 when
    the bundle's forward passes effectively run fp16 (``PREC: fp16``), else float32 (``fp32``, ``amp``)."""
    if cfg.ctx_dtype != "auto":
        return CTX_DTYPES[cfg.ctx_dtype]
    fp16 = effective_precision(bundle.device, bundle.precision) == "fp16"
    return torch.float16 if fp16 else torch.float32


def build_learner(bundle: ClipBundle, classnames, cfg: CoOpConfig, seed: int = 0) -> PromptLearner:
    return PromptLearner(bundle, classnames, n_ctx=cfg.n_ctx, ctx_init=cfg.ctx_init or None, csc=cfg.csc,
                         position=cfg.position, seed=seed, ctx_dtype=context_dtype(bundle, cfg))


def step_loss(learner: PromptLearner, feats: Tensor, labels: Tensor, scale: float) -> Tensor:
    """CoOp's loss on a batch of unit image features (B, D): CE(s * f @ normalize(g(t))^T, y).

    The class features come from ``vlmlab.coop.text_batch.text_features`` with one context (the batched
    trainer's path: shared prefix keys/values, readout-only last block; equal to ``learner(normalize=True)``
    to float rounding)."""
    text = text_features(learner, learner.ctx.unsqueeze(0))[0]                        # (C, D)
    logits = scale * feats.to(text.device, text.dtype) @ text.T                       # (B, C)
    return F.cross_entropy(logits, labels.to(logits.device))


def _batch_feats(bundle, train: TrainSet, cfg: CoOpConfig, b: Tensor, epoch: int, g_view: torch.Generator) -> Tensor:
    if cfg.mode == "exact":
        if train.data is None or train.indices is None:
            raise ValueError("CoOp mode 'exact' needs TrainSet.data and TrainSet.indices (the images)")
        return encode_augmented(bundle, train.data, train.indices[b].tolist(), [epoch] * len(b), train.view_seed,
                                cfg.crop_scale)
    if train.view_feats is None:
        raise ValueError("CoOp mode 'cached' needs TrainSet.view_feats (vlmlab.coop.augment.view_features)")
    n_views = train.view_feats.shape[1]
    if cfg.view_sampling == "cycle":
        v = torch.full((len(b),), epoch % n_views, dtype=torch.long)
    else:
        v = torch.randint(n_views, (len(b),), generator=g_view)
    return train.view_feats[b, v]                                                      # (B, D)


def run_plan(train: TrainSet, n_cls: int, cfg: CoOpConfig, seed: int, shots: int | None = None,
             epochs: int | None = None) -> tuple[Tensor, int, int, torch.Generator, torch.Generator]:
    """One run's labels, epochs, steps per epoch and generators (sample order, view draws).

    Shared by ``train_coop`` and the batched trainer, so both draw the same batches: epochs from
    ``cfg.epochs`` for K = ``shots`` (default: items per class) unless ``epochs`` is given; batch
    ``cfg.batch_size`` with drop_last only when the set holds at least one full batch.
    """
    y = torch.as_tensor(train.labels).long().cpu()
    n = len(y)
    if n == 0:
        raise ValueError("CoOp: empty training set")
    shots = shots or max(1, round(n / n_cls))
    total = epochs if epochs is not None else cfg.epochs_for(shots)
    n_steps = n // cfg.batch_size if n >= cfg.batch_size else 1                     # drop_last iff n >= batch
    return y, total, n_steps, torch.Generator().manual_seed(int(seed)), torch.Generator().manual_seed(int(seed) + 1)


def train_coop(bundle: ClipBundle, classnames, train: TrainSet, cfg: CoOpConfig, seed: int = 0,
               shots: int | None = None, epochs: int | None = None, checkpoint: str | Path | None = None,
               checkpoint_every_s: float = 300.0) -> CoOpResult:
    """Train one CoOp context.

    Args:
        bundle: the frozen CLIP. classnames: C names. train: the shots (see ``TrainSet``).
        cfg: hyperparameters and mode. seed: init, sample order and view sampling.
        shots: K, to pick the epochs from ``cfg.epochs`` (default: items per class).
        epochs: explicit epoch count (overrides the table).
        checkpoint: a file for the training state (the context, SGD's momentum, the generators of the sample
            order and the view draws, the epoch, the steps and the history), written after an epoch once
            ``checkpoint_every_s`` seconds have passed since the last write, and after the last epoch. If it
            holds a state of this run (config, seed, classes, epochs, labels), training resumes after its
            epoch, with the same result as a run never stopped: an exact-mode run on ImageNet takes about an
            hour on a GPU (``vlmlab.coop.jobs.run_units`` passes a file in the run cache).
    Returns:
        ``CoOpResult`` with the learner holding the last epoch's context.
    """
    t0 = time.perf_counter()
    y, total, n_steps, g, g_view = run_plan(train, len(classnames), cfg, seed, shots, epochs)
    n, bs = len(y), cfg.batch_size
    learner = build_learner(bundle, classnames, cfg, seed)
    opt = torch.optim.SGD([learner.ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scale = cfg.logit_scale or bundle.logit_scale
    history, steps, start = [], 0, 0
    ckpt = Checkpoint(checkpoint, {"cfg": asdict(cfg), "seed": int(seed), "classnames": list(classnames),
                                   "epochs": int(total), "labels": y.tolist()}, "CoOp checkpoint", checkpoint_every_s)
    if (state := ckpt.load()) is not None:
        with torch.no_grad():
            learner.ctx.copy_(state["ctx"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["order"])
        g_view.set_state(state["views"])
        start, steps, history = state["epoch"], state["steps"], state["history"]
        log.info("CoOp: resumed from %s after epoch %d of %d", checkpoint, start, total)
    for epoch in range(start, total):
        lr = lr_at(epoch, total, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        perm = torch.randperm(n, generator=g)
        losses = []
        for s in range(n_steps):
            b = perm[s * bs:(s + 1) * bs]
            feats = _batch_feats(bundle, train, cfg, b, epoch, g_view)
            with bundle.autocast():
                loss = step_loss(learner, feats, y[b], scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
        history.append({"epoch": epoch, "lr": lr, "loss": sum(losses) / len(losses)})
        ckpt.save(lambda: {"epoch": epoch + 1, "steps": steps, "history": history, "ctx": learner.ctx.detach(),
                           "opt": opt.state_dict(), "order": g.get_state(), "views": g_view.get_state()},
                  last=epoch + 1 == total)
    return CoOpResult(learner, history, time.perf_counter() - t0, steps)


@torch.no_grad()
def coop_logits(learner: PromptLearner, feats: Tensor, scale: float = 1.0, batch_size: int = 4096) -> Tensor:
    """Logits (N, C) of unit image features (N, D) under the learned prompts (CPU float32)."""
    with learner.bundle.autocast():
        text = learner(normalize=True).float()                                        # (C, D)
    out = [scale * feats[i:i + batch_size].to(text.device, text.dtype) @ text.T for i in range(0, len(feats), batch_size)]
    return torch.cat(out).cpu() if out else torch.zeros(0, learner.n_cls)
