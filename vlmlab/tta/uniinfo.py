"""UniInfo (UnInfo in the paper): uniformity-aware, information-balanced TTA of CLIP's image encoder.

Adachi, Yamaguchi, Hamagami, "Uniformity First: Uniformity-aware Test-time Adaptation of
Vision-language Models against Image Corruption", arXiv:2505.12912 (TMLR 2026). Reference code
checked: kzkadc/uninfo a589a20 (``tta/uninfo.py``, ``util/loss.py``, ``lora_utils.py``, ``main.py``,
``imagenet-c.yaml``); ../shared/papers/uniinfo_tta.md §2.

Per batch of B = 64 images (one AdamW step, one online pass, no reset inside a stream):
    z = normalize(f_img(x)) with LoRA on the image tower;  s = z T^T / tau_s;  p = softmax(s)
    L_ent  = mean_i H(p_i)
    L_unif = log( (1/B^2) sum_{i,j} exp(-||z_i - z_j||^2 / (2 var)) )      (var 1: t = 0.5, diagonal kept)
    I      = H(mean_i p_i) - mean_i H(p_i);   w = exp(I - I0), detached
    L      = w L_ent + lam L_unif / w + lam_pl CE(s, softmax(z_ema T^T / tau_t))
then the EMA teacher's LoRA tensors move: theta_ema <- (1 - m) theta_ema + m theta.
Defaults (``imagenet-c.yaml``): LoRA r 16, alpha 2 on q, k, v, out of every attention block
(``vlmlab.models.lora``); AdamW lr 1e-3, wd 0.01; tau_s = tau_t = 0.01; lam = lam_pl = 1;
I0 = 3.0 nats; m = 1e-3. LoRA's input gradient as loralib computes it, through the stale W0
(``lora_backward="reference"``; ``"exact"`` differentiates the adapted weight; docs/fidelity.md).

I0 and the class count: the official code uses I0 as given whatever C (``info_weight_th``, a fixed
3.0 in ``imagenet-c.yaml``), and so does the default (``info_threshold_classes=None``). I is at most
ln min(B, C), so 3.0 (set for C = 1000, ln 1000 = 6.91) sits at the very top of the range for 20
classes (ln 20 = 3.00). ``info_threshold_classes=N`` is vlmlab's optional rule, in neither the paper
nor its code: the threshold used is I0 * ln C / ln N (N = 1000: 3.0 for ImageNet, 1.30 for the
world's 20 classes; docs/fidelity.md).

Readout (the reference records both; which one the paper's tables report is not stated, §10):
"online" = the student's logits on each batch before its update; "ema_offline" = a second pass
with the EMA teacher after the stream (the repository figure: "Prediction with EMA LoRA ->
Inference"; the default); "student_offline" = a second pass with the final student.
Train mode (``train_mode``): the official step calls ``net.train()`` before the student's forward,
and the teacher's forward runs in ``eval()`` (``tta/uninfo.py``); its EMA handler copies only
``lora_`` buffers, so the teacher keeps the pretrained BatchNorm statistics. For the paper's ViT
(no BatchNorm; loralib's dropout 0) the mode changes nothing. For the embedded ResNet, ``True`` makes
the student normalise each batch by its own statistics and update its running ones, which adds
test-time BN to the method; ``False`` (default) keeps the tower in eval mode (docs/fidelity.md).
The frozen part of the tower before the first adapted module is run once per batch and shared by
student and teacher (``vlmlab.models.lora.frozen_prefix``; not with ``train_mode``, where the
student's frozen BatchNorm layers see batch statistics too).
Precision: the student, teacher and readout passes run in fp32 whatever the bundle's ``precision``
(the official code runs open_clip in fp32); the text features are the bundle's, cast to fp32.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmlab.metrics import mutual_information, softmax_entropy_from_logits, uniformity_loss
from vlmlab.models.lora import apply_lora, frozen_prefix, lora_parameters
from vlmlab.runcache import rows_to_tensor, tensor_to_rows
from vlmlab.tta.base import Batch, Context, TTAConfig, TTAMethod

READOUTS = ("online", "ema_offline", "student_offline")


@dataclass(frozen=True)
class UniInfoConfig(TTAConfig):
    rank: int = 16
    lora_alpha: float = 2.0
    lora_extra: str = "none"                  # "bn": also BatchNorm affine (ResNet towers only)
    lora_backward: str = "reference"          # LoRA input gradient: "reference" (loralib's stale W0) | "exact"
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    tau_s: float = 0.01
    tau_t: float = 0.01
    lam_unif: float = 1.0
    info_threshold: float = 3.0               # I0, nats
    info_threshold_classes: int | None = None  # None: I0 as given (official); N: I0 ln C / ln N (vlmlab)
    unif_var: float = 1.0                     # t = 1 / (2 var) = 0.5
    ema_momentum: float = 1e-3
    ema_reg_lam: float = 1.0
    readout: str = "ema_offline"
    eval_batch_size: int = 128
    prefix_cache_mb: float = 1024.0           # keep frozen-prefix outputs for the second pass up to this size
    train_mode: bool = False                  # True: the student's forward in train(), as the official net.train()


def scaled_threshold(i0: float, n_classes: int, stated_for: int | None) -> float:
    """I0 * ln C / ln(stated_for), or I0 when ``stated_for`` is None."""
    return i0 if stated_for is None else i0 * math.log(n_classes) / math.log(stated_for)


def mi_weight(probs: Tensor, threshold: float) -> Tensor:
    """w = exp(I - I0) with I = H(mean p) - mean H(p) of the batch (B, C); detached (0-dim)."""
    return torch.exp(mutual_information(probs) - threshold).detach()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- (1 - m) theta_t + m theta_s for the student's trainable tensors (LoRA), by name."""
    target = dict(teacher.named_parameters())
    for name, p in lora_parameters(student).items():
        target[name].mul_(1.0 - momentum).add_(p.detach(), alpha=momentum)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """mean_i -sum_c q_ic log softmax(logits)_ic (``F.cross_entropy`` with probabilities)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


HISTORY = ("entropy", "uniformity", "mi", "w", "distill", "loss", "batch")   # a history row's columns, in order


class UniInfo(TTAMethod):
    """LoRA student trained online on the stream, EMA teacher for distillation and readout."""

    config_cls = UniInfoConfig
    regime = "online"
    inputs = ("images",)

    def __init__(self, config: UniInfoConfig | None = None):
        super().__init__(config)
        if self.config.readout not in READOUTS:
            raise ValueError(f"uniinfo readout={self.config.readout!r}; use one of {READOUTS}")

    @property
    def second_pass(self) -> bool:
        return self.config.readout != "online"

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        cfg = self.config
        self.threshold = scaled_threshold(cfg.info_threshold, ctx.n_classes, cfg.info_threshold_classes)

    def reset(self) -> None:
        """A fresh LoRA student and teacher from the pretrained tower (one per corruption stream)."""
        cfg, bundle = self.config, self.ctx.bundle
        self.student = copy.deepcopy(bundle.model.visual).eval()
        params = apply_lora(self.student, cfg.rank, cfg.lora_alpha, cfg.lora_extra, cfg.lora_backward)
        self.teacher = copy.deepcopy(self.student).eval()   # same trainable flags: same prefix split; never stepped
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.train_mode:     # the student's frozen layers see batch statistics: nothing is shared
            self.prefix, self.head_s, self.head_t = (lambda x: x), self.student, self.teacher
        else:
            self.prefix, self.head_s = frozen_prefix(self.student)
            _, self.head_t = frozen_prefix(self.teacher)
        self.text = self.ctx.text.to(bundle.device).float()                          # (C, D)
        self.history: list[dict] = []
        self._prefix_cache: dict[int, Tensor] = {}
        self._cache_bytes = 0
        self._embeddings: dict[int, Tensor] = {}

    def _prefix(self, batch: Batch) -> Tensor:
        idx = batch.index.tolist()
        if all(i in self._prefix_cache for i in idx):
            return torch.stack([self._prefix_cache[i] for i in idx])
        with torch.no_grad():
            h = self.prefix(batch.images)
        if self._cache_bytes + h.numel() * h.element_size() <= self.config.prefix_cache_mb * 2**20:
            for i, row in zip(idx, h):
                self._prefix_cache[i] = row
            self._cache_bytes += h.numel() * h.element_size()
        return h

    def losses(self, z: Tensor, z_teacher: Tensor | None) -> dict[str, Tensor]:
        """The loss and its terms for student embeddings z (B, D) and teacher embeddings (B, D) or None."""
        cfg = self.config
        s = z @ self.text.T / cfg.tau_s                                               # (B, C)
        p = s.softmax(1)
        ent = softmax_entropy_from_logits(s).mean()
        unif = uniformity_loss(z, t=1.0 / (2.0 * cfg.unif_var), log=True, include_self=True)
        w = mi_weight(p, self.threshold)
        loss = w * ent + cfg.lam_unif * unif / w
        out = {"logits": s, "entropy": ent, "uniformity": unif, "mi": mutual_information(p.detach()), "w": w}
        if z_teacher is not None and cfg.ema_reg_lam > 0:
            pl = soft_cross_entropy(s, (z_teacher @ self.text.T / cfg.tau_t).softmax(1))
            loss = loss + cfg.ema_reg_lam * pl
            out["distill"] = pl
        out["loss"] = loss
        return out

    def predict(self, batch: Batch) -> Tensor:
        """One adaptation step; returns the student's logits from before the step (online readout)."""
        h = self._prefix(batch)
        self.opt.zero_grad(set_to_none=True)
        self.student.train(self.config.train_mode)
        z = F.normalize(self.head_s(h).float(), dim=-1)                              # (B, D)
        self.student.eval()                                                           # teacher and readouts: eval
        with torch.no_grad():
            z_t = F.normalize(self.head_t(h).float(), dim=-1)
        terms = self.losses(z, z_t)
        terms["loss"].backward()
        self.opt.step()
        ema_update(self.teacher, self.student, self.config.ema_momentum)
        self.history.append({k: float(v.detach()) for k, v in terms.items() if k != "logits"} | {"batch": len(self.history)})
        if self.config.readout == "online":
            self._store(batch.index, z.detach())
        return terms["logits"].detach()

    def predict_offline(self, batch: Batch) -> Tensor:
        head = self.head_t if self.config.readout == "ema_offline" else self.head_s
        with torch.no_grad():
            z = F.normalize(head(self._prefix(batch)).float(), dim=-1)
        self._store(batch.index, z)
        return z @ self.text.T / self.config.tau_s

    def _store(self, index: Tensor, z: Tensor) -> None:
        for i, row in zip(index.tolist(), z.cpu()):
            self._embeddings[i] = row

    def stream_state(self) -> dict[str, Tensor]:
        """The readout's embeddings and the per-batch loss terms (``history``) of the last stream."""
        table = rows_to_tensor(self.history, HISTORY)
        if table is None:
            raise ValueError(f"UniInfo.history has columns outside {HISTORY}; add them to uniinfo.HISTORY")
        return {"embeddings": self.embeddings, "history": table}

    def load_stream_state(self, state: dict[str, Tensor]) -> None:
        self._embeddings = dict(enumerate(state["embeddings"]))
        self.history = tensor_to_rows(state["history"], HISTORY, ints=("batch",))

    @property
    def embeddings(self) -> Tensor:
        """(N, D) embeddings of the readout model from the last stream, in dataset order."""
        return torch.stack([self._embeddings[i] for i in sorted(self._embeddings)])
