"""Sweep files: a notebook, a base parameter file and a grid, expanded into cases with stable ids.

A sweep file (``params/sweeps/<name>.yaml``)::

    notebook: 00_quickstart            # notebooks/<notebook>.ipynb
    profile: embedded                  # -r profile; base defaults to params/<profile>/<notebook>.yaml
    fixed: {n_points: 200}             # overrides every case shares
    grid:                              # cartesian product, one list of values per parameter
      seed: [0, 1, 2]
    cases:                             # explicit cases; with a grid, every case x every grid point
      - {n_points: 100}
      - {n_points: 400}
    executor: local                    # local | slurm (the CLI's --executor wins)
    slurm: {partition: gpu, timeout_min: 240, gpus_per_node: 1, mem_gb: 32}

A parameter whose value is itself a list takes a list of lists in the grid
(``shots: [[1], [5], [10]]``). Every case is validated against the notebook's ``parameters``
cell (unknown key or wrong type = :class:`SweepError` before anything runs).

Case id = ``<slug>-<hash8>``: the slug lists the varying parameters (``n_points=100,seed=0``),
the hash is SHA-1 of the canonical JSON (sorted keys, compact) of notebook, profile and every
override the case passes (``fixed`` included). Reordering keys in the file keeps every id;
changing ``fixed`` or a value gives new ids (new folders), so old results are never mistaken
for new ones.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from vlmlab import params as vparams
from vlmlab.runtime import REPO_ROOT

__all__ = ["SweepError", "Case", "SlurmOptions", "Sweep", "load_sweep", "canonical_json", "case_id"]

TOP_KEYS = {"name", "notebook", "profile", "base", "fixed", "grid", "cases", "executor", "workers",
            "kernel", "device", "execution_timeout", "tables", "slurm"}
SLUG_MAX = 64


class SweepError(ValueError):
    """A sweep file is malformed, or one of its cases would not validate against the notebook."""


def read_yaml(path: Path) -> Any:
    """Parse ``path`` as papermill parses ``-f`` (:func:`vlmlab.params.read_yaml`: YAML 1.1, so
    ``1e-3`` is a string and fails validation with a hint; write ``1.0e-3``).

    Raises:
        SweepError: a syntax error, naming the file and line.
    """
    try:
        return vparams.read_yaml(path)
    except vparams.ParamError as err:
        raise SweepError(str(err)) from None


def _papermill_view(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as papermill will inject them from ``-y`` (dumped as case.py dumps, read back as papermill reads)."""
    text = yaml.safe_dump(dict(values), sort_keys=True, default_flow_style=True)
    return vparams.parse_yaml(text, "<the case's -y>") or {}


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=,+-]*")


