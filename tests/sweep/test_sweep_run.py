"""Case markers, skip-complete / rerun-failed, GPU pinning and SLURM job arrays, with stand-in commands.

The papermill command of each case is replaced by a tiny Python script that writes what a notebook
writes (a table, provenance.json) or fails on purpose, so these tests check the orchestration in
seconds; tests/sweep/test_sweep_papermill.py runs the real notebook.
"""
from __future__ import annotations

import csv
import json
import os
import stat
import threading
import time

import pandas as pd
import pytest

from vlmlab.cli import main
from vlmlab.sweep import CaseJob, case_status, jobs_for, load_sweep, run_case, run_sweep, status_table
from vlmlab.sweep import executors
from vlmlab.sweep.case import _env
from vlmlab.sweep.grid import Case

FAKE_NOTEBOOK = r"""
import json, pathlib, sys
out, params = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
print("Executing Cell 1", flush=True)
if params.get("seed") == 2:
    sys.stderr.write("Traceback (most recent call last):\nValueError: seed 2 fails on purpose\n")
    sys.exit(1)
(out / "tables").mkdir(parents=True, exist_ok=True)
(out / "tables" / "t.csv").write_text(f"x,y\n{params['seed']},{params.get('n_points', 0)}\n")
if params.get("finish", True):
    (out / "provenance.json").write_text("{}")
"""


def sweep_file(tmp_path, text, name="s"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_sweep(path, results_root=tmp_path / "results")


def job(tmp_path, params, digest="b" * 12, cid="case-0000abcd"):
    return CaseJob(Case(cid, params, params), tmp_path / "nb.ipynb", None, digest, "tiny", tmp_path / cid)


def test_markers_say_complete_only_after_exit_0_with_provenance(tmp_path, fake_notebook):
    ok = run_case(job(tmp_path, {"seed": 0}))
    assert ok.status == "complete" and ok.returncode == 0
    marker = json.loads((tmp_path / "case-0000abcd" / ".done").read_text())
    assert marker["case_id"] == "case-0000abcd" and marker["base_digest"] == "b" * 12
    assert case_status(job(tmp_path, {"seed": 0})) == "complete"
    assert case_status(job(tmp_path, {"seed": 0}, digest="c" * 12)) == "stale"      # base values changed

    unfinished = run_case(job(tmp_path, {"seed": 1, "finish": False}, cid="u-1111abcd"))
    assert unfinished.status == "failed" and "run.finish()" in unfinished.error
    assert not (tmp_path / "u-1111abcd" / ".done").exists()

    bad = run_case(job(tmp_path, {"seed": 2}, cid="f-2222abcd"))
    assert bad.status == "failed" and bad.returncode == 1
    assert bad.error == "ValueError: seed 2 fails on purpose"
    assert "ValueError" in bad.log.read_text()
    failed = json.loads((tmp_path / "f-2222abcd" / ".failed").read_text())
    assert failed["returncode"] == 1 and failed["tail"][-1] == "ValueError: seed 2 fails on purpose"
    assert case_status(job(tmp_path, {"seed": 2}, cid="f-2222abcd")) == "failed"

    (tmp_path / "i-3333abcd").mkdir()
    assert case_status(job(tmp_path, {}, cid="i-3333abcd")) == "incomplete"
    assert case_status(job(tmp_path, {}, cid="m-4444abcd")) == "missing"


def test_rerun_skips_complete_and_runs_failed_killed_and_missing(tmp_path, fake_notebook):
    sweep = sweep_file(tmp_path, "notebook: 00_quickstart\nprofile: tiny\ngrid: {seed: [0, 1, 2, 3]}\n")
    ids = {c.params["seed"]: c.id for c in sweep.expand()}
    first = run_sweep(sweep, workers=2)
    assert sorted((r.case_id, r.status) for r in first.results) == sorted(
        (ids[s], "failed" if s == 2 else "complete") for s in range(4))
    assert not first.ok and [r.case_id for r in first.failed] == [ids[2]]
    assert f"FAILED {ids[2]}: ValueError: seed 2 fails on purpose" in first.summary()
    assert str(sweep.dir / ids[2] / "papermill.log") in first.summary()

    (sweep.dir / ids[0] / ".done").unlink()                   # killed after the notebook, before the marker
    for path in (sweep.dir / ids[3]).rglob("*"):              # never started
        path.unlink() if path.is_file() else None
    for path in sorted((sweep.dir / ids[3]).rglob("*"), reverse=True):
        path.rmdir()
    (sweep.dir / ids[3]).rmdir()
    table = status_table(sweep).set_index("case_id").status
    assert [table[ids[s]] for s in range(4)] == ["incomplete", "complete", "failed", "missing"]
    kept = (sweep.dir / ids[1] / ".done").stat().st_mtime_ns

    second = run_sweep(sweep, workers=2)
    assert second.skipped == [ids[1]]
    assert sorted(r.case_id for r in second.results) == sorted([ids[0], ids[2], ids[3]])
    assert (sweep.dir / ids[1] / ".done").stat().st_mtime_ns == kept
    assert run_sweep(sweep, rerun_all=True).skipped == []


def test_submitit_debug_executor_reruns_only_what_is_not_complete(tmp_path, fake_notebook, capsys):
    pytest.importorskip("submitit")
    path = tmp_path / "d.yaml"
    path.write_text("notebook: 00_quickstart\nprofile: tiny\ngrid: {seed: [1, 2, 3]}\n")
    ids = {c.params["seed"]: c.id for c in load_sweep(path).expand()}
    args = ["sweep", str(path), "--results-root", str(tmp_path / "r"), "--executor", "slurm", "--cluster", "debug"]
    assert main(args) == 1                                     # seed 2 fails on purpose: exit status 1
    out = capsys.readouterr().out
    assert "2 complete, 1 failed, 0 already complete" in out and f"FAILED {ids[2]}" in out
    sweep_dir = tmp_path / "r" / "tiny" / "00_quickstart" / "sweeps" / "d"
    assert f"log: {sweep_dir / ids[2] / 'papermill.log'}" in out
    kept = (sweep_dir / ids[1] / ".done").stat().st_mtime_ns
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 failed, 2 already complete" in out
    assert pd.read_csv(sweep_dir / "slurm_jobs.csv").case_id.tolist() == [ids[2]]   # one task submitted
    assert (sweep_dir / ids[1] / ".done").stat().st_mtime_ns == kept


def test_local_workers_are_pinned_to_distinct_gpus(tmp_path, monkeypatch):
    spans, lock = [], threading.Lock()

    def fake_run_case(job, gpu=None, threads=None, stop=None):
        start = time.perf_counter()
        time.sleep(0.15)
        with lock:
            spans.append((gpu, start, time.perf_counter(), threads))
        return executors.CaseResult(job.case.id, "complete", 0, 0.15, None, "", gpu)

    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "3"])
    monkeypatch.setattr(executors, "run_case", fake_run_case)
    sweep = sweep_file(tmp_path, "notebook: 00_quickstart\ngrid: {seed: [0, 1, 2, 3, 4, 5]}\n")
    results = executors.run_local(jobs_for(sweep))            # default workers: one per GPU
    assert len(results) == 6 and {g for g, *_ in spans} == {"0", "3"}
    assert all(t is None for *_, t in spans)                  # GPUs: no CPU thread split
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, "the two workers never ran at the same time"
    assert all(a[0] != b[0] for a, b in overlapping), "two concurrent cases on one GPU"


