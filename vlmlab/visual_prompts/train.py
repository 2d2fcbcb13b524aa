"""Training a visual prompt on a frozen model, and the evaluations of notebook 04.

Bahng et al., arXiv:2203.17274; reference checked: hjbahng/visual_prompting 679e71f
``main_clip.py`` and ``utils.py``. For a prompter v, a frozen image encoder f and a fixed head h:
    logits = h(normalize(f(x + v)))          CLIP head: h(z) = s · z W^T,  W = text features of
                                             template.format(class) (fixed), s = min(exp(logit scale), 100)
    loss   = cross-entropy(logits, y)        only v receives gradients
    SGD(lr 40, momentum 0.9, weight decay 0), batch 256, 1000 epochs,
    lr(step) = lr · (step + 1) / warmup                       for step < warmup (1000 steps, never capped)
             = lr · (1 + cos(pi (step - warmup) / (total - warmup))) / 2   after (per step)
Departures: the text features are computed once (the reference recomputes them every step through
the frozen encoder: the same numbers). Precision is the bundle's (``precision``: the paper profile
uses the reference's fp16 autocast, with a GradScaler as the reference; the embedded profile runs fp32,
and a CPU autocasts bf16 only); the reported VP accuracy is the last epoch's (default), or the
best epoch on a *validation* split with ``select="val"``; ``select="test"`` is the reference's
protocol: the test set is evaluated after every epoch and the best of those accuracies is reported
(``best_acc1 = max(acc1, best_acc1)``; ties keep the earlier epoch), an accuracy selected on the
test labels. Evaluation passes hold ``batch_size`` images, as the reference's
``val_loader``, so a random patch draws one location per ``batch_size`` test images (``eval_batch_size``
fixes another size; 256 until 2026-12-04), and run in fp32 with an fp32 text head, as the reference's
``validate`` on its fp32 model (``eval_precision="bundle"``: the bundle's autocast, vlmlab until 2026-12-04;
``eval_view``). Epochs, batch size and warm-up are parameters: the embedded
profile scales them down (a few epochs over 16 shots per class), the paper profile keeps them.

Vision-only row (the paper's ``main_vision.py``): a classifier with a fixed linear head trained on a
*source* task, whose first C outputs are hard-coded to the C downstream classes (the paper maps
downstream class i to ImageNet logit i); the same prompt is learned through it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vlmlab.checkpoints import Checkpoint
from vlmlab.features import arrays_to_input
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import LinearProbe
from vlmlab.prompts import zero_shot_weights
from vlmlab.runtime import get_logger, progress
from vlmlab.visual_prompts.prompters import Prompter, build_prompter

__all__ = ["VPConfig", "VPResult", "lr_at", "refine_classname", "TextHead", "LinearHead", "clip_head",
           "eval_view", "vision_head", "model_inputs", "frozen", "encode", "predict", "train_prompt"]

log = get_logger("vlmlab.visual_prompts")
PAPER_TEMPLATE = "This is a photo of a {}"
SELECTS = ("last", "val", "test")
EVAL_PRECISIONS = ("fp32", "bundle")


@dataclass(frozen=True)
class VPConfig:
    """Visual-prompt training settings; defaults are the reference's ``main_clip.py`` but ``select`` (the last
    epoch; the reference reports the best test epoch: docs/fidelity.md)."""

    method: str = "padding"
    prompt_size: int = 30        # pad width / patch side, in pixels of the model input
    epochs: int = 1000
    batch_size: int = 256
    lr: float = 40.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup: int = 1000           # linear warm-up steps; the reference never caps them at the total steps
    cap_warmup: bool = False     # True: warm up for min(warmup, total steps) (a departure; see docs/fidelity.md)
    patch_positions: str = "reference"  # random patch corners: "reference" (S - p per axis) or "all" (S - p + 1)
    init: str = "randn"          # "randn" (reference) or "zeros" (identity prompt)
    max_logit_scale: float = 100.0
    select: str = "last"         # "last" epoch, best "val" accuracy, or best "test" accuracy (the reference's)
    seed: int = 0                # prompt init, batch order and random-patch locations
    num_workers: int = 0
    eval_batch_size: int | None = None  # None: batch_size, as the reference's val_loader (vlmlab before: 256)
    eval_precision: str = "fp32"  # evaluation passes in fp32, the reference's; "bundle": the bundle's autocast

    @property
    def eval_batch(self) -> int:
        """Images per evaluation pass: one random-patch location is drawn per pass (``eval_batch_size``)."""
        return int(self.eval_batch_size or self.batch_size)


@dataclass
class VPResult:
    """A trained prompter with its per-epoch history (epoch, lr, loss, train_acc[, val_acc][, test_acc])."""

    prompter: Prompter
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def selected_test_acc(self) -> float | None:
        """The test accuracy recorded after epoch ``best_epoch`` (``select="test"``: the reported one), else None."""
        return next((r["test_acc"] for r in self.history if r.get("epoch") == self.best_epoch and "test_acc" in r),
                    None)


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """The reference's ``cosine_lr``: linear warm-up for ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if total <= warmup:
        return base_lr
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) * base_lr


