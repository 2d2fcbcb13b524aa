"""Independent CoOp runs and linear probes, in this process or in ``workers`` CPU processes.

A :class:`Job` carries everything one run needs (shots, cached views or images, test features,
config), so a worker only has to load the model once (``load_clip(bundle.name, bundle.pretrained)``,
checked against the parent's weights id). Processes start with ``spawn`` (safe with OpenMP and in
Jupyter). Results come back in job order and do not depend on the number of workers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from vlmlab.coop.train import CoOpConfig, TrainSet, coop_logits, train_coop
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import fit_linear_probe
from vlmlab.runtime import get_logger, process_map

log = get_logger("vlmlab.coop")
_WORKER_BUNDLE: ClipBundle | None = None


@dataclass
class Job:
    """One CoOp run: train on ``train``, test on (``test_feats``, ``test_labels``)."""

    dataset: str
    variant: Any
    shots: int
    seed: int
    classnames: list[str]
    train: TrainSet
    test_feats: Tensor
    test_labels: Tensor
    cfg: CoOpConfig
    epochs: int

    def run(self, bundle: ClipBundle) -> dict:
        """Train and evaluate -> accuracy, seconds, cpu_seconds, steps, final loss, the context (CPU) and M."""
        cpu = time.process_time()
        res = train_coop(bundle, self.classnames, self.train, self.cfg, seed=self.seed, shots=self.shots,
                         epochs=self.epochs)
        acc = accuracy(coop_logits(res.learner, self.test_feats), self.test_labels)
        return {"accuracy": acc, "seconds": res.seconds, "cpu_seconds": time.process_time() - cpu, "steps": res.steps,
                "final_loss": res.history[-1]["loss"] if res.history else float("nan"),
                "ctx": res.learner.ctx.detach().cpu().clone(), "n_ctx": res.learner.n_ctx}

    def cost(self) -> float:
        steps = max(1, len(self.train.labels) // self.cfg.batch_size)
        return self.epochs * steps * len(self.classnames) * (self.cfg.n_ctx + 6)


@dataclass
class ProbeJob:
    """One linear probe (``vlmlab.probe``): C searched on the val shots, accuracy on the test set."""

    dataset: str
    shots: int
    seed: int
    n_classes: int
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test_feats: Tensor
    test_labels: Tensor
    refine: int = 8

    def run(self, bundle: ClipBundle | None = None) -> dict:
        t0, cpu = time.perf_counter(), time.process_time()
        with threadpool_limits(1):                     # small lbfgs problems: BLAS threads only add sync cost (6x)
            probe = fit_linear_probe(*self.train, *self.val, refine=self.refine, seed=self.seed,
                                     n_classes=self.n_classes)
        return {"accuracy": accuracy(probe.logits(self.test_feats), self.test_labels), "probe": probe,
                "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu}

    def cost(self) -> float:
        return 50.0 * len(self.train[1]) * (7 + 2 * self.refine)


def run_job(bundle: ClipBundle, job) -> dict:
    return job.run(bundle)


def _worker_job(source: tuple[str, str | None, str], job) -> dict:
    """A job in a worker process: the CLIP is loaded once per process from ``source`` (name, pretrained,
    the parent's identity) and checked against the parent's."""
    global _WORKER_BUNDLE
    if _WORKER_BUNDLE is None:
        from vlmlab.models import load_clip
        name, pretrained, identity = source
        bundle = load_clip(name, pretrained, device="cpu")
        if bundle.identity != identity:
            raise RuntimeError(f"worker loaded {bundle.identity!r}, the parent holds {identity!r}")
        _WORKER_BUNDLE = bundle
    return job.run(_WORKER_BUNDLE)


def run_jobs(bundle: ClipBundle, jobs: Sequence[Job | ProbeJob], workers: int = 1, threads: int | None = None) -> list[dict]:
    """Run ``jobs`` in order; ``workers > 1`` uses that many processes (CPU bundles with weights from a file or tag).

    ``threads``: torch threads per process (in this process only while the jobs run); ``None`` keeps the
    current setting here and splits it between workers.
    """
    if not jobs:
        return []
    if workers > 1 and (bundle.device.type != "cpu" or bundle.pretrained is None):
        log.warning("CoOp workers=%d ignored: parallel runs need a CPU bundle with loadable weights "
                    "(device %s, pretrained %r); running in this process", workers, bundle.device, bundle.pretrained)
        workers = 1
    if workers <= 1:                                  # threads: tiny matrices, extra intra-op threads only add sync cost
        return process_map(run_job, jobs, context=bundle, threads=threads, desc="CoOp runs")
    return process_map(_worker_job, jobs, context=(bundle.name, bundle.pretrained, bundle.identity), workers=workers,
                       threads=threads, desc="CoOp runs", cost=lambda j: j.cost())