def test_case_environment_pins_the_gpu_and_batch_mode(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _env("3", 4)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["VLMLAB_BATCH"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["OMP_NUM_THREADS"] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")                # the user's setting wins
    assert _env(None, 4)["OMP_NUM_THREADS"] == "7"


@pytest.mark.parametrize("value, gpus", [("0,2", ["0", "2"]), ("", []), ("-1", []), ("1", ["1"])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, value, gpus):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert executors.visible_gpus() == gpus


def test_gpu_slots_round_robin():
    assert executors.gpu_slots(["0", "1"], 3) == ["0", "1", "0"]
    assert executors.gpu_slots([], 2) == [None, None]


def _fake_slurm_bin(tmp_path, monkeypatch):
    """srun / sbatch / squeue stand-ins on PATH: sbatch keeps each script and answers a job id."""
    bin_dir, capture = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    capture.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f'#!/bin/sh\nn=$(ls "{capture}" | grep -c "\\.sh$")\ncp "$1" "{capture}/$n.sh"\n'
                  'echo "Submitted batch job $((4242 + n))"\n',
        "squeue": f'#!/bin/sh\ncat "{capture}/queue.txt" 2>/dev/null\nexit 0\n'}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return capture


def test_slurm_submits_one_job_array_and_leaves_queued_tasks_alone(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    capture = _fake_slurm_bin(tmp_path, monkeypatch)
    sweep = sweep_file(tmp_path, "notebook: 00_quickstart\nprofile: tiny\ngrid: {seed: [0, 1, 2]}\nslurm:\n"
                                 "  {partition: gpu, timeout_min: 30, gpus_per_node: 1, mem_gb: 8, array_parallelism: 2,"
                                 " setup: [module load cuda], additional_parameters: {gres: 'gpu:a100:1'}}\n")
    report = run_sweep(sweep, executor="slurm", wait=False)
    assert [r.status for r in report.results] == ["submitted"] * 3 and report.ok
    script = (capture / "0.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=30", "#SBATCH --mem=8GB", "#SBATCH --gres=gpu:a100:1",
                 "#SBATCH --job-name=vlmlab-s", "module load cuda"):
        assert line in script, line
    with open(sweep.dir / "slurm_jobs.csv") as f:
        rows = list(csv.DictReader(f))
    ids = [c.id for c in sweep.expand()]
    assert [(r["case_id"], r["job_id"]) for r in rows] == [(ids[i], f"4242_{i}") for i in range(3)]
    assert set(status_table(sweep).status) == {"submitted"}

    (capture / "queue.txt").write_text("4242_1\n4242_2\n")   # task 0 ended without markers (killed)
    again = run_sweep(sweep, executor="slurm", wait=False)
    assert [r.case_id for r in again.results] == [ids[0]]
    assert "--array" not in (capture / "1.sh").read_text()   # a single case is a plain job
