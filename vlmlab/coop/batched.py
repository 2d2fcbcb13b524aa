"""Batched CoOp: R cached-mode runs of one dataset trained at once, one text-tower pass per step.

The runs share the classes and the prompt design (context length M, position, UC/CSC, init kind), so
their prompts stack into one batch of R x C sequences. Each run r keeps everything ``train_coop`` gives
it: its own context ctx_r, SGD state (momentum buffer, weight decay), sample order and view draws
(its own seeded generators, drawn in the same order), batch size and learning-rate schedule (CoOp's
warm-up + cosine per epoch, ``lr_at``). The step minimises

    L = sum_r CE_r(s_r * f_r @ normalize(g(t_r(ctx_r)))^T, y_r)      CE_r: run r's own batch mean

and since the contexts are disjoint, dL/dctx_r = dCE_r/dctx_r: each run's gradient is its sequential
gradient. A run with fewer steps (fewer shots or epochs) leaves the stack when it is done. So the
contexts and accuracies equal R calls of ``train_coop`` up to float rounding (the batched matmuls
sum in another order; ``tests/test_coop_batched.py`` checks rtol 1e-4). With a unified context the
shared prefix (SOS + context before the class name) is encoded once per run and its keys and values
are shared by the run's C class rows (``vlmlab.coop.text_batch``).

Only the cached mode: the exact mode encodes fresh crops every step, which dominates its cost and is
kept one run at a time. Wall seconds of the group are shared between its runs in proportion to
their steps (``CoOpResult.seconds``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.coop.train import CoOpConfig, CoOpResult, TrainSet, _batch_feats, build_learner, lr_at, run_plan
from vlmlab.models.bundle import ClipBundle
from vlmlab.coop.text_batch import text_features
from vlmlab.prompts import PromptLearner
from vlmlab.runtime import get_logger

log = get_logger("vlmlab.coop")

GROUP_FIELDS = ("n_ctx", "position", "csc", "ctx_init")


def group_key(cfg: CoOpConfig) -> tuple:
    """Runs with equal keys (and the same classes) can be trained together: M, position, csc, init phrase."""
    return (cfg.n_ctx, cfg.position, bool(cfg.csc), cfg.ctx_init or None)


@dataclass
class _Run:
    """One run's private state: data, schedule, generators, per-epoch loss history."""

    train: TrainSet
    cfg: CoOpConfig
    y: Tensor
    epochs: int
    n_steps: int
    g: torch.Generator
    g_view: torch.Generator
    step: int = 0
    lr: float = 0.0
    perm: Tensor | None = None
    losses: list = field(default_factory=list)
    history: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.epochs * self.n_steps

    def next_batch(self, bundle: ClipBundle) -> tuple[Tensor, Tensor]:
        """(B, D) features and (B,) labels of this run's next step (``train_coop``'s draws, same order)."""
        epoch, s = divmod(self.step, self.n_steps)
        if s == 0:
            self.lr = lr_at(epoch, self.epochs, self.cfg)
            self.perm = torch.randperm(len(self.y), generator=self.g)
        bs = self.cfg.batch_size
        b = self.perm[s * bs:(s + 1) * bs]
        return _batch_feats(bundle, self.train, self.cfg, b, epoch, self.g_view), self.y[b]

    def record(self, loss: float) -> None:
        self.losses.append(loss)
        self.step += 1
        if self.step % self.n_steps == 0:
            epoch = self.step // self.n_steps - 1
            self.history.append({"epoch": epoch, "lr": self.lr, "loss": sum(self.losses) / len(self.losses)})
            self.losses = []


def _new_run(train: TrainSet, cfg: CoOpConfig, seed: int, shots: int | None, epochs: int | None, n_cls: int) -> _Run:
    if cfg.mode != "cached":
        raise ValueError(f"train_coop_batched needs CoOpConfig.mode='cached' (got {cfg.mode!r}); "
                         f"train exact-mode runs one at a time with train_coop")
    if train.view_feats is None:
        raise ValueError("CoOp mode 'cached' needs TrainSet.view_feats (vlmlab.coop.augment.view_features)")
    return _Run(train, cfg, *run_plan(train, n_cls, cfg, seed, shots, epochs))


