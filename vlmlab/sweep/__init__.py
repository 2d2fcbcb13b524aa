"""Parameter sweeps over notebooks: a grid of papermill runs, locally in parallel or on SLURM.

A sweep file (``params/sweeps/<name>.yaml``) names a notebook, a base parameter file and a grid;
each grid point runs as one papermill case in ``results/<profile>/<notebook>/sweeps/<sweep>/<case>/``
with its own provenance. Command line: ``vlmlab sweep FILE`` and ``vlmlab collect FILE``
(``docs/sweeps.md``). From Python or a notebook::

    sweep = vlmlab.sweep.load_sweep("params/sweeps/embedded_small.yaml")
    report = vlmlab.sweep.run_sweep(sweep, workers=2)       # skips complete cases
    table = vlmlab.sweep.collect(sweep, "summary")          # grid parameters as columns

Modules: ``grid`` (file, expansion, case ids), ``case`` (one papermill run and its markers),
``executors`` (local pool, the run loop), ``slurm`` (submitit job array), ``collect`` (merged tables).
"""
from __future__ import annotations

from vlmlab.sweep.case import CaseJob, CaseResult, case_status, run_case
from vlmlab.sweep.collect import collect, rerun_claims, write_table
from vlmlab.sweep.executors import SweepReport, jobs_for, run_local, run_slurm, run_sweep, status_table, visible_gpus
from vlmlab.sweep.grid import Case, SlurmOptions, Sweep, SweepError, canonical_json, case_id, load_sweep

__all__ = ["Case", "CaseJob", "CaseResult", "SlurmOptions", "Sweep", "SweepError", "SweepReport", "canonical_json",
           "case_id", "case_status", "collect", "jobs_for", "load_sweep", "rerun_claims", "run_case", "run_local",
           "run_slurm", "run_sweep", "status_table", "visible_gpus", "write_table"]
