"""Training state kept on disk while a long training runs, so a run stopped part-way resumes.

A trainer given a ``checkpoint`` file writes its whole state there every few minutes (``Checkpoint.save``;
``save_state``, atomically: an interruption mid-write leaves the previous file whole) and, when started again
on the same file, reads it back (``Checkpoint.load``; ``load_state``) and continues after the saved epoch, to
the result of a run never stopped. A keyed run keeps the file in the run cache beside the entry it will be stored as
(``checkpoint_path``) and deletes it once stored. Used by CoOp's ``train_coop`` (an exact-mode run on
ImageNet takes about an hour on a GPU), visual prompting's ``train_prompt`` (1,000 epochs, hours), and notebook
02's episodic and TDA streams (``vlmlab.tta.base.run_stream``: TPT on one ImageNet-C corruption, about an hour)
and 64-view encoding (``vlmlab.tta.evaluate.cached_views``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from vlmlab.results import atomic_path, read_cached
from vlmlab.runtime import get_logger

log = get_logger("vlmlab.checkpoints")


def checkpoint_path(cache, key: dict) -> Path:
    """The state file of the run stored under ``key`` in ``cache`` (a ``FeatureCache``), beside its entry."""
    return cache.root / f"{cache.digest(key)}.training.pt"


def save_state(path: Path | str, state: dict) -> None:
    """Write a training state (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically."""
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load_state(path: Path | str, expect: dict, what: str) -> dict | None:
    """The state saved at ``path`` whose ``"expect"`` entry equals ``expect`` (the run it belongs to), else None:
    no file, a damaged one (deleted, with a warning: ``read_cached``) or another run's (a warning). Read with
    ``torch.load(weights_only=True)``."""
    state = read_cached(Path(path), lambda p: torch.load(p, map_location="cpu", weights_only=True), what)
    if state is not None and state.get("expect") != expect:
        log.warning("%s %s belongs to another run; starting afresh", what, path)
        return None
    return state


class Checkpoint:
    """A trainer's checkpoint file, or none (``path`` None: every call does nothing).

    ``expect`` names the run the state belongs to (its config, seed, ...): ``load`` returns only a state saved
    with the same ``expect``. ``save(state, last)`` writes ``state()`` after an epoch once ``every_s`` seconds
    have passed since the last write (or since the start), and always after the last epoch.
    """

    def __init__(self, path: Path | str | None, expect: dict, what: str, every_s: float = 300.0):
        self.path = None if path is None else Path(path)
        self.expect, self.what, self.every_s = expect, what, every_s
        self._saved = time.monotonic()

    def load(self) -> dict | None:
        """The state saved for this run (``load_state``), or None."""
        state = None if self.path is None else load_state(self.path, self.expect, self.what)
        self._saved = time.monotonic()
        return state

    def save(self, state: Callable[[], dict], last: bool = False) -> None:
        """Write ``state()`` (with ``expect``) when due; ``state`` is only called then."""
        if self.path is None or not (last or time.monotonic() - self._saved >= self.every_s):
            return
        save_state(self.path, {"expect": self.expect, **state()})
        self._saved = time.monotonic()