def _warmup(cfg: "VPConfig", total: int) -> int:
    """Warm-up steps: the reference's ``cosine_lr`` keeps ``warmup`` even past the last step."""
    return min(cfg.warmup, total) if cfg.cap_warmup else cfg.warmup


def refine_classname(name: str) -> str:
    """The reference's class-name cleaning: lower case, '_' and '-' become spaces."""
    return name.lower().replace("_", " ").replace("-", " ")


class TextHead(nn.Module):
    """Fixed zero-shot head: (B, D) unit features -> scale · feats @ weights^T (B, C)."""

    def __init__(self, weights: Tensor, scale: float):
        super().__init__()
        self.register_buffer("weights", weights.detach().float().clone())  # (C, D)
        self.scale = float(scale)

    def forward(self, feats: Tensor) -> Tensor:
        return self.scale * feats @ self.weights.to(feats.dtype).T


class LinearHead(nn.Module):
    """Fixed linear head: (B, D) -> (B, K) = feats @ W^T + b, then its first ``n_classes`` outputs."""

    def __init__(self, weight: Tensor, bias: Tensor, n_classes: int):
        super().__init__()
        if n_classes > weight.shape[0]:
            raise ValueError(f"hard-coded mapping needs n_classes <= {weight.shape[0]} head outputs, got {n_classes}")
        self.register_buffer("weight", weight.detach().float().clone())  # (K, D)
        self.register_buffer("bias", bias.detach().float().clone())      # (K,)
        self.n_classes = n_classes

    def forward(self, feats: Tensor) -> Tensor:
        return (feats @ self.weight.to(feats.dtype).T + self.bias.to(feats.dtype))[:, :self.n_classes]


def clip_head(bundle: ClipBundle, classnames, template: str = PAPER_TEMPLATE, max_logit_scale: float = 100.0) -> TextHead:
    """The fixed text classifier: one template, reference class-name cleaning, clamped logit scale."""
    weights = zero_shot_weights(bundle, [refine_classname(c) for c in classnames], template)  # (C, D)
    return TextHead(weights, min(bundle.logit_scale, max_logit_scale)).to(bundle.device)


def eval_view(bundle: ClipBundle, eval_precision: str = "fp32") -> ClipBundle:
    """The bundle that evaluation passes run on: the same model without autocast for ``"fp32"`` (the reference's
    ``convert_models_to_fp32``, with autocast only around the training forward: ``validate`` runs fp32), or the
    bundle itself for ``"bundle"`` (its autocast, vlmlab until 2026-12-04). A bundle already in fp32 is its own view."""
    if eval_precision not in EVAL_PRECISIONS:
        raise ValueError(f"eval_precision={eval_precision!r}; use one of {EVAL_PRECISIONS}")
    if eval_precision == "bundle" or bundle.precision == "fp32":
        return bundle
    return replace(bundle, precision="fp32")


def vision_head(probe: LinearProbe, n_classes: int, device=None) -> LinearHead:
    """A vision-only head from a probe fitted on a source task; downstream class i <-> output i."""
    clf = probe.clf
    weight = torch.zeros(probe.n_classes, clf.coef_.shape[1])
    bias = torch.full((probe.n_classes,), -1e4)  # classes absent from the probe's training never win
    coef, icpt = torch.as_tensor(clf.coef_, dtype=torch.float32), torch.as_tensor(clf.intercept_, dtype=torch.float32)
    if len(clf.classes_) == 2 and coef.shape[0] == 1:  # sklearn's binary form
        coef, icpt = torch.cat([-coef, coef]), torch.cat([-icpt, icpt])
    weight[clf.classes_], bias[clf.classes_] = coef, icpt
    return LinearHead(weight, bias, n_classes).to(device or "cpu")