def _check_group(learners: Sequence[PromptLearner], cfgs: Sequence[CoOpConfig]) -> None:
    keys = {group_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ValueError(f"train_coop_batched: runs differ in {GROUP_FIELDS} ({sorted(map(str, keys))}); "
                         f"group them with vlmlab.coop.batched.group_key and train each group separately")
    t0 = learners[0].tokens
    if any(l.tokens.shape != t0.shape or not torch.equal(l.tokens, t0) for l in learners[1:]):
        raise ValueError("train_coop_batched: the runs' prompts have different tokens; they must share the classes")


@torch.no_grad()
def _sgd(ctx: Tensor, grad: Tensor, buf: Tensor, a: Tensor, lr: Tensor, mom: Tensor, wd: Tensor) -> None:
    """torch.optim.SGD (dampening 0, no Nesterov) on rows ``a`` of ctx, per-row lr, momentum, weight decay
    (float32 tensors). Each of SGD's updates is computed in float32 and rounded to ctx's dtype, as its
    kernels round an fp16 parameter (float16 context, ``CoOpConfig.ctx_dtype``); a no-op cast in float32."""
    shape, dt, f = (-1,) + (1,) * (ctx.dim() - 1), ctx.dtype, torch.float32
    d = (grad.to(f) + wd.view(shape) * ctx[a].to(f)).to(dt)                            # d_p = g + wd * p
    b = (mom.view(shape) * buf[a].to(f)).to(dt)                                         # buf.mul_(m)
    buf[a] = (b.to(f) + d.to(f)).to(dt)                                                 # .add_(d_p)
    ctx[a] = (ctx[a].to(f) - lr.view(shape) * buf[a].to(f)).to(dt)                    # p.add_(buf, alpha=-lr)


def train_coop_batched(bundle: ClipBundle, classnames, trains: Sequence[TrainSet], cfgs: CoOpConfig | Sequence[CoOpConfig],
                       seeds: Sequence[int], shots: Sequence[int | None] | None = None,
                       epochs: Sequence[int | None] | None = None) -> list[CoOpResult]:
    """Train R cached-mode CoOp runs at once; the same results as ``train_coop`` per run (module docstring).

    Args:
        bundle: the frozen CLIP. classnames: C names shared by all runs.
        trains: R training sets (each with its own ``view_feats`` (N_r, V, D)).
        cfgs: one config for all or R configs, equal in n_ctx, position, csc and ctx_init, mode "cached".
        seeds: R seeds (init, sample order, view sampling). shots, epochs: per run, as in ``train_coop``.
    Returns:
        R ``CoOpResult``s, in the order of ``trains``.
    """
    t0 = time.perf_counter()
    n_runs = len(trains)
    cfgs = [cfgs] * n_runs if isinstance(cfgs, CoOpConfig) else list(cfgs)
    shots, epochs = list(shots or [None] * n_runs), list(epochs or [None] * n_runs)
    if not (len(cfgs) == len(seeds) == len(shots) == len(epochs) == n_runs):
        raise ValueError(f"train_coop_batched: {n_runs} trains but {len(cfgs)} cfgs, {len(seeds)} seeds, "
                         f"{len(shots)} shots, {len(epochs)} epochs; give one per run")
    if n_runs == 0:
        return []
    learners = [build_learner(bundle, classnames, c, s) for c, s in zip(cfgs, seeds)]
    _check_group(learners, cfgs)
    runs = [_new_run(t, c, s, k, e, len(classnames)) for t, c, s, k, e in zip(trains, cfgs, seeds, shots, epochs)]
    ctx = torch.stack([l.ctx.detach() for l in learners]).clone()                       # (R, M, W) | (R, C, M, W)
    buf = torch.zeros_like(ctx)
    dev = ctx.device
    mom = torch.tensor([c.momentum for c in cfgs], dtype=torch.float32, device=dev)
    wd = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float32, device=dev)
    scales = [c.logit_scale or bundle.logit_scale for c in cfgs]
    while active := [i for i, r in enumerate(runs) if r.step < r.total]:
        batches = [runs[i].next_batch(bundle) for i in active]
        a = torch.tensor(active, device=dev)
        leaf = ctx[a].detach().requires_grad_(True)                                     # (A, ...)
        with bundle.autocast():
            text = text_features(learners[0], leaf)                                     # (A, C, D)
            losses = torch.stack([F.cross_entropy(scales[i] * f.to(text.device, text.dtype) @ text[j].T,
                                                  yb.to(text.device))
                                  for j, (i, (f, yb)) in enumerate(zip(active, batches))])
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
        lr = torch.tensor([runs[i].lr for i in active], dtype=torch.float32, device=dev)
        _sgd(ctx, grad, buf, a, lr, mom[a], wd[a])
        for i, v in zip(active, losses.tolist()):
            runs[i].record(v)
    wall, all_steps = time.perf_counter() - t0, sum(r.total for r in runs)
    out = []
    for learner, r, c in zip(learners, runs, ctx):
        with torch.no_grad():
            learner.ctx.copy_(c)
        out.append(CoOpResult(learner, r.history, wall * r.total / max(1, all_steps), r.total))
    log.debug("batched CoOp: %d runs, %d steps in all, %.1f s", n_runs, all_steps, wall)
    return out
