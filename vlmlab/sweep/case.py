"""One sweep case: its papermill command, its run, and the markers that say how it went.

The folder of a case, ``<sweep dir>/<case id>/``::

    case.json        id, parameters (all and varying), base file, command; written before the run
    papermill.log    papermill --log-output: cell outputs and the traceback of a failure
    executed.ipynb   the executed notebook
    tables/ figures/ metrics.json provenance.json    what the notebook writes (vlmlab.results.Run)
    .done            written atomically once papermill exited 0 and provenance.json exists
    .failed          written when it did not: return code, reason, the log's last lines
    .submitted       SLURM only: the array task's job id, from submission until the task ends
    .lock            flock'ed by the sweep running the case, and by its papermill process, until both end

A case is *complete* when ``provenance.json`` (written by ``Run.finish()``, deleted when a run
starts) and ``.done`` both exist and ``.done`` names this case id and the base file's current
values. Anything else runs again: *failed* (``.failed``), *incomplete* (a folder without
markers: the sweep was killed), *missing* (no folder), *stale* (the base file's values changed),
except a *submitted* case whose SLURM task is still queued or running, and a *running* one: another
sweep holds its ``.lock`` (``fcntl.flock``, exclusive, non-blocking), so this one reports it as
``running elsewhere`` instead of starting it a second time in the same folder.

A case does not outlive its sweep. Papermill runs in a process group of its own (so Ctrl-C reaches
it only through :func:`terminate_running`, which shuts its kernel down); SIGTERM and SIGHUP of the
``vlmlab`` command go the same way (``vlmlab.cli``). A sweep that is SIGKILLed cannot stop anything,
so on Linux the case is started through a launcher that sets ``prctl(PR_SET_PDEATHSIG, SIGTERM)``
before it execs papermill: the kernel sends papermill SIGTERM when the sweep dies, and the Jupyter
kernel, which polls its parent (ipykernel's ``ParentPollerUnix``), exits a second later.

The command is ``python -m papermill NB OUT -k KERNEL --cwd notebooks -f BASE -y CASE_YAML
-r out_dir CASE_DIR -r profile PROFILE [-r device D] --log-output``; papermill's precedence
(-f < -y < -r) makes the case's values win over the base file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from vlmlab.results import atomic_path
from vlmlab.runtime import REPO_ROOT, get_logger
from vlmlab.sweep.grid import Case
from vlmlab.sweep.guard import acquire, die_with_parent, locked

__all__ = ["CaseJob", "CaseResult", "run_case", "case_status", "log_result", "mark_failed", "failure_info", "terminate_running",
           "DONE", "FAILED", "LOG", "SUBMITTED", "LOCK", "RUNNING_ELSEWHERE"]

log = get_logger("vlmlab.sweep")

DONE, FAILED, LOG, CASE_JSON, PROVENANCE = ".done", ".failed", "papermill.log", "case.json", "provenance.json"
SUBMITTED, LOCK = ".submitted", ".lock"
RUNNING_ELSEWHERE = "running elsewhere"
TAIL_LINES = 20
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_MUTEX = threading.Lock()


@dataclass(frozen=True)
class CaseJob:
    """Everything needed to run one case anywhere (picklable: submitit ships it to SLURM).

    Attributes:
        case: the grid point.
        notebook: ``notebooks/<nb>.ipynb`` (absolute).
        base: the base parameter file passed with ``-f`` (None: no file).
        base_digest: hash of the base file's values, recorded in ``.done``.
        profile, dir, kernel, device, execution_timeout: as in the sweep.
    """

    case: Case
    notebook: Path
    base: Path | None
    base_digest: str
    profile: str
    dir: Path
    kernel: str = "python3"
    device: str | None = None
    execution_timeout: int | None = None

    def command(self, python: str | None = None) -> list[str]:
        """The papermill command line (``python`` defaults to this interpreter)."""
        cmd = [python or sys.executable, "-m", "papermill", str(self.notebook), str(self.dir / "executed.ipynb"),
               "-k", self.kernel, "--cwd", str(self.notebook.parent), "--log-output"]
        if self.base is not None:
            cmd += ["-f", str(self.base)]
        if self.case.params:
            cmd += ["-y", yaml.safe_dump(self.case.params, sort_keys=True, default_flow_style=True).strip()]
        cmd += ["-r", "out_dir", str(self.dir), "-r", "profile", self.profile]
        if self.device:
            cmd += ["-r", "device", str(self.device)]
        if self.execution_timeout:
            cmd += ["--execution-timeout", str(int(self.execution_timeout))]
        return cmd


@dataclass(frozen=True)
class CaseResult:
    """How one run of a case ended.

    Attributes:
        status: ``complete`` | ``failed`` | ``interrupted`` | ``submitted`` | ``running elsewhere`` (another
            sweep holds the case's lock; nothing was started).
        log: the papermill log (or submitit's log for a job that died outside papermill).
        error: the last exception line of the log, or why the case did not complete.
    """

    case_id: str
    status: str
    returncode: int | None = None
    wall_s: float = 0.0
    log: Path | None = None
    error: str = ""
    gpu: str | None = None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def case_status(job: CaseJob) -> str:
    """``running`` | ``complete`` | ``stale`` | ``failed`` | ``submitted`` | ``incomplete`` | ``missing``.

    See the module docstring; ``running``: another process holds the case's ``.lock``.
    """
    if locked(job.dir / LOCK):
        return "running"
    done = job.dir / DONE
    if done.is_file() and (job.dir / PROVENANCE).is_file():
        marker = _read_json(done)
        ok = marker.get("case_id") == job.case.id and marker.get("base_digest") == job.base_digest
        return "complete" if ok else "stale"
    if (job.dir / FAILED).is_file():
        return "failed"
    if (job.dir / SUBMITTED).is_file():
        return "submitted"
    return "incomplete" if job.dir.exists() else "missing"


def failure_info(job: CaseJob) -> dict:
    """The ``.failed`` marker's content ({} when there is none)."""
    return _read_json(job.dir / FAILED)


def _error_line(tail: list[str]) -> str:
    for line in reversed(tail):
        text = line.strip()
        if text and (":" in text and text.split(":", 1)[0].replace(".", "").isidentifier()
                     and text.split(":", 1)[0].endswith(("Error", "Exception", "Interrupt", "Exit"))):
            return text
    return next((t.strip() for t in reversed(tail) if t.strip()), "")


def _tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _env(gpu: str | None, threads: int | None) -> dict[str, str]:
    env = dict(os.environ, VLMLAB_BATCH="1", HF_HUB_OFFLINE="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:                                  # CPU workers share the cores; the user's setting wins
        for key in ("OMP_NUM_THREADS", "VLMLAB_THREADS"):
            env.setdefault(key, str(threads))
    return env


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT the case's process group (papermill shuts its kernel down), then TERM, then KILL."""
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def terminate_running() -> int:
    """Stop every case this process is running (Ctrl-C, SIGTERM); returns how many."""
    with _RUNNING_MUTEX:
        procs = list(_RUNNING)
    threads = [threading.Thread(target=_stop, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(procs)


def _popen(cmd: list[str], env: dict, log_file, lock_fd: int | None = None) -> int:
    """Run ``cmd`` in its own process group, dying with this process; it inherits the case lock ``lock_fd``."""
    proc = subprocess.Popen(die_with_parent(cmd), cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,   # own group: we stop it
                            pass_fds=() if lock_fd is None else (lock_fd,))
    with _RUNNING_MUTEX:
        _RUNNING.add(proc)
    try:
        return proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        with _RUNNING_MUTEX:
            _RUNNING.discard(proc)


def run_case(job: CaseJob, gpu: str | None = None, threads: int | None = None,
             stop: threading.Event | None = None) -> CaseResult:
    """Run one case with papermill and mark it ``.done`` or ``.failed``; never raises on failure.

    Args:
        job: the case.
        gpu: CUDA_VISIBLE_DEVICES for the run (None: leave as is, e.g. under SLURM).
        threads: OMP_NUM_THREADS / VLMLAB_THREADS unless already set (CPU workers side by side).
        stop: when set while the case runs (the sweep was interrupted), no marker is written.

    A case whose ``.lock`` another process holds is not started: the result is ``running elsewhere``.
    """
    try:
        job.dir.mkdir(parents=True, exist_ok=True)
        lock_fd = acquire(job.dir / LOCK, log)
    except OSError as err:
        return mark_failed(job, None, 0.0, f"could not create or lock {job.dir / LOCK}: {err}", gpu)
    if lock_fd is None:
        log.warning("case %s is running elsewhere (another sweep holds %s); not started", job.case.id,
                    job.dir / LOCK)
        return CaseResult(job.case.id, RUNNING_ELSEWHERE, log=job.dir / LOG, gpu=gpu,
                          error=f"another sweep holds {job.dir / LOCK}")
    try:
        return _run_case(job, gpu, threads, stop, lock_fd)
    finally:
        (job.dir / SUBMITTED).unlink(missing_ok=True)
        os.close(lock_fd)


def _run_case(job: CaseJob, gpu: str | None, threads: int | None, stop: threading.Event | None,
              lock_fd: int) -> CaseResult:
    log_path = job.dir / LOG
    try:
        for marker in (DONE, FAILED):          # .submitted stays until the task ends (a rerun skips it)
            (job.dir / marker).unlink(missing_ok=True)
        cmd = job.command()
        _write_json({"case_id": job.case.id, "notebook": job.notebook.stem, "profile": job.profile,
                     "base": job.base, "params": job.case.params, "varying": job.case.varying,
                     "command": shlex.join(cmd)}, job.dir / CASE_JSON)
        t0 = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log_file:
            log_file.write(f"$ {shlex.join(cmd)}\n")
            log_file.flush()
            rc = _popen(cmd, _env(gpu, threads), log_file, lock_fd)
        wall = round(time.perf_counter() - t0, 3)
    except Exception as err:                       # noqa: BLE001  (a SLURM task must report, not raise)
        return mark_failed(job, None, 0.0, f"could not run papermill: {type(err).__name__}: {err}", gpu)
    if stop is not None and stop.is_set():
        return CaseResult(job.case.id, "interrupted", rc, wall, log_path, "sweep interrupted", gpu)
    if rc == 0 and (job.dir / PROVENANCE).is_file():
        _write_json({"case_id": job.case.id, "base_digest": job.base_digest, "wall_s": wall, "gpu": gpu,
                     "host": socket.gethostname(),
                     "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                    job.dir / DONE)
        return CaseResult(job.case.id, "complete", rc, wall, log_path, "", gpu)
    reason = (_error_line(_tail(log_path)) if rc != 0 else
              "papermill exited 0 but provenance.json is missing: the notebook must end with run.finish()")
    return mark_failed(job, rc, wall, reason or f"papermill exited {rc}", gpu)


def log_result(res: CaseResult) -> CaseResult:
    """Log how a case ended (failures with their log path); returns ``res``."""
    if res.status == "complete":
        log.info("case %s complete in %.1f s%s", res.case_id, res.wall_s, f" (GPU {res.gpu})" if res.gpu else "")
    elif res.status == "failed":
        log.error("case %s FAILED (%s); log: %s", res.case_id, res.error, res.log)
    elif res.status == RUNNING_ELSEWHERE:
        log.warning("case %s is running elsewhere (%s); rerun the sweep once it ends", res.case_id, res.error)
    return res


def mark_failed(job: CaseJob, rc: int | None, wall: float, reason: str, gpu: str | None) -> CaseResult:
    log_path = job.dir / LOG
    try:
        _write_json({"case_id": job.case.id, "returncode": rc, "wall_s": wall, "error": reason, "log": log_path,
                     "tail": _tail(log_path), "host": socket.gethostname(),
                     "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                    job.dir / FAILED)
    except OSError as err:
        log.error("could not write %s: %s", job.dir / FAILED, err)
    return CaseResult(job.case.id, "failed", rc, wall, log_path, reason, gpu)