class _Preprocessed(Dataset):
    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    @property
    def key(self) -> str | None:
        """The dataset's cache key (the transform is the model's: the run keys hold the model)."""
        return getattr(self.dataset, "key", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        img, y = self.dataset[i]
        return self.transform(img), int(y)


def model_inputs(bundle: ClipBundle, dataset, batch_size: int = 512) -> Dataset:
    """Items ``(normalised (3, S, S) input, label)`` for ``dataset``.

    World sets (``.images`` uint8) are converted once into an in-memory ``TensorDataset``; other
    datasets of PIL images go through ``bundle.preprocess`` item by item (CLIP's resize + centre
    crop + normalise, the reference's train and test transform; no augmentation).
    """
    images = getattr(dataset, "images", None)
    if isinstance(images, np.ndarray):
        chunks = [arrays_to_input(bundle, torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])))
                  for i in range(0, len(images), batch_size)]
        x = torch.cat(chunks) if chunks else torch.zeros(0, 3, bundle.image_size, bundle.image_size)
        return TensorDataset(x, torch.as_tensor(dataset.labels).long())
    return _Preprocessed(dataset, bundle.preprocess)


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients inside the block; both restored afterwards."""
    flags, was_training = [p.requires_grad for p in model.parameters()], model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def _loader(data: Dataset, batch_size: int, num_workers: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=num_workers)


@torch.inference_mode()
def encode(bundle: ClipBundle, data: Dataset, prompter: Prompter | None = None, batch_size: int = 256,
           num_workers: int = 0, desc: str = "", normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Unit image features (N, D) of ``data`` (from ``model_inputs``), prompted or not, and labels (N,);
    ``normalize=False``: the image encoder's output itself."""
    feats, labels = [], []
    dev = bundle.device
    with frozen(bundle.model), bundle.autocast():
        loader = _loader(data, batch_size, num_workers)
        for x, y in progress(loader, desc=desc or "encode", total=len(loader), leave=False):
            x = x.to(dev)
            feats.append(bundle.encode_images(prompter(x) if prompter is not None else x, normalize).float().cpu())
            labels.append(y)
    return torch.cat(feats).clone(), torch.cat(labels).clone()


def predict(bundle: ClipBundle, head: nn.Module, data: Dataset, prompter: Prompter | None = None,
            batch_size: int = 256, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """Logits (N, C) of ``head`` on (prompted) ``data`` and the labels (N,)."""
    feats, labels = encode(bundle, data, prompter, batch_size, num_workers, desc="evaluate")
    with torch.inference_mode():
        logits = head.to(bundle.device)(feats.to(bundle.device)).float().cpu()
    return logits.clone(), labels


def _epoch(bundle, head, prompter, loader, opt, cfg, step0, total, scaler) -> tuple[int, float, float]:
    dev, losses, hits, seen, step = bundle.device, 0.0, 0, 0, step0
    for x, y in loader:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, _warmup(cfg, total), total)
        x, y = x.to(dev), y.to(dev)
        with bundle.autocast():
            logits = head(bundle.encode_images(prompter(x))).float()  # (B, C)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses += float(loss.detach()) * len(y)
        hits += int((logits.argmax(1) == y).sum())
        seen += len(y)
        step += 1
    return step, losses / max(seen, 1), 100.0 * hits / max(seen, 1)


def new_prompter(bundle: ClipBundle, cfg: VPConfig) -> Prompter:
    """The untrained prompter of ``cfg`` (its init drawn from ``cfg.seed``), on the bundle's device."""
    gen = torch.Generator().manual_seed(cfg.seed)
    extra = {"positions": cfg.patch_positions} if cfg.method == "random_patch" else {}
    prompter = build_prompter(cfg.method, cfg.prompt_size, bundle.image_size, init=cfg.init, generator=gen, **extra)
    return prompter.to(bundle.device)


