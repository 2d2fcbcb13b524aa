"""Run artifacts: one folder per profile and notebook, with figures, tables and provenance.

``Run("02_uniinfo_tta", P)`` writes under ``P.out_dir`` when set (the Makefile and the tests
set it), else ``results/<profile>/<notebook>/`` in the repository::

    figures/<name>.png, .pdf     save_figure
    tables/<name>.csv, .md       save_table
    <name>.json                  save_json
    metrics.json                 log_metric, rewritten on every call
    provenance.json              finish(): parameters, versions, git commit, device, wall time

Every file is written to a temporary name and renamed, so a reader never sees half a file.
``provenance.json`` is deleted when a run starts and written only by ``finish()``: its
presence means the run completed. The papers' published numbers live in
``params/published/<notebook>.csv``; :func:`side_by_side` puts them beside ours.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import pandas as pd

from vlmlab.runtime import REPO_ROOT, get_logger

__all__ = ["Run", "published", "side_by_side", "atomic_path", "read_cached"]

T = TypeVar("T")

log = get_logger("vlmlab.results")

DISTRIBUTIONS = ("torch", "torchvision", "open_clip_torch", "numpy", "pandas", "papermill", "vlmlab")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results should read like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_cached(path: Path, load: Callable[[Path], T], what: str) -> T | None:
    """``load(path)``, or ``None`` for a miss: no file, or a damaged one.

    The reading side of :func:`atomic_path` for caches: a file that ``load`` cannot read or rejects
    (it raises: truncated, wrong shape) is logged by name, deleted, and left to the caller to rebuild.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load(path)
    except Exception as err:
        log.warning("ignoring damaged %s cache file %s (%s: %s); deleting it and building it again",
                    what, path, type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None


def _safe_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    if not clean:
        raise ValueError(f"artifact name {name!r} has no usable characters; use letters, digits, '_', '-'")
    return clean


def _jsonable(obj: Any) -> Any:
    """Fallback for json.dump: numpy/torch scalars and arrays, paths, sets, dataclasses."""
    if hasattr(obj, "tolist"):                               # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON; convert it to numbers, strings, lists or dicts")


def _write_json(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_jsonable, allow_nan=True) + "\n", encoding="utf-8")
    return path


