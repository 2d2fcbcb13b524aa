"""Independent CoOp runs and linear probes, in this process or in ``workers`` CPU processes.

A :class:`Job` carries everything one run needs (shots, cached views or images, test features,
config), so a worker only has to load the model once (``load_clip`` with the bundle's name, weights and
precision, checked against the parent's identity). Processes start with ``spawn`` (safe with OpenMP and
in Jupyter). Results come back in job order and do not depend on the number of workers.
A :class:`BatchJob` is several cached-mode jobs of one prompt design trained together
(``vlmlab.coop.batched``): by default the runs of every dataset (``STACKINGS``: "datasets"), or one
dataset's ("dataset"). ``batch_jobs`` forms them, at most ``max_rows`` prompts (runs x classes) per
step, and ``run_units`` returns one result per original job, in job order.

With a ``cache`` (a ``FeatureCache``), ``run_units`` keeps every trained CoOp run, cached or exact mode, as
it finishes: its context and statistics under a key of everything the training reads (``run_key``: model
identity, classes, config, seed, shots, epochs, a digest of the labels and view features or, in the exact
mode, the images' dataset key, shot indices and view seed, batched or single, and a fingerprint of the
training code and torch version). A rerun loads the context and evaluates it on the test features
instead of training again; ``make clean-cache`` (or ``cache=None``) trains everything afresh. A linear
probe keeps its searched C (``probe_key``: the train and val features and labels, classes, rounds, seed,
the probe code and scikit-learn version); a rerun fits once at that C instead of searching again.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from vlmlab.checkpoints import checkpoint_path
from vlmlab.coop.batched import group_key, train_coop_batched
from vlmlab.coop.train import CoOpConfig, CoOpResult, TrainSet, build_learner, coop_logits, train_coop
from vlmlab.features import FeatureCache
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import fit_linear_probe
from vlmlab.runcache import closure_fingerprint, tensor_digest
from vlmlab.runtime import get_logger, process_map

log = get_logger("vlmlab.coop")
MAX_ROWS = 4096          # prompts (runs x classes) one batched step holds at most (``batch_jobs``)
# a batched step's fixed cost in Job.cost's units (a class row's token through the tower): about 6 ms a step
# against 0.012 ms a row-token in bf16 (make bench: M16 end 5.9 ms + 1.4 ms per run of 20 rows x 6 tokens)
STEP_COST = 500.0
STACKINGS = ("datasets", "dataset")   # a batched group: one prompt design's runs of all datasets, or of one
_WORKER_BUNDLE: ClipBundle | None = None


def row_tokens(cfg: CoOpConfig) -> int:
    """Positions a class row runs through the tower on its own: the prompt (M context tokens + about 6 for
    SOS, the name, "." and EOS) less the prefix its run shares (``vlmlab.coop.text_batch``)."""
    shared = 0 if cfg.csc else {"end": cfg.n_ctx, "middle": cfg.n_ctx // 2}.get(cfg.position, 0)
    return cfg.n_ctx - shared + 6


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
    checkpoint: str | None = None       # a file for the training state while it runs (``run_units`` sets it)

    def run(self, bundle: ClipBundle) -> dict:
        """Train and evaluate -> accuracy, seconds, cpu_seconds, steps, final loss, the context (CPU) and M."""
        cpu = time.process_time()
        res = train_coop(bundle, self.classnames, self.train, self.cfg, seed=self.seed, shots=self.shots,
                         epochs=self.epochs, checkpoint=self.checkpoint)
        return self.result(res, cpu)

    def result(self, res: CoOpResult, cpu_start: float, cpu_share: float = 1.0) -> dict:
        """The result dict of a trained run, evaluated on the test features; CPU time since ``cpu_start``
        times ``cpu_share`` (a batched run's share of its group)."""
        acc = accuracy(coop_logits(res.learner, self.test_feats), self.test_labels)
        return {"accuracy": acc, "seconds": res.seconds, "cpu_seconds": cpu_share * (time.process_time() - cpu_start),
                "steps": res.steps, "final_loss": res.history[-1]["loss"] if res.history else float("nan"),
                "ctx": res.learner.ctx.detach().cpu().clone(), "n_ctx": res.learner.n_ctx}

    def cost(self) -> float:
        """Estimated work, for the workers' order: run-steps x class rows x the tokens each row takes through
        the tower (``row_tokens``)."""
        return self.steps() * len(self.classnames) * row_tokens(self.cfg)

    def steps(self) -> int:
        """Optimiser steps: epochs x steps an epoch (its training set in batches, at least one)."""
        return self.epochs * max(1, len(self.train.labels) // self.cfg.batch_size)


@dataclass
class BatchJob:
    """Cached-mode CoOp jobs of one prompt design, trained at once (``train_coop_batched``); each keeps its
    dataset's classes."""

    jobs: list[Job]

    def run(self, bundle: ClipBundle) -> list[dict]:
        """One result dict per job (as ``Job.run``); seconds and CPU seconds are shared by steps."""
        cpu = time.process_time()
        js = self.jobs
        trained = train_coop_batched(bundle, [j.classnames for j in js], [j.train for j in js], [j.cfg for j in js],
                                     [j.seed for j in js], [j.shots for j in js], [j.epochs for j in js])
        total = max(1, sum(r.steps for r in trained))
        return [j.result(r, cpu, r.steps / total) for j, r in zip(js, trained)]

    def cost(self) -> float:
        """The runs' work plus a fixed cost per batched step (``STEP_COST``) for the longest run's steps."""
        return STEP_COST * max(j.steps() for j in self.jobs) + sum(j.cost() for j in self.jobs)


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
    dtype: str = "float64"

    def run(self, bundle: ClipBundle | None = None) -> dict:
        t0, cpu = time.perf_counter(), time.process_time()
        probe = fit_linear_probe(*self.train, *self.val, refine=self.refine, seed=self.seed, n_classes=self.n_classes,
                                 dtype=self.dtype)
        return self._result(probe, t0, cpu)

    def restore(self, hit: dict[str, Tensor]) -> dict:
        """The result of a cached C search: one fit at the stored C, the same classifier as the search's
        (``fit_linear_probe`` fits every C with the same solver, seed and iterations)."""
        t0, cpu = time.perf_counter(), time.process_time()
        c, val_acc, numpy_c = hit["search"].tolist()
        # the search passes the refined Cs as numpy float64 and the grid's as Python floats; with float32
        # features (dtype "float32") scikit-learn's lbfgs then runs its objective in float64 or float32 (numpy 2's
        # promotion), so the refit passes C as the search did, or lbfgs stops at another point near the optimum
        probe = fit_linear_probe(*self.train, C=np.float64(c) if numpy_c else c, seed=self.seed,
                                 n_classes=self.n_classes, dtype=self.dtype)
        probe.val_acc = val_acc
        return {**self._result(probe, t0, cpu), "from_cache": True}

    @staticmethod
    def stored(res: dict) -> dict[str, Tensor]:
        """What the cache keeps of a searched probe (``restore`` reads it): C, its validation accuracy, and
        whether C was a numpy float."""
        p = res["probe"]
        return {"search": torch.tensor([p.C, p.val_acc, float(isinstance(p.clf.C, np.floating))], dtype=torch.float64)}

    def _result(self, probe, t0: float, cpu: float) -> dict:
        return {"accuracy": accuracy(probe.logits(self.test_feats), self.test_labels), "probe": probe,
                "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu}

    def cost(self) -> float:
        return 50.0 * len(self.train[1]) * (7 + 2 * self.refine)


def check_stacking(stack: str) -> str:
    if stack not in STACKINGS:
        raise ValueError(f"stack={stack!r}; use one of {STACKINGS}")
    return stack


def batch_jobs(jobs: Sequence, max_rows: int = MAX_ROWS,
               stack: str = "datasets") -> list[tuple[list[int], Job | ProbeJob | BatchJob]]:
    """Group the cached-mode CoOp jobs by prompt design (``group_key``) into ``BatchJob``s.

    ``stack``: "datasets" puts a design's runs of every dataset in one group (each run keeps its classes;
    a step's text pass holds them all), "dataset" one group per (dataset, classes, design). A group is cut,
    in job order, into batches of at most ``max_rows`` prompts (the runs' classes summed; one run at least).
    Exact-mode CoOp jobs and probes stay single.
    Returns (positions in ``jobs``, unit) pairs, in the order of each unit's first job.
    """
    check_stacking(stack)
    groups: dict[tuple, list[int]] = {}
    units: list[tuple[list[int], object]] = []
    for i, job in enumerate(jobs):
        if isinstance(job, Job) and job.cfg.mode == "cached":
            key = group_key(job.cfg)
            if stack == "dataset":
                key = (job.dataset, tuple(job.classnames), key)
            if key not in groups:
                groups[key] = []
                units.append((groups[key], None))
            groups[key].append(i)
        else:
            units.append(([i], job))
    out = []
    for pos, job in units:
        if job is not None:
            out.append((pos, job))
            continue
        cut: list[list[int]] = [[]]
        rows = 0
        for i in pos:
            n = len(jobs[i].classnames)
            if cut[-1] and rows + n > max_rows:
                cut.append([])
                rows = 0
            cut[-1].append(i)
            rows += n
        out += [(c, BatchJob([jobs[i] for i in c])) for c in cut]
    return out


def _code_fingerprint() -> str:
    """The training code's fingerprint: CoOp's step, the batched trainer, the text tower paths and every vlmlab
    module they import (``closure_fingerprint``)."""
    return closure_fingerprint("vlmlab.coop.train", "vlmlab.coop.batched")


def run_key(bundle: ClipBundle, job: Job, batched: bool | str, code: str | None = None) -> dict | None:
    """The cache key of a trained CoOp run; ``None`` for a probe, or for an exact-mode run whose images have no
    ``key``. ``batched``: False (trained alone) or the stacking it was trained in (``STACKINGS``).

    What the run trains on: in the cached mode a digest of its labels and view features; in the exact mode
    (the paper profile) its images' dataset key (``ImageDataset.key``: the files' relative paths and labels,
    as the feature cache keys them; a world set's key names its generator), a digest of its labels and shot
    indices, and the view seed, which with the item and the epoch decide every crop (``vlmlab.coop.augment``).
    An exact-mode run is always trained alone. So an interrupted paper-profile sweep resumes from the runs it
    finished, and a data tree moved to another root keeps its runs."""
    if not isinstance(job, Job):
        return None
    train = job.train
    if job.cfg.mode == "cached" and train.view_feats is not None:
        data = tensor_digest(torch.as_tensor(train.labels), train.view_feats)
    elif job.cfg.mode == "exact" and getattr(train.data, "key", None) is not None and train.indices is not None:
        data = {"images": str(train.data.key), "view_seed": int(train.view_seed),
                "shots": tensor_digest(torch.as_tensor(train.labels), torch.as_tensor(train.indices).long())}
        batched = False
    else:
        return None
    return {"kind": "coop-run", "model": bundle.identity, "classnames": list(job.classnames), "cfg": asdict(job.cfg),
            "seed": int(job.seed), "shots": int(job.shots), "epochs": int(job.epochs),
            "batched": batched if isinstance(batched, str) else bool(batched),
            "train": data, "code": code or _code_fingerprint()}


def _probe_code() -> str:
    import sklearn
    return closure_fingerprint("vlmlab.probe") + f"/sklearn {sklearn.__version__}"


def probe_key(job: ProbeJob, code: str | None = None) -> dict:
    """The cache key of a linear probe's C search: what the search reads (train and val features and labels,
    classes, rounds, seed, the fit's dtype) and a fingerprint of ``vlmlab.probe`` and the scikit-learn version."""
    return {"kind": "linear-probe-search-v2", "n_classes": int(job.n_classes), "refine": int(job.refine),
            "dtype": job.dtype,
            "seed": int(job.seed), "train": tensor_digest(*job.train), "val": tensor_digest(*job.val),
            "code": code or _probe_code()}


def _stored(res: dict) -> dict[str, Tensor]:
    stats = [res["seconds"], res["cpu_seconds"], res["steps"], res["final_loss"]]
    return {"ctx": res["ctx"], "stats": torch.tensor(stats, dtype=torch.float64)}


def _restored(bundle: ClipBundle, job: Job, hit: dict[str, Tensor]) -> dict:
    """The result dict of a cached run: its context evaluated on the job's test features."""
    learner = build_learner(bundle, job.classnames, job.cfg, job.seed)
    with torch.no_grad():
        learner.ctx.copy_(hit["ctx"].to(learner.ctx.device, learner.ctx.dtype))
    seconds, cpu_seconds, steps, final_loss = hit["stats"].tolist()
    return {"accuracy": accuracy(coop_logits(learner, job.test_feats), job.test_labels), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "steps": int(steps), "final_loss": final_loss,
            "ctx": learner.ctx.detach().cpu().clone(), "n_ctx": learner.n_ctx, "from_cache": True}


def run_units(bundle: ClipBundle, jobs: Sequence, batch: bool = True, max_rows: int = MAX_ROWS, workers: int = 1,
              threads: int | None = None, cache: FeatureCache | None = None, stack: str = "datasets") -> list[dict]:
    """``run_jobs`` with the cached CoOp jobs batched (``batch``, grouped by ``stack``: ``batch_jobs``); one
    result per job, in job order.

    ``cache``: CoOp runs found there (``run_key``) are evaluated, not trained; the others are trained and
    stored as each unit finishes. A run trained alone (the exact mode's) keeps its training state beside its
    entry while it trains (``train_coop``'s ``checkpoint``), so a rerun resumes it after its last saved epoch.
    Results from the cache carry ``from_cache=True``.
    """
    out: list = [None] * len(jobs)
    keys: list[dict | None] = [None] * len(jobs)
    if cache is not None:
        code, pcode = _code_fingerprint(), _probe_code()
        for i, job in enumerate(jobs):
            keys[i] = (probe_key(job, pcode) if isinstance(job, ProbeJob) else
                       run_key(bundle, job, check_stacking(stack) if batch else False, code))
            if keys[i] is not None and (hit := cache.get(keys[i])) is not None:
                out[i] = job.restore(hit) if isinstance(job, ProbeJob) else _restored(bundle, job, hit)
        if hits := sum(r is not None for r in out):
            log.info("CoOp: %d of %d runs and probes loaded from the cache (%s), %d to train", hits,
                     sum(k is not None for k in keys), cache.root, len(jobs) - hits)
    todo = [i for i, r in enumerate(out) if r is None]
    alone = [i for i in todo if isinstance(jobs[i], Job) and (not batch or jobs[i].cfg.mode != "cached")]
    ckpt = {i: checkpoint_path(cache, keys[i]) for i in alone if keys[i] is not None}   # these resume mid-run
    pending = [replace(jobs[i], checkpoint=str(ckpt[i])) if i in ckpt else jobs[i] for i in todo]
    units = batch_jobs(pending, max_rows, stack) if batch else [([j], job) for j, job in enumerate(pending)]

    def keep(u: int, res) -> None:                   # as each unit finishes: an interruption loses only the rest
        pos, unit = units[u]
        for j, r in zip(pos, res if isinstance(unit, BatchJob) else [res]):
            i = todo[j]
            out[i] = r
            if cache is not None and keys[i] is not None:
                cache.put(keys[i], jobs[i].stored(r) if isinstance(jobs[i], ProbeJob) else _stored(r))
            if i in ckpt:
                ckpt[i].unlink(missing_ok=True)

    run_jobs(bundle, [u for _, u in units], workers=workers, threads=threads, on_result=keep)
    return out


def run_job(bundle: ClipBundle, job) -> dict:
    return job.run(bundle)


def _worker_job(source: tuple[str, str | None, str, str], job) -> dict:
    """A job in a worker process: the CLIP is loaded once per process from ``source`` (name, pretrained,
    precision, the parent's identity) and checked against the parent's."""
    global _WORKER_BUNDLE
    if _WORKER_BUNDLE is None:
        from vlmlab.models import load_clip
        name, pretrained, precision, identity = source
        bundle = load_clip(name, pretrained, device="cpu", precision=precision)
        if bundle.identity != identity:
            raise RuntimeError(f"worker loaded {bundle.identity!r}, the parent holds {identity!r}")
        _WORKER_BUNDLE = bundle
    return job.run(_WORKER_BUNDLE)


def run_jobs(bundle: ClipBundle, jobs: Sequence[Job | ProbeJob | BatchJob], workers: int = 1, threads: int | None = None,
             on_result=None) -> list[dict]:
    """Run ``jobs`` in order; ``workers > 1`` uses that many processes (CPU bundles with weights from a file or tag).

    ``threads``: torch threads per process (in this process only while the jobs run); ``None`` keeps the
    current setting here and splits it between workers. ``on_result(i, result)``: called as job i finishes.
    """
    if not jobs:
        return []
    if workers > 1 and (bundle.device.type != "cpu" or bundle.pretrained is None):
        log.warning("CoOp workers=%d ignored: parallel runs need a CPU bundle with loadable weights "
                    "(device %s, pretrained %r); running in this process", workers, bundle.device, bundle.pretrained)
        workers = 1
    if workers <= 1:                                  # threads: tiny matrices, extra intra-op threads only add sync cost
        return process_map(run_job, jobs, context=bundle, threads=threads, desc="CoOp runs", on_result=on_result)
    source = (bundle.name, bundle.pretrained, bundle.precision, bundle.identity)
    return process_map(_worker_job, jobs, context=source, workers=workers, threads=threads, desc="CoOp runs",
                       cost=lambda j: j.cost(), on_result=on_result)