def _check_name(name: str, where: str) -> str:
    """A sweep name is one folder name: no path separator, no ``..``, not hidden."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise SweepError(f"{where}: name {name!r} must be a single folder name (letters, digits, '_', '-', '.', "
                         "no '/' or '..'); it becomes results/<profile>/<notebook>/sweeps/<name>/")
    return name


def _normalise(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise SweepError(f"non-finite value {obj!r} in a sweep; parameters must be finite")
    return obj


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys at every level, no spaces, tuples as lists: equal values, equal text."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _slug_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return "+".join(f"{k}:{_slug_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return "+".join(_slug_value(v) for v in value)
    return str(value)


def case_id(notebook: str, profile: str, params: Mapping[str, Any], varying: Mapping[str, Any]) -> str:
    """``<slug>-<hash8>``: slug of the varying parameters (sorted), hash of everything passed."""
    digest = hashlib.sha1(canonical_json({"notebook": notebook, "profile": profile, "params": params})
                          .encode()).hexdigest()[:8]
    slug = ",".join(f"{k}={_slug_value(v)}" for k, v in sorted(varying.items()))
    slug = re.sub(r"[^A-Za-z0-9._=,+:-]+", "_", slug).replace(":", "-")[:SLUG_MAX].strip("._,-")
    return f"{slug}-{digest}" if slug else digest


@dataclass(frozen=True)
class Case:
    """One grid point.

    Attributes:
        id: folder name, ``<slug>-<hash8>``, stable under key order.
        params: every override the case passes to papermill (``fixed`` + its own values).
        varying: only the grid/case values (the columns ``collect`` adds).
    """

    id: str
    params: dict[str, Any]
    varying: dict[str, Any]

    @property
    def digest(self) -> str:
        """The hash part of the id."""
        return self.id.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class SlurmOptions:
    """SLURM resources for each array task (submitit ``AutoExecutor`` parameters).

    ``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb`` are submitit's generic
    names; the others become ``slurm_<name>``. ``additional_parameters`` passes any other
    ``#SBATCH`` option, e.g. ``{"gres": "gpu:a100:1"}``; ``setup`` lines run before the task
    (``module load cuda``, ``source .venv/bin/activate``).
    """

    partition: str | None = None
    timeout_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 32
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    additional_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file. Build with :func:`load_sweep`; :meth:`expand` lists the cases."""

    name: str
    notebook: str
    profile: str = "embedded"
    base: Path | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    cases: tuple[dict[str, Any], ...] = ()
    executor: str = "local"
    workers: int | None = None
    kernel: str = "python3"
    device: str | None = None
    execution_timeout: int | None = None
    tables: tuple[str, ...] = ()
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    path: Path | None = None
    results_root: Path = REPO_ROOT / "results"

    @property
    def base_path(self) -> Path:
        """The base parameter file (``params/<profile>/<notebook>.yaml`` unless ``base`` is set)."""
        return self.base or vparams.params_path(self.notebook, self.profile)

    @property
    def notebook_path(self) -> Path:
        return vparams.notebook_path(self.notebook)

    @property
    def dir(self) -> Path:
        """``<results_root>/<profile>/<notebook>/sweeps/<name>/``: one folder per case below it."""
        return Path(self.results_root) / self.profile / self.notebook / "sweeps" / self.name

    def base_values(self) -> dict[str, Any]:
        """The base file's values ({} when the default embedded file is absent)."""
        path = self.base_path
        if not path.is_file():
            if self.base is None and self.profile == vparams.DEFAULT_PROFILE:
                return {}
            raise SweepError(f"base parameter file {path} not found (sweep {self.name!r}); "
                             f"set `base:` or create params/{self.profile}/{self.notebook}.yaml")
        values = read_yaml(path) or {}
        if not isinstance(values, dict):
            raise SweepError(f"{path} must hold a mapping of parameter: value")
        return values

    def expand(self) -> list[Case]:
        """Every case: each explicit case x each grid point (grid order as in the file)."""
        keys = list(self.grid)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]
        explicit = list(self.cases) or [{}]
        out, seen = [], {}
        for extra in explicit:
            for point in points:
                varying = {**extra, **point}
                params = {**self.fixed, **varying}
                cid = case_id(self.notebook, self.profile, params, varying)
                if cid in seen:
                    raise SweepError(f"sweep {self.name!r}: cases {seen[cid]} and {varying} are identical "
                                     f"(id {cid}); remove one")
                seen[cid] = varying
                out.append(Case(cid, params, varying))
        return out

    def validate(self, cases: list[Case] | None = None) -> None:
        """Check every case as the notebook will see it (keys, types, ranges).

        That is what papermill injects (the base file, then the case's ``-y`` shallowly over it,
        both read by papermill's YAML loader), resolved as :func:`vlmlab.params.resolve` does:
        under ``params/<profile>/<notebook>.yaml``, dicts merged one level.

        Raises:
            SweepError: naming the case and the key, before anything runs.
        """
        base = self.base_values()
        for case in cases if cases is not None else self.expand():
            try:
                injected = {**base, **_papermill_view(case.params)}
                vparams.load(self.notebook, self.profile, overrides=injected)
            except vparams.ParamError as err:
                raise SweepError(f"sweep {self.name!r}, case {case.id}: {err}") from None