def _git(root: Path) -> dict[str, Any]:
    """Commit and dirty flag of the repository at ``root``; ``None`` values when git is unavailable."""
    def call(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = call("rev-parse", "HEAD")
    status = call("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _device(requested: Any, precision: Any = None) -> dict[str, Any]:
    import torch

    from vlmlab.runtime import cpu_has_bf16, effective_precision, resolve_device

    info: dict[str, Any] = {"requested": requested, "torch_threads": torch.get_num_threads(),
                            "cpu_count": os.cpu_count(), "platform": platform.platform(), "cpu_bf16": cpu_has_bf16()}
    if precision is not None:                         # what the forward passes ran at (the CPU may run fp32)
        try:
            info["precision"] = effective_precision(resolve_device(requested or "auto"), precision)
        except (ValueError, RuntimeError):
            pass
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpus=[torch.cuda.get_device_name(i)
                                                    for i in range(torch.cuda.device_count())])
    else:
        info.update(cuda=None, gpus=[], cpu=platform.processor() or platform.machine())
    return info


class Run:
    """The output folder of one notebook run.

    Args:
        notebook: notebook name, e.g. ``"01_uniformity_analysis"``.
        params: the notebook's parameters (``vlmlab.params.Params`` or a dict); ``profile`` and
            ``out_dir`` choose the folder, every key is recorded in the provenance.
        root: repository root for the default folder (tests pass a temporary one).

    Use as a context manager to call :meth:`finish` on clean exit only::

        with vlmlab.results.Run("00_quickstart", P) as run:
            run.save_table(df, "summary")
    """

    def __init__(self, notebook: str, params: Mapping[str, Any], root: Path | str | None = None):
        self.notebook = Path(notebook).name.removesuffix(".ipynb")
        self.params = dict(params)
        self.profile = str(self.params.get("profile") or "embedded")
        self.root = Path(root or REPO_ROOT)
        out = self.params.get("out_dir")
        self.dir = Path(out).expanduser().resolve() if out else self.root / "results" / self.profile / self.notebook
        self.figures_dir = self.dir / "figures"
        self.tables_dir = self.dir / "tables"
        self.metrics: dict[str, Any] = {}
        self.artifacts: list[str] = []
        self.finished = False
        self._t0 = time.perf_counter()
        self._started = _dt.datetime.now(_dt.timezone.utc)
        (self.dir / "provenance.json").unlink(missing_ok=True)     # a failed rerun must not look complete
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        log.info("results of %s (%s) -> %s", self.notebook, self.profile, self.dir)

    def __repr__(self) -> str:
        return f"Run({self.notebook!r}, profile={self.profile!r}, dir={str(self.dir)!r})"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()

    def _record(self, path: Path) -> Path:
        rel = str(path.relative_to(self.dir))
        if rel not in self.artifacts:
            self.artifacts.append(rel)
        return path

    def save_figure(self, fig, name: str, dpi: int = 150) -> Path:
        """Write ``figures/<name>.png`` (``dpi``) and ``.pdf``; return the PNG path."""
        stem = _safe_name(name)
        for ext in ("png", "pdf"):
            path = self.figures_dir / f"{stem}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
            self._record(path)
        return self.figures_dir / f"{stem}.png"

    def save_table(self, df: pd.DataFrame, name: str, index: bool = False,
                   markdown: pd.DataFrame | None = None, floatfmt: str = ".4g") -> Path:
        """Write ``tables/<name>.csv`` (full precision) and ``.md``; return the CSV path.

        Args:
            df: the table.
            index: also write the index (e.g. after a ``pivot``).
            markdown: a different frame for the Markdown file (e.g. formatted or pivoted).
            floatfmt: number format of the Markdown file.
        """
        stem = _safe_name(name)
        csv, md = self.tables_dir / f"{stem}.csv", self.tables_dir / f"{stem}.md"
        with atomic_path(csv) as tmp:
            df.to_csv(tmp, index=index)
        with atomic_path(md) as tmp:
            tmp.write_text((markdown if markdown is not None else df).to_markdown(index=index, floatfmt=floatfmt)
                           + "\n", encoding="utf-8")
        self._record(csv)
        self._record(md)
        return csv

    def save_json(self, obj: Any, name: str) -> Path:
        """Write ``<name>.json`` (numpy/torch values are converted)."""
        return self._record(_write_json(obj, self.dir / f"{_safe_name(name).removesuffix('.json')}.json"))

    def log_metric(self, **values: Any) -> dict[str, Any]:
        """Add scalar results to ``metrics.json`` (rewritten at once); returns all metrics so far."""
        for key, value in values.items():
            value = value.item() if hasattr(value, "item") else value
            if isinstance(value, float) and not math.isfinite(value):
                log.warning("metric %s is %s", key, value)
            self.metrics[key] = value
        self._record(_write_json(self.metrics, self.dir / "metrics.json"))
        return dict(self.metrics)

    def provenance(self) -> dict[str, Any]:
        """What :meth:`finish` records: parameters, versions, git, device, seeds, timings."""
        return {
            "notebook": self.notebook,
            "profile": self.profile,
            "parameters": self.params,
            "seeds": {k: v for k, v in self.params.items() if "seed" in k.lower()},
            "versions": _versions(),
            "git": _git(self.root),
            "device": _device(self.params.get("device"), self.params.get("precision")),
            "hostname": socket.gethostname(),
            "started": self._started.isoformat(timespec="seconds"),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - self._t0, 3),
            "artifacts": sorted(self.artifacts),
            "metrics": self.metrics,
        }

    def finish(self) -> Path:
        """Write ``provenance.json``, marking the run complete; returns its path."""
        path = _write_json(self.provenance(), self.dir / "provenance.json")
        self.finished = True
        log.info("%s finished in %.1f s: %d artifacts in %s", self.notebook,
                 time.perf_counter() - self._t0, len(self.artifacts), self.dir)
        return path


def published(notebook: str, root: Path | str | None = None) -> pd.DataFrame | None:
    """The paper's numbers for ``notebook`` from ``params/published/<notebook>.csv``, or ``None``."""
    path = Path(root or REPO_ROOT) / "params" / "published" / f"{Path(notebook).name.removesuffix('.ipynb')}.csv"
    return pd.read_csv(path) if path.is_file() else None


def side_by_side(ours: pd.DataFrame, published: pd.DataFrame, on: list[str], value: str,
                 how: str = "left") -> pd.DataFrame:
    """Reproduced vs published values of column ``value``, matched on the ``on`` columns.

    Returns:
        ``on`` columns, then ``ours``, ``published`` and ``difference = ours - published``
        (NaN where the paper reports no number). ``how="outer"`` also keeps published rows we
        did not run.
    """
    missing = [c for c in [*on, value] if c not in ours.columns or c not in published.columns]
    if missing:
        raise KeyError(f"side_by_side: columns {missing} must be in both frames; "
                       f"ours has {list(ours.columns)}, published has {list(published.columns)}")
    table = ours[[*on, value]].rename(columns={value: "ours"}).merge(
        published[[*on, value]].rename(columns={value: "published"}), on=on, how=how, validate="many_to_one")
    table["difference"] = table["ours"] - table["published"]
    return table
