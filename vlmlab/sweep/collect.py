"""Merge the tables of a sweep's complete cases into one tidy table, grid parameters as columns.

``collect("params/sweeps/embedded_small.yaml", "summary")`` reads
``<case>/tables/summary.csv`` of every complete case and stacks them, adding ``case_id`` and one
column per varying parameter (the grid's and explicit cases' keys). Scalar values go in as they
are; list and dict values as canonical JSON text (``["fog"]``). When the table already has a
column of that name, the parameter column is left out if the table's values agree with it (the
column equals the scalar, or its values are members of the list), else it is added as
``sweep_<key>``. The result keeps the notebook's own columns, so the notebook's plotting
functions accept it with the grid parameters as extra ``hue``/``col`` choices.

Incomplete, failed and stale cases are skipped with a warning naming them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab.claims import RERUNS, run_code
from vlmlab.results import atomic_path
from vlmlab.runtime import get_logger
from vlmlab.sweep.case import CASE_JSON, DONE, PROVENANCE, case_status
from vlmlab.sweep.executors import jobs_for
from vlmlab.sweep.grid import Sweep, SweepError, canonical_json, load_sweep

__all__ = ["collect", "case_dirs", "write_table", "rerun_claims"]

log = get_logger("vlmlab.sweep")


def _as_sweep(source: Sweep | str | Path, results_root: str | Path | None) -> Sweep | None:
    if isinstance(source, Sweep):
        return source
    if Path(source).is_dir():
        return None
    return load_sweep(source, results_root, validate=False)


def case_dirs(source: Sweep | str | Path, results_root: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Complete case folders of a sweep (file, :class:`Sweep`, or sweep folder), and the other ids."""
    sweep = _as_sweep(source, results_root)
    if sweep is None:
        folders = sorted(p.parent for p in Path(source).glob(f"*/{CASE_JSON}"))
        if not folders:
            raise SweepError(f"{source} holds no case folders (*/{CASE_JSON}); pass a sweep folder "
                             "results/<profile>/<notebook>/sweeps/<name>/ or the sweep file")
        done = [p for p in folders if (p / DONE).is_file() and (p / PROVENANCE).is_file()]
        return done, [p.name for p in folders if p not in done]
    done, skipped = [], []
    for job in jobs_for(sweep):
        if case_status(job) == "complete":
            done.append(job.dir)
        else:
            skipped.append(job.case.id)
    return done, skipped


def _agrees(column: pd.Series, value: Any) -> bool:
    values = column.dropna().tolist()
    if isinstance(value, (list, tuple)):
        return all(v in value or str(v) in map(str, value) for v in values)
    return all(v == value or str(v) == str(value) for v in values)


def _with_params(df: pd.DataFrame, case_id: str, varying: dict[str, Any]) -> pd.DataFrame:
    front: dict[str, Any] = {}
    for key, value in varying.items():
        if key in df.columns and _agrees(df[key], value):
            continue
        name = f"sweep_{key}" if key in df.columns else key
        front[name] = value if not isinstance(value, (list, tuple, dict)) else canonical_json(value)
    front["case_id"] = case_id
    head = pd.DataFrame({k: [v] * len(df) for k, v in front.items()}, index=df.index)
    return pd.concat([head, df], axis=1)


def _tables(folder: Path) -> set[str]:
    return {p.stem for p in (folder / "tables").glob("*.csv")}


def _choose_table(folders: list[Path], table: str | None, default: tuple[str, ...]) -> str:
    if table:
        return table
    if default:
        return default[0]
    common = set.intersection(*(_tables(f) for f in folders)) if folders else set()
    if len(common) == 1:
        return common.pop()
    raise SweepError(f"which table? pass --table NAME (one of: {', '.join(sorted(common)) or 'none in common'})")


def collect(source: Sweep | str | Path, table: str | None = None,
            results_root: str | Path | None = None) -> pd.DataFrame:
    """One table from every complete case of a sweep.

    Args:
        source: a sweep file, a :class:`Sweep`, or a sweep folder.
        table: the table name (``tables/<table>.csv``); default the sweep's first ``tables:`` entry,
            else the only table every case wrote.
        results_root: where the sweep's results live (default ``results/``), for a sweep file.

    Returns:
        The stacked rows: varying parameters and ``case_id`` first, then the table's columns;
        ``df.attrs["table"]`` holds the table name.

    Raises:
        SweepError: no complete case, or a case lacks the table (names the case and the tables it has).
    """
    folders, skipped = case_dirs(source, results_root)
    if skipped:
        log.warning("collect: %d case(s) not complete, left out: %s", len(skipped), ", ".join(skipped))
    if not folders:
        raise SweepError(f"no complete case to collect from {source}; run the sweep first")
    sweep = _as_sweep(source, results_root)
    name = _choose_table(folders, table, sweep.tables if sweep else ())
    parts = []
    for folder in folders:
        path = folder / "tables" / f"{name}.csv"
        if not path.is_file():
            raise SweepError(f"case {folder.name} has no table {name!r} ({path}); it has: "
                             f"{', '.join(sorted(_tables(folder))) or 'none'}")
        meta = json.loads((folder / CASE_JSON).read_text(encoding="utf-8"))
        parts.append(_with_params(pd.read_csv(path), meta["case_id"], meta.get("varying", {})))
    merged = pd.concat(parts, ignore_index=True, sort=False)
    merged.attrs["table"] = name
    log.info("collect: %d rows of %r from %d case(s)", len(merged), name, len(parts))
    return merged


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` to ``path`` (CSV, atomically); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def rerun_claims(results_dir: Path | str) -> pd.DataFrame:
    """Every claim's verdict in each complete rerun of a profile's notebooks.

    Reads ``<results_dir>/<notebook>/sweeps/reruns/<case>/tables/claims.csv`` of the cases the sweep marked
    complete (:func:`case_dirs`: ``.done`` and ``provenance.json``); incomplete ones are skipped.

    Returns:
        One row per (rerun, claim): ``notebook``, ``run`` (the case id), ``code`` (``vlmlab.claims.run_code``),
        ``claim_id``, ``verdict``; empty (those columns) when no notebook has a complete rerun.
    """
    frames = []
    for sweep_dir in sorted(Path(results_dir).glob(f"*/sweeps/{RERUNS}")):
        try:
            done, _ = case_dirs(sweep_dir)
        except SweepError:                                                   # a folder without cases
            continue
        for case in done:
            path = case / "tables" / "claims.csv"
            if path.is_file():
                table = pd.read_csv(path, keep_default_na=False)
                frames.append(pd.DataFrame({"notebook": sweep_dir.parent.parent.name, "run": case.name,
                                            "code": run_code(case), "claim_id": table.claim_id,
                                            "verdict": table.verdict}))
    columns = ["notebook", "run", "code", "claim_id", "verdict"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
