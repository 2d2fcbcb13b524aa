"""Run a sweep's cases: side by side on this machine, or as a SLURM job array through submitit.

``local``: a thread pool of N workers, each running one papermill process at a time (in its own
process group, so an interrupt stops it cleanly). N defaults to the number of visible GPUs, or 1;
worker i is pinned to GPU ``gpus[i % n_gpus]`` with ``CUDA_VISIBLE_DEVICES``. On CPU the cores are
split: ``OMP_NUM_THREADS = cores // N`` unless set.

``slurm``: ``submitit.AutoExecutor(...).map_array(run_case, jobs)`` submits one job array (one task
per case; ``array_parallelism`` at once), with the sweep file's ``slurm:`` resources; the code is in
``vlmlab.sweep.slurm`` and re-exported here. ``cluster="local"`` or ``"debug"`` runs the same path
through submitit's local (subprocess) or debug (in-process) executor, no cluster needed.

Either way, a case that is already complete is skipped, so rerunning a sweep after a failure or an
interruption runs only what is missing (``rerun_all=True`` reruns everything). A case another sweep is
running (it holds the case's ``.lock``, ``vlmlab.sweep.case``) is never started a second time; the
report lists it as ``running elsewhere``.
"""
from __future__ import annotations

import hashlib
import os
import queue
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import pandas as pd

from vlmlab.results import atomic_path
from vlmlab.runtime import get_logger, progress
from vlmlab.sweep.case import (RUNNING_ELSEWHERE, CaseJob, CaseResult, case_status, failure_info, log_result,
                               run_case, terminate_running)
from vlmlab.sweep.grid import Sweep, SweepError, canonical_json
from vlmlab.sweep.slurm import queued_jobs, run_slurm, submitit_parameters

__all__ = ["SweepReport", "jobs_for", "status_table", "run_sweep", "run_local", "run_slurm", "visible_gpus",
           "gpu_slots", "submitit_parameters", "queued_jobs"]

log = get_logger("vlmlab.sweep")


