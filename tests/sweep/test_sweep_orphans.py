"""A sweep case is never run twice at once, and never outlives its sweep (issue 19, defect 7, sweep part).

The case command is a tiny Python script, as in test_sweep_run.py; the death-signal tests start a
sleeping Python child exactly as :func:`vlmlab.sweep.case._popen` starts papermill, from a parent
process that the test then SIGKILLs.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from vlmlab import cli
from vlmlab.sweep import CaseJob, case_status, load_sweep, run_case, run_sweep
from vlmlab.sweep.case import LOCK, RUNNING_ELSEWHERE
from vlmlab.sweep.grid import Case
from vlmlab.sweep.guard import die_with_parent, locked

# Writes its table and provenance, after waiting for `<case dir>/go` when params say so.
FAKE_NOTEBOOK = r"""
import json, pathlib, sys, time
out, params = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
(out / "started").write_text("1")
while params.get("wait") and not (out / "go").exists():
    time.sleep(0.05)
(out / "tables").mkdir(parents=True, exist_ok=True)
(out / "tables" / "t.csv").write_text(f"x\n{params['seed']}\n")
(out / "provenance.json").write_text("{}")
"""


def job(tmp_path, params, cid="case-0000abcd"):
    return CaseJob(Case(cid, params, params), tmp_path / "nb.ipynb", None, "b" * 12, "tiny", tmp_path / cid)


def _hold_lock(folder: Path) -> int:
    """Lock ``folder/.lock`` the way another sweep does; close the descriptor to release it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _wait_for(predicate, limit_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s} s waiting for {what}")
        time.sleep(0.05)


# ---- the case lock ----------------------------------------------------------------------------

def test_a_locked_case_is_reported_running_elsewhere_and_not_started(tmp_path, fake_notebook):
    j = job(tmp_path, {"seed": 0})
    fd = _hold_lock(j.dir)
    try:
        assert case_status(j) == "running"
        res = run_case(j)
        assert res.status == RUNNING_ELSEWHERE and str(j.dir / LOCK) in res.error
        assert not (j.dir / "started").exists() and not (j.dir / "case.json").exists(), "the case was started"
    finally:
        os.close(fd)
    assert not locked(j.dir / LOCK) and case_status(j) == "incomplete"
    assert run_case(j).status == "complete" and case_status(j) == "complete"
    assert not locked(j.dir / LOCK), "a finished case keeps its lock"


def test_a_running_case_holds_its_lock_so_a_second_run_does_not_start_it(tmp_path, fake_notebook):
    j = job(tmp_path, {"seed": 1, "wait": True})
    first: list = []
    thread = threading.Thread(target=lambda: first.append(run_case(j)))
    thread.start()
    try:
        _wait_for(lambda: (j.dir / "started").exists(), what="the first run to start")
        (j.dir / "started").unlink()
        assert case_status(j) == "running"
        assert run_case(j).status == RUNNING_ELSEWHERE
        assert not (j.dir / "started").exists(), "the second run started the case again"
    finally:
        (j.dir / "go").write_text("1")
        thread.join(60)
    assert first[0].status == "complete" and case_status(j) == "complete"


def test_a_sweep_skips_the_case_another_sweep_runs(tmp_path, fake_notebook):
    path = tmp_path / "s.yaml"
    path.write_text("notebook: 00_quickstart\nprofile: tiny\ngrid: {seed: [0, 1]}\n")
    sweep = load_sweep(path, results_root=tmp_path / "results")
    ids = {c.params["seed"]: c.id for c in sweep.expand()}
    fd = _hold_lock(sweep.dir / ids[1])
    try:
        report = run_sweep(sweep, workers=1)
    finally:
        os.close(fd)
    assert sorted((r.case_id, r.status) for r in report.results) == sorted(
        [(ids[0], "complete"), (ids[1], RUNNING_ELSEWHERE)])
    assert report.ok and "1 running elsewhere" in report.summary()
    assert not (sweep.dir / ids[1] / "started").exists()
    again = run_sweep(sweep, workers=1)                      # the lock is gone: the rerun runs it
    assert [(r.case_id, r.status) for r in again.results] == [(ids[1], "complete")]


# ---- dying with the sweep ---------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


PARENT = """
import os, sys, time
from vlmlab.sweep import case
pidfile, guarded = sys.argv[1], sys.argv[2] == "1"
child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)",
         pidfile]
if not guarded:
    case.die_with_parent = list
with open(os.devnull, "w") as log:
    case._popen(child, dict(os.environ), log)
"""


def _orphan_after_sigkill(tmp_path, guarded: bool) -> int:
    """Start a sleeping child the way cases start, SIGKILL its parent; return the child's pid."""
    pidfile = tmp_path / f"child-{guarded}.pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT), str(pidfile), str(int(guarded))],
                              stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: pidfile.is_file() and pidfile.read_text().strip(), what="the child to start")
        child = int(pidfile.read_text())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
    return child


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.timeout(120)
def test_a_case_process_exits_when_its_sweep_is_sigkilled(tmp_path):
    child = _orphan_after_sigkill(tmp_path, guarded=True)
    _wait_for(lambda: not _alive(child), limit_s=10, what=f"the orphaned case process {child} to exit")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.timeout(120)
def test_without_the_launcher_the_same_child_would_outlive_its_sweep(tmp_path):
    child = _orphan_after_sigkill(tmp_path, guarded=False)
    try:
        time.sleep(1.0)
        assert _alive(child), "the control child died on its own: the SIGKILL test above proves nothing"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_die_with_parent_runs_the_command_unchanged():
    out = subprocess.run(die_with_parent([sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b", "-x"]),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "['a b', '-x']", out.stderr


# ---- SIGHUP ---------------------------------------------------------------------------------

def test_sighup_stops_a_sweep_like_ctrl_c(monkeypatch):
    def hang_up(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(10)
        raise AssertionError("SIGHUP did not interrupt the sweep")

    monkeypatch.setattr(cli, "load_sweep", lambda *a, **k: object())
    monkeypatch.setattr(cli, "run_sweep", hang_up)
    before = signal.getsignal(signal.SIGHUP)
    assert cli.main(["sweep", "whatever.yaml"]) == 130
    assert signal.getsignal(signal.SIGHUP) is before, "main must restore the SIGHUP handler"
