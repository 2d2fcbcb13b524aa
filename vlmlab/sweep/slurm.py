"""The SLURM executor: a sweep's cases as one job array through submitit.

``submitit.AutoExecutor(folder=<sweep dir>/_submitit).map_array(run_case, jobs)`` writes one sbatch
script with ``--array=0-(n-1)%array_parallelism`` and the sweep file's ``slurm:`` resources; each
task unpickles its :class:`CaseJob` and runs the same papermill command as the local executor
(SLURM sets ``CUDA_VISIBLE_DEVICES``). On a real cluster each case gets a ``.submitted`` marker
with its task id, so a rerun leaves alone the cases still listed by ``squeue``.
``cluster="local"`` / ``"debug"`` run the same path with submitit's subprocess / in-process
executors, no cluster needed (the tests use them). Reference: submitit 1.5.4
(``submitit/auto/auto.py``, ``submitit/slurm/slurm.py`` ``_make_sbatch_string``).
"""
from __future__ import annotations

import dataclasses
import getpass
import shutil
import subprocess
from pathlib import Path

import pandas as pd

from vlmlab.results import atomic_path
from vlmlab.runtime import get_logger, progress
from vlmlab.sweep.case import SUBMITTED, CaseJob, CaseResult, log_result, mark_failed, run_case
from vlmlab.sweep.grid import Sweep, SweepError

__all__ = ["submitit_parameters", "run_slurm", "queued_jobs"]

log = get_logger("vlmlab.sweep")


def submitit_parameters(sweep: Sweep) -> dict:
    """The sweep's ``slurm:`` options as ``AutoExecutor.update_parameters`` keyword arguments."""
    o = sweep.slurm
    params = {"name": f"vlmlab-{sweep.name}", "timeout_min": int(o.timeout_min), "gpus_per_node": int(o.gpus_per_node),
              "cpus_per_task": int(o.cpus_per_task), "mem_gb": o.mem_gb,
              "slurm_array_parallelism": int(o.array_parallelism)}
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(o, key):
            params[f"slurm_{key}"] = getattr(o, key)
    if o.setup:
        params["slurm_setup"] = list(o.setup)
    if o.additional_parameters:
        params["slurm_additional_parameters"] = dict(o.additional_parameters)
    return params


def run_slurm(jobs: list[CaseJob], sweep: Sweep, cluster: str = "slurm", wait: bool = True) -> list[CaseResult]:
    """Submit ``jobs`` as one job array; with ``wait``, collect each task's result.

    Args:
        cluster: ``slurm`` (needs ``srun``), or submitit's ``local`` / ``debug`` executors.
        wait: block until every task ends (else return ``submitted`` results and the job ids log).
    """
    try:
        import submitit
    except ImportError:
        raise SweepError("the slurm executor needs submitit: pip install 'submitit==1.5.*'") from None
    if not jobs:
        return []
    folder = sweep.dir / "_submitit"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as err:
        raise SweepError(f"cannot submit to SLURM ({err}); run on a login node with sbatch/srun, "
                         "or use --executor local") from None
    executor.update_parameters(**submitit_parameters(sweep))
    submitted = executor.map_array(run_case, jobs)
    _write_job_ids(sweep, jobs, submitted, mark=cluster == "slurm")
    log.info("submitted %d case(s) as job array %s (%s); submitit logs in %s", len(jobs),
             str(submitted[0].job_id).split("_")[0], cluster, folder)
    if not wait:
        return [CaseResult(j.case.id, "submitted", log=Path(str(s.paths.stdout))) for j, s in zip(jobs, submitted)]
    results = []
    for job, sub in progress(list(zip(jobs, submitted)), desc="slurm tasks"):
        try:
            results.append(log_result(sub.result()))
        except Exception as err:                  # noqa: BLE001  (the task died outside papermill)
            reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            res = mark_failed(job, None, 0.0, f"SLURM task {sub.job_id} failed: {reason} "
                                               f"(submitit log: {sub.paths.stderr})", None)
            results.append(log_result(dataclasses.replace(res, log=Path(str(sub.paths.stderr)))))
    return results


def _write_job_ids(sweep: Sweep, jobs: list[CaseJob], submitted, mark: bool) -> None:
    """``<sweep dir>/slurm_jobs.csv``; with ``mark``, a ``.submitted`` marker (job id) per case."""
    if mark:
        for job, sub in zip(jobs, submitted):
            job.dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(job.dir / SUBMITTED) as tmp:
                tmp.write_text(str(sub.job_id) + "\n", encoding="utf-8")
    rows = pd.DataFrame({"case_id": [j.case.id for j in jobs], "job_id": [str(s.job_id) for s in submitted],
                         "stdout": [str(s.paths.stdout) for s in submitted],
                         "stderr": [str(s.paths.stderr) for s in submitted]})
    sweep.dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(sweep.dir / "slurm_jobs.csv") as tmp:
        rows.to_csv(tmp, index=False)


def queued_jobs(jobs: list[CaseJob]) -> set[str]:
    """Ids of ``jobs`` whose ``.submitted`` SLURM task is still in ``squeue`` (empty without squeue)."""
    ids = {}
    for job in jobs:
        try:
            ids[(job.dir / SUBMITTED).read_text(encoding="utf-8").strip()] = job.case.id
        except OSError:
            continue
    squeue = shutil.which("squeue")
    if not ids or squeue is None:
        return set()
    try:
        out = subprocess.run([squeue, "-h", "-r", "-o", "%i", "-u", getpass.getuser()], capture_output=True,
                             text=True, timeout=60)          # one line per array task, pending ones too
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("squeue failed (%s): treating submitted cases as ended", err)
        return set()
    listed = set(out.stdout.split())
    return {case for job_id, case in ids.items() if job_id in listed}