def _check_mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _grid(raw: Any, where: str) -> dict[str, list]:
    grid = _check_mapping(raw, f"{where}: grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}; "
                             f"put a single value in `fixed`, and a list-valued parameter as a list of lists")
    return grid


def _cases(raw: Any, grid: Mapping[str, list], fixed: Mapping[str, Any], where: str) -> tuple[dict, ...]:
    cases = raw or []
    if not isinstance(cases, list) or not all(isinstance(c, dict) and c for c in cases):
        raise SweepError(f"{where}: cases must be a list of non-empty mappings (parameter: value)")
    for key in {k for c in cases for k in c} | set(grid):
        if key in fixed:
            raise SweepError(f"{where}: {key!r} is both fixed and varied; keep it in one place")
    clash = {k for c in cases for k in c} & set(grid)
    if clash:
        raise SweepError(f"{where}: {sorted(clash)} appear in both cases and grid; keep each key in one")
    return tuple(cases)


def _slurm(raw: Any, where: str) -> SlurmOptions:
    values = _check_mapping(raw, f"{where}: slurm")
    known = {f.name for f in dataclasses.fields(SlurmOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SweepError(f"{where}: unknown slurm option(s) {unknown}; known: {sorted(known)} "
                         "(other #SBATCH options go in slurm.additional_parameters)")
    if "setup" in values:
        values = {**values, "setup": tuple(values["setup"] or ())}
    return SlurmOptions(**values)


def load_sweep(path: str | Path, results_root: str | Path | None = None, validate: bool = True) -> Sweep:
    """Read and check a sweep file.

    Args:
        path: the YAML file.
        results_root: where ``<profile>/<notebook>/sweeps/<name>/`` goes (default ``results/``).
        validate: also check every case against the notebook's parameters cell.

    Raises:
        SweepError: unknown top-level key, missing notebook, bad grid/cases, or a case that does
            not validate; the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} not found; sweep files live in params/sweeps/<name>.yaml")
    raw = _check_mapping(read_yaml(path), str(path))
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    if not raw.get("notebook"):
        raise SweepError(f"{path}: `notebook:` is required (e.g. notebook: 00_quickstart)")
    fixed = _check_mapping(raw.get("fixed"), f"{path}: fixed")
    for key in ("profile", "out_dir"):
        if key in fixed or key in (raw.get("grid") or {}) or any(key in c for c in raw.get("cases") or []):
            raise SweepError(f"{path}: {key!r} is set by the sweep itself; use the top-level `profile:`")
    grid = _grid(raw.get("grid"), str(path))
    base = raw.get("base")
    if base is not None:
        base = Path(base) if Path(base).is_absolute() else REPO_ROOT / base
    sweep = Sweep(
        name=_check_name(str(raw.get("name") or path.stem), str(path)), notebook=str(raw["notebook"]).removesuffix(".ipynb"),
        profile=str(raw.get("profile") or vparams.DEFAULT_PROFILE), base=base, fixed=fixed, grid=grid,
        cases=_cases(raw.get("cases"), grid, fixed, str(path)), executor=str(raw.get("executor") or "local"),
        workers=raw.get("workers"), kernel=str(raw.get("kernel") or "python3"), device=raw.get("device"),
        execution_timeout=raw.get("execution_timeout"), tables=tuple(raw.get("tables") or ()),
        slurm=_slurm(raw.get("slurm"), str(path)), path=path.resolve(),
        results_root=Path(results_root) if results_root else REPO_ROOT / "results")
    if sweep.executor not in ("local", "slurm"):
        raise SweepError(f"{path}: executor must be 'local' or 'slurm', not {sweep.executor!r}")
    if validate:
        if not sweep.notebook_path.is_file():
            raise SweepError(f"{path}: notebook {sweep.notebook_path} not found")
        sweep.validate()
    return sweep