def train_prompt(bundle: ClipBundle, head: nn.Module, train: Dataset, cfg: VPConfig = VPConfig(),
                 val: Dataset | None = None, desc: str = "visual prompt",
                 eval_head: nn.Module | None = None, test: Dataset | None = None,
                 checkpoint: str | Path | None = None, checkpoint_every_s: float = 300.0) -> VPResult:
    """Learn one prompt for ``train`` through the frozen model and the fixed ``head``.

    Args:
        bundle: the model (left unchanged: eval mode, no parameter gradients during training).
        head: fixed classifier on unit features, ``TextHead`` (CLIP) or ``LinearHead`` (vision-only).
        train: items ``(normalised input (3, S, S), label)`` (``model_inputs``).
        cfg: ``VPConfig``.
        val: validation items; required for ``cfg.select == "val"``, else used for the history only.
        eval_head: the head of the validation passes (default ``head``): with ``cfg.eval_precision="fp32"`` and a
            bundle that autocasts, the text head computed in fp32 (``clip_head(eval_view(bundle), ...)``).
        test: test items; required for ``cfg.select == "test"`` (evaluated after every epoch, as the
            reference's ``validate``), else unused.
        checkpoint: a file for the training state (the prompt, SGD's momentum, the GradScaler, the epoch,
            the history, the best epoch so far and the generators of the sample order and of the random
            patch's locations), written after an epoch once ``checkpoint_every_s`` seconds have passed since
            the last write (and after the last epoch). If it holds a state of the same ``cfg``, training
            resumes after its epoch, with the same result as a run never stopped
            (``tests/visual_prompts/test_train.py``); the paper profile's 1,000 epochs take hours per run.

    Returns:
        ``VPResult`` with the prompter (last, best-validation or best-test epoch) on the bundle's device;
        with ``select="test"`` the history's ``test_acc`` at ``best_epoch`` is the reported accuracy
        (``selected_test_acc``).
    """
    if cfg.select not in SELECTS:
        raise ValueError(f"VPConfig.select={cfg.select!r}; use one of {SELECTS}")
    ev, eval_head = eval_view(bundle, cfg.eval_precision), (eval_head if eval_head is not None else head).to(bundle.device)
    if cfg.select == "val" and val is None:
        raise ValueError("VPConfig.select='val' needs a validation split: pass val=model_inputs(bundle, val_set)")
    if cfg.select == "test":
        if test is None:
            raise ValueError("VPConfig.select='test' needs the test split: pass test=model_inputs(bundle, test_set)")
        log.warning("%s: select='test' keeps the epoch of best *test* accuracy, as the reference does; the "
                    "reported accuracy is selected on the test labels", desc)
    prompter = new_prompter(bundle, cfg)
    opt = torch.optim.SGD(prompter.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = _loader(train, cfg.batch_size, cfg.num_workers, shuffle=True, seed=cfg.seed)
    total = len(loader) * cfg.epochs
    if cfg.warmup > total and not cfg.cap_warmup:
        log.warning("warm-up (%d steps) is longer than training (%d steps): the learning rate never reaches %g, "
                    "as in the reference (cap_warmup=True caps it)", cfg.warmup, total, cfg.lr)
    result, best, step, start = VPResult(prompter), (-1.0, None), 0, 0
    head = head.to(bundle.device)
    # the reference's GradScaler, for fp16 on CUDA; a pass-through otherwise
    scaler = torch.amp.GradScaler("cuda", enabled=bundle.device.type == "cuda" and bundle.precision == "fp16")
    gen = getattr(prompter, "generator", None)
    ckpt = Checkpoint(checkpoint, {"cfg": asdict(cfg)}, "visual-prompt checkpoint", checkpoint_every_s)
    if (state := ckpt.load()) is not None:
        prompter.load_state_dict(state["prompter"])
        opt.load_state_dict(state["opt"])
        scaler.load_state_dict(state["scaler"])
        loader.generator.set_state(state["order"])
        if gen is not None:
            gen.set_state(state["locations"])
        start, step, result.history = state["epoch"], state["step"], state["history"]
        best, result.best_epoch = (state["best_score"], state["best_state"]), state["best_epoch"]
        log.info("%s: resumed from %s after epoch %d of %d", desc, checkpoint, start, cfg.epochs)
    with frozen(bundle.model):
        for epoch in progress(range(start, cfg.epochs), desc=desc, total=cfg.epochs, initial=start):
            step, loss, train_acc = _epoch(bundle, head, prompter, loader, opt, cfg, step, total, scaler)
            row = {"epoch": epoch + 1, "step": step, "lr": lr_at(step - 1, cfg.lr, _warmup(cfg, total), total),
                   "loss": loss, "train_acc": train_acc}
            if val is not None and (cfg.select == "val" or epoch + 1 == cfg.epochs):
                row["val_acc"] = accuracy(*predict(ev, eval_head, val, prompter, cfg.eval_batch))
            if cfg.select == "test":
                row["test_acc"] = accuracy(*predict(ev, eval_head, test, prompter, cfg.eval_batch))
            score = row.get(f"{cfg.select}_acc", -1.0)
            if cfg.select in ("val", "test") and score > best[0]:         # strictly better: ties keep the earlier
                best = (score, {k: v.detach().clone() for k, v in prompter.state_dict().items()})
                result.best_epoch = epoch + 1
            result.history.append(row)
            ckpt.save(lambda: {
                "epoch": epoch + 1, "step": step, "history": result.history, "prompter": prompter.state_dict(),
                "opt": opt.state_dict(), "scaler": scaler.state_dict(), "order": loader.generator.get_state(),
                "best_score": best[0], "best_state": best[1], "best_epoch": result.best_epoch,
                **({"locations": gen.get_state()} if gen is not None else {})}, last=epoch + 1 == cfg.epochs)
    if cfg.select in ("val", "test"):
        prompter.load_state_dict(best[1])
    else:
        result.best_epoch = cfg.epochs
    return result
