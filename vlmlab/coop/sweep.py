"""The CoOp grid: datasets x shots x seeds x variants, with zero-shot and linear-probe references.

    sweep = run_sweep(bundle, splits, shots=[1, 2, 4, 8, 16], seeds=[1, 2, 3], variants=["M16_end"], cfg=CoOpConfig())
    sweep.table     dataset, method, n_ctx, position, init, csc, shots, seed, accuracy   (tables/coop.csv)
    sweep.runs      the same keys + seconds, steps, final loss of every CoOp run
    sweep.contexts  (dataset, variant, shots, seed) -> learned context, for nearest words and DG
    sweep.timing    wall and CPU seconds: preparation (features, views) in this process, and all jobs

Protocol (``coop.md`` §4, §8): K shots per class from the train pool (``vlmlab.data.sample_few_shot``,
seeded; every K drawn on its own, as CoOp's, or nested in K with ``fewshot_draws="nested"``); the test
set is the whole test split; zero-shot uses the dataset's hand-written template; the linear probe is
logistic regression on evaluation-transform features, the image encoder's output before normalisation as
lpclip's ``visual()`` (``lp_features="normalized"``: unit embeddings, vlmlab until fidelity row #17), with C
searched on min(K, 4) val shots per class (``vlmlab.probe``, CoOp's 8 bisection rounds by default).
The probe draws its own shots as lpclip does (``lp_draws="lpclip"``: numpy's legacy generator seeded with the
run's seed, ``vlmlab.data.fewshot.sample_lpclip``); ``lp_draws="coop"`` fits it on CoOp's shots instead.
Departure: zero-shot rows repeat per seed (one deterministic value) so every method has the same keys.
CoOp runs are independent: ``workers > 1`` trains them in that many processes (CPU), each with
``threads`` torch threads; results do not depend on ``workers``. With ``batch_runs`` (default) the
cached-mode runs with the same prompt design (M, position, CSC, init) are trained together, one
text-tower pass per step for all of them (``vlmlab.coop.batched``; the same contexts and accuracies
as one run at a time, to float rounding): every dataset's runs in one group (``stack_runs="datasets"``),
or one group per dataset ("dataset"); exact-mode runs stay one at a time. With a ``cache``, trained
runs (cached and exact mode) are kept there as each finishes and a rerun with the same inputs and training
code loads them, so an interrupted sweep resumes from the runs it finished (``cache_runs``; ``timing["runs_from_cache"]`` counts them), and so are the linear probes' searched C
(``timing["probes_from_cache"]``: a rerun fits each probe once, at its C).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch

from vlmlab.coop.augment import eval_features, view_features
from vlmlab.coop.data import Splits
from vlmlab.coop.jobs import Job, ProbeJob, check_stacking, run_units
from vlmlab.coop.train import CoOpConfig, TrainSet
from vlmlab.coop.variants import Variant, parse_variant
from vlmlab.data.fewshot import check_draws, sample_few_shot, sample_lpclip
from vlmlab.features import FeatureCache
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import check_dtype, check_features, probe_input
from vlmlab.prompts import zero_shot_logits, zero_shot_weights
from vlmlab.runtime import get_logger

log = get_logger("vlmlab.coop")

COLUMNS = ["dataset", "method", "n_ctx", "position", "init", "csc", "shots", "seed", "accuracy"]
NONE = {"n_ctx": 0, "position": "-", "init": "-", "csc": False}
LP_DRAWS = ("lpclip", "coop")        # the probe's shots: lpclip's own draw, or CoOp's


@dataclass
class Sweep:
    """Results of :func:`run_sweep` (see the module docstring)."""

    table: pd.DataFrame
    runs: pd.DataFrame
    contexts: dict = field(default_factory=dict)
    zero_shot_weights: dict = field(default_factory=dict)
    linear_probes: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    lp_features: str = "raw"          # what the probes fit and score (``vlmlab.probe.probe_input``)


def zero_shot_accuracy(bundle: ClipBundle, split: Splits, feats) -> tuple[float, torch.Tensor]:
    """Zero-shot accuracy with the dataset's hand-written template, and the (C, D) weights."""
    w = zero_shot_weights(bundle, split.classnames, split.template).cpu()            # (C, D)
    return accuracy(zero_shot_logits(feats.feats, w), feats.labels), w


def _subset_feats(bundle, data, idx: torch.Tensor, cache, kind: str):
    """The probe's evaluation-transform features of ``data[idx]`` (one cached extraction; ``kind`` as
    ``probe_input``) and item -> row."""
    f = eval_features(bundle, data.subset(idx.tolist()), cache)
    return probe_input(f, kind), {int(i): r for r, i in enumerate(idx.tolist())}


