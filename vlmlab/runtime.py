"""Runtime services: seeds, devices, logging, progress bars, cache and data roots, CPU worker processes.

Progress bars follow ../shared/papers/practical_notes.md §6.3: ``tqdm.auto`` (a widget in
JupyterLab) when interactive, and a plain text bar on stderr that refreshes at most every
``mininterval`` seconds when ``VLMLAB_BATCH=1`` (set by the Makefile, papermill runs and tests),
because papermill's log never shows widget bars.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


def batch_mode() -> bool:
    """True when running unattended (Makefile, papermill batch, tests)."""
    return os.environ.get("VLMLAB_BATCH", "") not in ("", "0", "false", "False")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             disable: bool | None = None, **kwargs) -> Iterable[T]:
    """A progress bar that shows in JupyterLab and in papermill's ``--log-output``.

    Args:
        iterable: what to iterate over (or ``None`` for a manual bar with ``update``).
        desc: label shown left of the bar.
        total: length, if ``iterable`` has none.
        disable: force off; default off when ``VLMLAB_PROGRESS=0``.
    """
    if disable is None:
        disable = os.environ.get("VLMLAB_PROGRESS", "1") == "0"
    if batch_mode():
        from tqdm.std import tqdm as bar
        kwargs.setdefault("mininterval", float(os.environ.get("TQDM_MININTERVAL", 10)))
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm.auto import tqdm as bar
    return bar(iterable, desc=desc, total=total, disable=disable, **kwargs)


def get_logger(name: str = "vlmlab") -> logging.Logger:
    """The package logger; configures one stderr handler on first use."""
    root = logging.getLogger("vlmlab")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("VLMLAB_LOGLEVEL", "INFO"))
        root.propagate = False
    return logging.getLogger(name if name.startswith("vlmlab") else f"vlmlab.{name}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={spec!r} asked for but no CUDA GPU is visible; use device='cpu' or 'auto'")
    return torch.device(spec)


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has oneDNN bf16 kernels (x86 with AVX-512). With AVX512_BF16 or AMX they run bf16
    matrix products at several times fp32's rate (5x on an AVX512_BF16 core, ``bench_coop_roofline``).

    Without them (AVX2-only x86, most ARM) torch's fallback runs bf16 products about 40x slower than fp32
    (measured with oneDNN switched off: 2.8 against 113 GFLOP/s). Asked once per process: a hardware fact,
    and ``effective_precision`` asks it at every ``autocast`` (every training step).
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_WARNED_BF16 = False


def effective_precision(device: torch.device, precision: str = "fp32") -> str:
    """The precision forward passes actually run at: ``precision`` on CUDA; on the CPU bf16 or fp32.

    The CPU runs ``"bf16"`` as asked where it has bf16 kernels (``cpu_has_bf16``; about 5x fp32's
    matrix-product rate on an AVX512_BF16 core), else fp32 with a warning: emulated bf16 would be ~40x
    slower. ``"fp16"`` runs fp32 on the CPU (no fast fp16 kernels: about 2 GFLOP/s against 100).
    """
    global _WARNED_BF16
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {sorted(PRECISIONS)}")
    if torch.device(device).type == "cuda":
        return precision
    if precision == "bf16" and not cpu_has_bf16():
        if not _WARNED_BF16:
            get_logger().warning("precision bf16: this CPU has no bf16 kernels, running fp32 instead (results differ "
                                 "from a bf16 run by up to about a point; docs/fidelity.md)")
            _WARNED_BF16 = True
        return "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast(device: torch.device, precision: str = "fp32"):
    """Autocast to ``effective_precision(device, precision)`` (fp32: off); on the CPU only bf16 autocasts.

    One policy for every method: the precision is the model bundle's (``load_clip(precision=...)``,
    ``bundle.autocast()``), set per notebook by its ``precision`` parameter; docs/fidelity.md lists
    what each method's official code uses. ``effective_precision`` says what runs where.
    """
    run = effective_precision(device, precision)
    if run == "fp32":
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[run])


FETCH_HINT = ("`vlmlab data status --profile paper` lists every missing dataset and weight file; "
              "`vlmlab data fetch NAME` (or `make data PROFILE=paper`) downloads the public ones")


def cache_root() -> Path:
    """Where cached features, corrupted images and world pools live (``$VLMLAB_CACHE``)."""
    root = Path(os.environ.get("VLMLAB_CACHE", REPO_ROOT / ".cache" / "vlmlab")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The user's data root for the paper profile: ``path``, else ``$VLMLAB_DATA``, else ``~/data``."""
    return Path(path or os.environ.get("VLMLAB_DATA", "~/data")).expanduser()


def set_threads(n: int | None = None) -> None:
    """Limit torch CPU threads (``$VLMLAB_THREADS``), useful when several runs share a machine."""
    n = n or int(os.environ.get("VLMLAB_THREADS", 0))
    if n > 0:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------- worker processes
_CONTEXT: Any = None                          # what process_map's ``context`` is inside a worker


def exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """In a worker: exit as soon as the process ``parent`` is gone (a killed kernel must not leave busy orphans).

    A killed parent cannot shut its pool down, and its workers would go on with their queued jobs; a
    daemon thread notices the re-parenting (``os.getppid()`` changes) and ends the worker.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(parent: int, threads: int, context: Any) -> None:
    global _CONTEXT
    exit_with_parent(parent)
    torch.set_num_threads(threads)
    _CONTEXT = context


def _call(fn: Callable, item: Any) -> Any:
    return fn(_CONTEXT, item)


def thread_map(fn: Callable[[Any], T], items: Iterable, workers: int) -> list[T]:
    """``[fn(item) for item in items]`` in up to ``workers`` threads, for work that releases the GIL (PIL's
    decoding and resizing); results in ``items``' order. One worker or one item runs in this thread."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with cf.ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def process_map(fn: Callable[[Any, Any], T], items: Sequence, context: Any = None, workers: int = 1,
                threads: int | None = None, desc: str = "", cost: Callable[[Any], float] | None = None,
                on_result: Callable[[int, T], None] | None = None) -> list[T]:
    """``[fn(context, item) for item in items]``, in ``workers`` spawned CPU processes when ``workers > 1``.

    ``fn`` must be a module-level function; ``context`` (a model, say) is sent once to each worker,
    each item once to the worker that takes it. ``threads``: torch threads per worker (default: this
    process's threads split between the workers); with one worker, this process's threads while the
    items run (default: unchanged). ``cost(item)``: workers take the costliest items first (less idle
    time at the end). Results come back in ``items``' order, so they do not depend on the number of
    workers as long as ``fn`` seeds what it draws. ``on_result(i, result)`` is called in this process as each
    item finishes (to keep results as they come: an interrupted map loses only the unfinished items).
    """
    items = list(items)
    keep = on_result or (lambda i, r: None)
    workers = min(workers, len(items))
    if workers <= 1:
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            out = []
            for i, x in enumerate(progress(items, desc=desc, total=len(items))):
                out.append(fn(context, x))
                keep(i, out[-1])
            return out
        finally:
            torch.set_num_threads(before)
    threads = threads or max(1, torch.get_num_threads() // workers)
    order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else range(len(items))
    out: list = [None] * len(items)
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                initargs=(os.getpid(), threads, context)) as pool:
        futures = {pool.submit(_call, fn, items[i]): i for i in order}
        for fut in progress(cf.as_completed(futures), desc=f"{desc} ({workers} workers)", total=len(items)):
            out[futures[fut]] = fut.result()
            keep(futures[fut], out[futures[fut]])
    return out
