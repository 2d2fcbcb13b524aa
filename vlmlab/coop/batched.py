"""Batched CoOp: R cached-mode runs trained at once, one text-tower pass per step.

The runs share the prompt design (context length M, position, UC/CSC, init kind), so their prompts
stack into one batch: R x C sequences when they share the classes; runs of several datasets stack as
pieces, one per class list, their class rows side by side (``vlmlab.coop.text_batch``). Each run r
keeps everything ``train_coop`` gives it: its own classes and context ctx_r, SGD state (momentum
buffer, weight decay), sample order and view draws (its own seeded generators, drawn in the same
order), batch size and learning-rate schedule (CoOp's warm-up + cosine per epoch, ``lr_at``). The
step minimises

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
from vlmlab.coop.text_batch import stacked_text_features
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


class _Piece:
    """The runs of one class list in a group: their contexts (R_d, M, W) | (R_d, C_d, M, W) stacked, SGD state."""

    def __init__(self, runs: list[int], learners: list[PromptLearner], cfgs: list[CoOpConfig]):
        self.runs, self.learner = runs, learners[0]                                     # one class list: one prompt set
        self.ctx = torch.stack([l.ctx.detach() for l in learners]).clone()
        self.buf = torch.zeros_like(self.ctx)
        dev = self.ctx.device
        self.mom = torch.tensor([c.momentum for c in cfgs], dtype=torch.float32, device=dev)
        self.wd = torch.tensor([c.weight_decay for c in cfgs], dtype=torch.float32, device=dev)


def _new_run(train: TrainSet, cfg: CoOpConfig, seed: int, shots: int | None, epochs: int | None, n_cls: int) -> _Run:
    if cfg.mode != "cached":
        raise ValueError(f"train_coop_batched needs CoOpConfig.mode='cached' (got {cfg.mode!r}); "
                         f"train exact-mode runs one at a time with train_coop")
    if train.view_feats is None:
        raise ValueError("CoOp mode 'cached' needs TrainSet.view_feats (vlmlab.coop.augment.view_features)")
    return _Run(train, cfg, *run_plan(train, n_cls, cfg, seed, shots, epochs))


def _check_group(learners: Sequence[PromptLearner], cfgs: Sequence[CoOpConfig]) -> None:
    """One prompt design, and within a class list one prompt set."""
    keys = {group_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ValueError(f"train_coop_batched: runs differ in {GROUP_FIELDS} ({sorted(map(str, keys))}); "
                         f"group them with vlmlab.coop.batched.group_key and train each group separately")
    first: dict[tuple, Tensor] = {}
    for l in learners:
        t0 = first.setdefault(tuple(l.classnames), l.tokens)
        if l.tokens.shape != t0.shape or not torch.equal(l.tokens, t0):
            raise ValueError("train_coop_batched: runs with the same classes have different prompt tokens")


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


def _class_lists(classnames, n_runs: int) -> list[list[str]]:
    """One class list per run: ``classnames`` is one list of names shared by all runs, or one per run."""
    if isinstance(classnames, str) or not len(classnames):
        raise ValueError("train_coop_batched: classnames must be a list of class names, or one list per run")
    if isinstance(classnames[0], str):
        return [list(classnames)] * n_runs
    if len(classnames) != n_runs:
        raise ValueError(f"train_coop_batched: {n_runs} trains but {len(classnames)} class lists; give one per run")
    return [list(c) for c in classnames]


def train_coop_batched(bundle: ClipBundle, classnames, trains: Sequence[TrainSet], cfgs: CoOpConfig | Sequence[CoOpConfig],
                       seeds: Sequence[int], shots: Sequence[int | None] | None = None,
                       epochs: Sequence[int | None] | None = None) -> list[CoOpResult]:
    """Train R cached-mode CoOp runs at once; the same results as ``train_coop`` per run (module docstring).

    Args:
        bundle: the frozen CLIP.
        classnames: C names shared by all runs, or one list per run: runs of several datasets (class
            lists) then share each step's text pass, one piece per class list
            (``vlmlab.coop.text_batch.stacked_text_features``), each run keeping its own classes.
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
    names = _class_lists(classnames, n_runs)
    learners = [build_learner(bundle, n, c, s) for n, c, s in zip(names, cfgs, seeds)]
    _check_group(learners, cfgs)
    runs = [_new_run(t, c, s, k, e, len(n)) for t, c, s, k, e, n in zip(trains, cfgs, seeds, shots, epochs, names)]
    members: dict[tuple, list[int]] = {}                                                # class list -> its runs
    for i, n in enumerate(names):
        members.setdefault(tuple(n), []).append(i)
    pieces = [_Piece(ix, [learners[i] for i in ix], [cfgs[i] for i in ix]) for ix in members.values()]
    scales = [c.logit_scale or bundle.logit_scale for c in cfgs]
    while any(r.step < r.total for r in runs):
        live = []                                                                       # (piece, its rows, runs)
        for d in pieces:
            if a := [j for j, i in enumerate(d.runs) if runs[i].step < runs[i].total]:
                live.append((d, torch.tensor(a, device=d.ctx.device), [d.runs[j] for j in a]))
        order = [i for _, _, ix in live for i in ix]
        batches = {i: runs[i].next_batch(bundle) for i in order}
        leaves = [d.ctx[a].detach().requires_grad_(True) for d, a, _ in live]          # (A_d, ...)
        with bundle.autocast():
            texts = stacked_text_features([d.learner for d, _, _ in live], leaves)      # (A_d, C_d, D)
            losses = torch.stack([F.cross_entropy(scales[i] * batches[i][0].to(text.device, text.dtype) @ text[j].T,
                                                  batches[i][1].to(text.device))
                                  for (_, _, ix), text in zip(live, texts) for j, i in enumerate(ix)])
        grads = torch.autograd.grad(losses.sum(), leaves)
        for (d, a, ix), grad in zip(live, grads):
            lr = torch.tensor([runs[i].lr for i in ix], dtype=torch.float32, device=d.ctx.device)
            _sgd(d.ctx, grad, d.buf, a, lr, d.mom[a], d.wd[a])
        for i, v in zip(order, losses.tolist()):
            runs[i].record(v)
    wall, all_steps = time.perf_counter() - t0, sum(r.total for r in runs)
    for d in pieces:
        for i, c in zip(d.runs, d.ctx):
            with torch.no_grad():
                learners[i].ctx.copy_(c)
    out = [CoOpResult(learner, r.history, wall * r.total / max(1, all_steps), r.total)
           for learner, r in zip(learners, runs)]
    log.debug("batched CoOp: %d runs in %d pieces, %d steps in all, %.1f s", n_runs, len(pieces), all_steps, wall)
    return out