@dataclass
class SweepReport:
    """What a :func:`run_sweep` call did.

    Attributes:
        results: one :class:`CaseResult` per case that ran (or was submitted).
        skipped: ids of cases that were already complete.
    """

    sweep: Sweep
    results: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every case is complete (or was submitted without waiting, or another sweep runs it)."""
        return all(r.status in ("complete", "submitted", RUNNING_ELSEWHERE) for r in self.results)

    def summary(self) -> str:
        """Counts, then one line per failed case with its log path."""
        counts = pd.Series([r.status for r in self.results], dtype=object).value_counts().to_dict()
        parts = [f"{n} {s}" for s, n in sorted(counts.items())] + [f"{len(self.skipped)} already complete"]
        lines = [f"sweep {self.sweep.name}: {', '.join(parts)} -> {self.sweep.dir}"]
        lines += [f"  FAILED {r.case_id}: {r.error}\n         log: {r.log}" for r in self.failed]
        return "\n".join(lines)


def jobs_for(sweep: Sweep) -> list[CaseJob]:
    """One :class:`CaseJob` per case of ``sweep``, in expansion order."""
    base = sweep.base_path if sweep.base_path.is_file() else None
    digest = hashlib.sha1(canonical_json(sweep.base_values()).encode()).hexdigest()[:12]
    return [CaseJob(case, sweep.notebook_path, base, digest, sweep.profile, sweep.dir / case.id, sweep.kernel,
                    sweep.device, sweep.execution_timeout) for case in sweep.expand()]


def status_table(sweep: Sweep) -> pd.DataFrame:
    """One row per case: ``case_id``, ``status``, ``error``, ``log``, then the varying parameters."""
    rows = []
    for job in jobs_for(sweep):
        status, info = case_status(job), failure_info(job)
        rows.append({"case_id": job.case.id, "status": status,
                     "error": info.get("error", "") if status == "failed" else "",
                     "log": str(job.dir / "papermill.log") if job.dir.exists() else "",
                     **{k: v if not isinstance(v, (list, dict)) else canonical_json(v)
                        for k, v in job.case.varying.items()}})
    return pd.DataFrame(rows)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``, else []."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and not g.strip().startswith("-")]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.stdout.splitlines() if l.startswith("GPU "))]


def gpu_slots(gpus: list[str], workers: int) -> list[str | None]:
    """The GPU of each worker: round robin over ``gpus`` (None for every worker without GPUs)."""
    if not gpus:
        return [None] * workers
    if workers > len(gpus):
        log.warning("%d workers share %d GPU(s): %d cases per GPU at once", workers, len(gpus),
                    -(-workers // len(gpus)))
    return [gpus[i % len(gpus)] for i in range(workers)]


def run_local(jobs: list[CaseJob], workers: int | None = None) -> list[CaseResult]:
    """Run ``jobs`` with ``workers`` papermill processes at once (default: one per GPU, or 1)."""
    gpus = visible_gpus()
    workers = max(1, workers or len(gpus) or 1)
    slots: queue.Queue = queue.Queue()
    for slot in gpu_slots(gpus, workers):
        slots.put(slot)
    threads = None if gpus else max(1, (os.cpu_count() or 1) // workers)
    stop = threading.Event()
    log.info("local executor: %d case(s), %d worker(s), %s", len(jobs), workers,
             f"GPUs {gpus}" if gpus else f"CPU, {threads} thread(s) each")

    def task(job: CaseJob) -> CaseResult:
        slot = slots.get()
        try:
            if stop.is_set():
                return CaseResult(job.case.id, "interrupted", error="sweep interrupted before it started")
            return run_case(job, gpu=slot, threads=threads, stop=stop)
        finally:
            slots.put(slot)

    results: list[CaseResult] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep")
    bar = progress(total=len(jobs), desc="sweep cases")
    try:
        futures = [pool.submit(task, job) for job in jobs]
        for fut in as_completed(futures):
            results.append(log_result(fut.result()))
            bar.update(1)
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        n = terminate_running()
        log.warning("sweep interrupted: stopped %d running case(s); rerun the sweep to finish the rest", n)
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True)
    return results


def run_sweep(sweep: Sweep, executor: str | None = None, workers: int | None = None, rerun_all: bool = False,
              cluster: str = "slurm", wait: bool = True) -> SweepReport:
    """Run every case of ``sweep`` that is not complete.

    Args:
        executor: ``local`` or ``slurm`` (default: the sweep file's ``executor``).
        workers: local processes at once (default: the sweep file's ``workers``, else GPUs or 1).
        rerun_all: run complete cases again too.
        cluster, wait: see :func:`run_slurm`.

    Returns:
        A :class:`SweepReport`; ``report.failed`` lists failed cases with their log paths.
    """
    kind = executor or sweep.executor
    if kind not in ("local", "slurm"):
        raise SweepError(f"executor must be 'local' or 'slurm', not {kind!r}")
    jobs = jobs_for(sweep)
    states = {j.case.id: case_status(j) for j in jobs}
    queued = queued_jobs([j for j in jobs if states[j.case.id] == "submitted"])
    if queued:
        log.warning("%d case(s) are still queued or running on SLURM and are left alone: %s", len(queued),
                    ", ".join(sorted(queued)))
    elsewhere = [j for j in jobs if states[j.case.id] == "running"]
    if elsewhere:
        log.warning("%d case(s) are running in another sweep (their .lock is held) and are left alone: %s",
                    len(elsewhere), ", ".join(j.case.id for j in elsewhere))
    todo = [j for j in jobs if j.case.id not in queued and states[j.case.id] != "running"
            and (rerun_all or states[j.case.id] != "complete")]
    running = {j.case.id for j in todo + elsewhere}
    skipped = [j.case.id for j in jobs if j.case.id not in running]
    _write_manifest(sweep, jobs)
    log.info("sweep %s (%s, %s): %d case(s), %d complete and skipped, %d to run", sweep.name, sweep.notebook,
             sweep.profile, len(jobs), len(skipped), len(todo))
    if kind == "local":
        results = run_local(todo, workers or sweep.workers)
    else:
        results = run_slurm(todo, sweep, cluster=cluster, wait=wait)
    results += [CaseResult(j.case.id, RUNNING_ELSEWHERE, log=j.dir / "papermill.log",
                           error=f"another sweep holds {j.dir / '.lock'}") for j in elsewhere]
    return SweepReport(sweep, results, skipped)


def _write_manifest(sweep: Sweep, jobs: list[CaseJob]) -> None:
    """``<sweep dir>/sweep.json``: the sweep as run, and every case id with its varying parameters."""
    import json

    sweep.dir.mkdir(parents=True, exist_ok=True)
    manifest = {"name": sweep.name, "notebook": sweep.notebook, "profile": sweep.profile,
                "file": str(sweep.path) if sweep.path else None, "base": str(sweep.base_path),
                "fixed": sweep.fixed, "grid": sweep.grid, "cases": [{"id": j.case.id, "varying": j.case.varying}
                                                                    for j in jobs]}
    with atomic_path(sweep.dir / "sweep.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