def _rows(where: dict, idx: torch.Tensor) -> torch.Tensor:
    return torch.tensor([where[int(i)] for i in idx.tolist()], dtype=torch.long)


def _union(draws: dict[int, torch.Tensor]) -> torch.Tensor:
    """Sorted item ids of all K's draws; nested draws: the largest K's draw itself."""
    return torch.unique(torch.cat(list(draws.values())))


def _jobs_for_seed(bundle, split: Splits, test, shots, seed, variants, cfg, epochs_table, methods, lp_refine, cache,
                   lp_dtype: str = "float64", nested: bool = False, lp_features: str = "raw",
                   lp_draws: str = "lpclip"):
    """CoOp and probe jobs of one (dataset, seed); features computed once for the union of the K draws (with
    nested draws, the largest K's)."""
    c = split.n_classes
    y_train, y_val = torch.as_tensor(split.train.labels).long(), torch.as_tensor(split.val.labels).long()
    idx = {k: sample_few_shot(y_train, k, seed, c, nested=nested) for k in shots}
    pool = _union(idx)
    jobs = []
    if "linear_probe" in methods:
        if lp_draws == "lpclip":                               # lpclip's own numpy draw of train and val shots
            draws = {k: sample_lpclip(y_train, y_val, k, seed) for k in shots}
            tidx, vidx = {k: d[0] for k, d in draws.items()}, {k: d[1] for k, d in draws.items()}
        else:                                                  # CoOp's shots; min(K, 4) val shots per class
            tidx = idx
            vidx = {k: sample_few_shot(y_val, min(k, 4), seed, c, nested=nested) for k in shots}
        f_train, w_train = _subset_feats(bundle, split.train, _union(tidx), cache, lp_features)
        f_val, w_val = _subset_feats(bundle, split.val, _union(vidx), cache, lp_features)
        f_test = probe_input(test, lp_features)
        for k in shots:
            jobs.append(ProbeJob(split.name, k, seed, c, (f_train[_rows(w_train, tidx[k])], y_train[tidx[k]]),
                                 (f_val[_rows(w_val, vidx[k])], y_val[vidx[k]]), f_test, test.labels, lp_refine,
                                 lp_dtype))
    if "coop" not in methods or not variants:
        return jobs
    views = (view_features(bundle, split.train, pool, cfg.n_views, seed, cache, scale=cfg.crop_scale)
             if cfg.mode == "cached" else None)
    where = {int(i): p for p, i in enumerate(pool.tolist())}
    for k in shots:
        train = TrainSet(labels=y_train[idx[k]], view_feats=None if views is None else views[_rows(where, idx[k])],
                         data=split.train if cfg.mode == "exact" else None, indices=idx[k], view_seed=seed)
        for v in variants:
            if k in v.shots_or(shots):
                vcfg = v.config(cfg.replace(epochs=epochs_table))
                jobs.append(Job(split.name, v, k, seed, split.classnames, train, test.feats, test.labels, vcfg,
                                vcfg.epochs_for(k)))
    return jobs


def _collect(out: Sweep, jobs, results) -> list[dict]:
    rows, runs = [], []
    for job, res in zip(jobs, results):
        base = {"dataset": job.dataset, "shots": job.shots, "seed": job.seed, "accuracy": res["accuracy"]}
        if isinstance(job, ProbeJob):
            rows.append({**base, "method": "linear_probe", **NONE})
            out.linear_probes[(job.dataset, job.shots, job.seed)] = res["probe"]
            continue
        rows.append({**base, "method": "coop", **job.variant.columns(), "n_ctx": res["n_ctx"]})  # a phrase fixes M
        out.contexts[(job.dataset, job.variant.name, job.shots, job.seed)] = res["ctx"]
        runs.append({"dataset": job.dataset, "variant": job.variant.name, "shots": job.shots, "seed": job.seed,
                     "epochs": job.epochs, "steps": res["steps"], "seconds": res["seconds"],
                     "cpu_seconds": res["cpu_seconds"],
                     "final_loss": res["final_loss"], "accuracy": res["accuracy"]})
    out.runs = pd.DataFrame(runs)
    return rows


