"""Keep one sweep case to one process tree: the case lock, and a launcher that dies with its sweep.

``locked`` / ``acquire``: ``<case dir>/.lock`` under ``fcntl.flock`` (exclusive, non-blocking). flock
locks belong to the open file, so a papermill process that inherits the descriptor keeps the case
locked until it exits too, even when the sweep that started it was killed first.

``die_with_parent``: Linux's ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (prctl(2)), set by a tiny launcher
that then execs the case's command, the way ``vlmlab.runtime.exit_with_parent`` guards pool workers
but without a polling thread in the child. It is set in the launcher rather than in a ``preexec_fn``,
which is unsafe in a process with threads (the local executor runs cases from a thread pool).
"""
from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["locked", "acquire", "die_with_parent", "PR_SET_PDEATHSIG"]

PR_SET_PDEATHSIG = 1                          # <linux/prctl.h>
# Runs as `python -I -S -c _LAUNCHER PARENT_PID CMD...`: arm the death signal, then become CMD (same pid,
# so the signal and the inherited case lock stay with papermill). A parent that died before prctl is caught
# by the getppid check.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    f"if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, int(signal.SIGTERM), 0, 0, 0) != 0:\n"
    "    sys.exit('vlmlab case launcher: prctl(PR_SET_PDEATHSIG) failed, errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('vlmlab case launcher: the sweep exited before the case started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n")


def locked(path: Path) -> bool:
    """True while some process holds the case lock ``path`` (a shared probe, released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:                            # a file system without flock: no lock to see
        return False
    finally:
        os.close(fd)


def acquire(path: Path, log: logging.Logger, tries: int = 5) -> int | None:
    """An open descriptor holding the exclusive lock ``path``; None when another process holds it.

    A few short retries step over another sweep's :func:`locked` probe. On a file system without
    flock (some NFS or Lustre mounts) the case runs unlocked, with a warning.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for _ in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.05)
        except OSError as err:
            log.warning("cannot lock %s (%s); this case runs without its lock", path, err)
            return fd
    os.close(fd)
    return None


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` behind the launcher that makes it exit (SIGTERM) when this process dies, even by SIGKILL.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere ``cmd`` unchanged. The signal is tied to the
    thread that starts the child; ``vlmlab.sweep.case._popen`` waits for the child in that thread, so
    the signal fires when this process dies, not before.
    """
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *cmd]
