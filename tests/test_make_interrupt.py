"""`make reproduce` leaves its target only after a finished run (issue 19, defect 1).

Papermill rewrites the output notebook as it exits, even on Ctrl-C, with the cells that never ran
marked as executed; when that file was the make target, the next `make reproduce` took the
interrupted run for a finished one. These tests run the real Makefile on the tiny profile, into a
temporary RESULTS_DIR. ``VLMLAB_TEST_MAKEFILE=/path/to/Makefile`` runs them against another Makefile
(an old one, to see the interrupt test fail).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmlab.runtime import REPO_ROOT

MAKEFILE = Path(os.environ.get("VLMLAB_TEST_MAKEFILE", REPO_ROOT / "Makefile"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")]


def _make(results: Path, kernel: str, notebook: str, *args: str) -> list[str]:
    """The make command line for one notebook of the tiny profile, writing under ``results``."""
    return ["make", "-f", str(MAKEFILE), *args, "PROFILE=tiny", f"NOTEBOOKS={notebook}", f"PY={sys.executable}",
            f"RESULTS_DIR={results}", f"KERNEL={kernel}"]


def _default_sigint() -> None:
    """In the child: Ctrl-C acts as in a terminal, even if this process ignores SIGINT (ignoring is inherited)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until_running(proc: subprocess.Popen, log: Path, limit_s: float = 120,
                        cell: int = 6) -> None:
    """Return once papermill logs that it executes cell ``cell`` (of about 20), well inside the notebook.

    The log, not the results folder, is the signal: with warm caches the tiny notebook runs in about
    8 s and creates ``tables/`` near its end, so waiting for that folder let the run finish first.
    """
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make exited ({proc.returncode}) before the interrupt:\n{log.read_text()[-3000:]}")
        if f"Executing Cell {cell}-" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    pytest.fail(f"the notebook did not reach cell {cell} within {limit_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(400)
def test_ctrl_c_during_reproduce_leaves_no_target_and_the_rerun_reruns(tmp_path, kernel_name):
    nb = "01_uniformity_analysis"
    results, out = tmp_path / "results", tmp_path / "results" / "tiny" / nb
    log = tmp_path / "make.log"
    with open(log, "w") as log_file:                    # own group: SIGINT to it is the terminal's Ctrl-C
        proc = subprocess.Popen(_make(results, kernel_name, nb, "reproduce"), cwd=REPO_ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_default_sigint)
        try:
            _wait_until_running(proc, log)
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode != 0, log.read_text()[-3000:]
    assert not (out / "provenance.json").exists(), "the run finished before the interrupt: nothing was tested"
    assert not (out / "executed.ipynb").exists(), "an interrupted run left the make target executed.ipynb"

    question = subprocess.run(_make(results, kernel_name, nb, "-q", str(out / "executed.ipynb")), cwd=REPO_ROOT,
                              capture_output=True, text=True)
    assert question.returncode == 1, f"make -q says the interrupted notebook is up to date: {question.stderr}"
    dry = subprocess.run(_make(results, kernel_name, nb, "-n", "reproduce"), cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert f"-m papermill notebooks/{nb}.ipynb" in dry.stdout, "the rerun would not run the notebook again"


@pytest.mark.timeout(300)
def test_a_finished_reproduce_leaves_the_executed_notebook_and_provenance(tmp_path, kernel_name):
    nb = "00_quickstart"
    results, out = tmp_path / "results", tmp_path / "results" / "tiny" / nb
    done = subprocess.run(_make(results, kernel_name, nb, "reproduce"), cwd=REPO_ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (out / "executed.ipynb").is_file() and (out / "provenance.json").is_file()
    assert not (out / "executed.partial.ipynb").exists(), "the finished run's notebook was not renamed"
    assert (out / "executed.ipynb").stat().st_mtime >= (out / "provenance.json").stat().st_mtime