def run_sweep(bundle: ClipBundle, splits: Sequence[Splits], shots: Sequence[int], seeds: Sequence[int],
              variants: Sequence[Variant | str | dict], cfg: CoOpConfig = CoOpConfig(), *,
              methods: Sequence[str] = ("zero_shot", "linear_probe", "coop"), epochs_by_dataset: dict | None = None,
              lp_refine: int = 8, lp_dtype: str = "float64", lp_features: str = "raw", lp_draws: str = "lpclip",
              fewshot_draws: str = "independent",
              workers: int = 1, threads: int | None = None,
              cache: FeatureCache | None = None, batch_runs: bool = True, cache_runs: bool = True,
              stack_runs: str = "datasets") -> Sweep:
    """Run the grid (see the module docstring).

    Args:
        bundle: the frozen CLIP. splits: datasets (``vlmlab.coop.data.load_splits``).
        shots: K values. seeds: few-shot draw / init / order seeds (CoOp: 1, 2, 3).
        variants: CoOp variants (``Variant``, a dict of its fields or a "M16_middle_csc" string).
        cfg: base hyperparameters (mode, views, optimiser, epochs per K).
        methods: which of zero_shot, linear_probe, coop to run.
        epochs_by_dataset: {dataset name: {K: epochs}} exceptions (CoOp: ImageNet 50 for every K).
        lp_refine: bisection rounds of the probe's C search. lp_dtype: the probe's fit dtype (``vlmlab.probe``:
            "float64", lpclip's; "float32"). lp_features: what the probe fits, "raw" (the encoder's output,
            lpclip's) or "normalized" (unit embeddings; ``vlmlab.probe.probe_input``). lp_draws: the probe's
            shots, "lpclip" (its own numpy draw, ``vlmlab.data.fewshot.sample_lpclip``) or "coop" (CoOp's shots).
        fewshot_draws: "independent" (CoOp's: each K drawn on its own) or "nested" (a seed's K-shot sets nest;
            ``vlmlab.data.fewshot``). workers, threads: processes for the runs.
        cache: the shared feature cache.
        batch_runs: train the cached-mode CoOp runs of a prompt design together (same results).
        stack_runs: "datasets" (one group of a design's runs across the datasets) or "dataset" (a group per
            dataset); ``vlmlab.coop.jobs.batch_jobs``.
        cache_runs: keep trained CoOp runs in ``cache`` and load them on a rerun instead of training
            (``vlmlab.coop.jobs.run_key``; any change to the inputs or the training code retrains).
    """
    bad = sorted(set(methods) - {"zero_shot", "linear_probe", "coop"})
    if bad:
        raise KeyError(f"unknown method(s) {bad}; use zero_shot, linear_probe, coop")
    nested = check_draws(fewshot_draws)
    check_stacking(stack_runs)
    check_dtype(lp_dtype, "lp_dtype")
    check_features(lp_features, "lp_features")
    if lp_draws not in LP_DRAWS:
        raise ValueError(f"lp_draws={lp_draws!r}; use one of {LP_DRAWS}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    variants = [parse_variant(v) for v in variants]
    shots = sorted(int(k) for k in shots)
    rows, jobs, out = [], [], Sweep(pd.DataFrame(columns=COLUMNS), pd.DataFrame(), lp_features=lp_features)
    for split in splits:
        test = eval_features(bundle, split.test, cache)
        if "zero_shot" in methods:
            acc, out.zero_shot_weights[split.name] = zero_shot_accuracy(bundle, split, test)
            rows += [{"dataset": split.name, "method": "zero_shot", **NONE, "shots": 0, "seed": s, "accuracy": acc}
                     for s in seeds]
        table = (epochs_by_dataset or {}).get(split.name, cfg.epochs)
        for seed in seeds:
            jobs += _jobs_for_seed(bundle, split, test, shots, seed, variants, cfg, table, methods, lp_refine, cache,
                                   lp_dtype, nested, lp_features, lp_draws)
    t_prep, cpu_prep = time.perf_counter() - t0, time.process_time() - cpu0
    results = run_units(bundle, jobs, batch=batch_runs and cfg.mode == "cached", workers=workers, threads=threads,
                        cache=cache if cache_runs else None, stack=stack_runs)
    rows += _collect(out, jobs, results)
    probe_hits = [isinstance(j, ProbeJob) for j, r in zip(jobs, results) if r.get("from_cache")]   # per cache hit
    out.timing = {"wall_s": time.perf_counter() - t0, "prep_wall_s": t_prep, "prep_cpu_s": cpu_prep,
                  "jobs_cpu_s": sum(r["cpu_seconds"] for r in results if not r.get("from_cache")), "jobs": len(jobs),
                  "runs_from_cache": probe_hits.count(False), "probes_from_cache": probe_hits.count(True),
                  "workers": workers, "batch_runs": bool(batch_runs),
                  "stack_runs": stack_runs}
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {s.name: i for i, s in enumerate(splits)}
    rank = {"zero_shot": 0, "linear_probe": 1, "coop": 2}
    out.table = table.sort_values(["dataset", "method", "n_ctx", "position", "init", "csc", "shots", "seed"],
                                  key=lambda c: c.map(order) if c.name == "dataset" else
                                  (c.map(rank) if c.name == "method" else c), kind="stable").reset_index(drop=True)
    return out

