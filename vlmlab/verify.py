"""Check that a run reproduces its headline numbers (``make verify``, ``vlmlab verify``).

``params/expected/<profile>/<notebook>.json`` holds a run's headline numbers::

    {"uniformity.corruption_lowers_accuracy: clean":
         {"value": 85.0, "tol": 0.5, "source": "tables/claims.csv:claim_id=uniformity.corruption_lowers_accuracy:ours[clean]"},
     "acc_vs_uniformity_pearson_r": {"value": -0.904, "tol": 0.01, "source": "metrics.json:acc_vs_uniformity_pearson_r"}}

A ``source`` is ``metrics.json:<key>`` or ``tables/<name>.csv:<selector>:<column>``, where the
selector is ``col=value`` pairs joined by ``&`` that must pick exactly one row, and ``column``
is a column name or ``ours[<name>]``: the value ``<name>`` of a claims ledger's ``ours`` cell
(``name=value; ...``, see :mod:`vlmlab.claims`). A number is ``ok`` when
``|got - value| <= tol``.

Which numbers are headline numbers is :data:`HEADLINES`: per notebook, every numeric value
behind the chosen claims (the ``ours`` column of ``tables/claims.csv``) and a few metrics.
``--update`` rewrites the values from the current results and keeps each file's list of numbers,
their tolerances and sources (delete a file to derive its list anew from :data:`HEADLINES`).
Default tolerance :data:`DEFAULT_TOL` (accuracy points); :data:`FINE_TOL` for correlations,
uniformity, entropy, gaps, distances and fractions, chosen by the patterns below.

Numbers of training that backpropagates through the world CLIP's image tower (04's visual prompts
at lr 10, 05's ``vision`` variant) are the exception: the training amplifies the last bit of a
convolution's rounding, and which kernels a CPU runs (AVX2 or AVX-512, oneDNN's or ATen's) moves
them by points and their rank correlations by tenths. They get the spread measured across kernel
paths (``Headlines.kernel``; the measurement, and the one verdict of 05 decided inside it, are in
README's "Report and verify"); every other number of 04 and 05 reproduces to its tolerance on each
kernel path tried.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vlmlab.results import atomic_path
from vlmlab.runtime import get_logger

__all__ = ["HEADLINES", "Headlines", "VerifyError", "parse_ours", "lookup", "derive", "check", "update"]

log = get_logger("vlmlab.verify")

DEFAULT_TOL = 0.5      # accuracy points
FINE_TOL = 0.01        # correlations, uniformity, entropy, gaps, TV, ratios, fractions
# Patterns (lower-case, fnmatch) on a number's name; these numbers get FINE_TOL in every notebook.
FINE_EVERYWHERE = ("*pearson*", "*spearman*", "*p_value*", "*_p")
# Numbers never taken as headline numbers: timings differ from machine to machine.
NEVER = ("*ms/image*", "*/ tda*", "*wall*", "*cpu_s*", "sweep/*")


@dataclass(frozen=True)
class Headlines:
    """Which numbers of a notebook's results are its headline numbers.

    Args:
        claims: patterns of claim ids whose numeric ``ours`` values count.
        metrics: patterns of ``metrics.json`` keys that count.
        fine: patterns of number names (``"<claim_id>: <name>"`` or the metric key) with :data:`FINE_TOL`.
        tol: exact number names with their own tolerance (overrides the rest).
        kernel: ``(pattern, tolerance)`` pairs for numbers that move with the CPU's kernels (see the module
            docstring); the first matching pattern wins, after ``tol`` and before ``fine``.
    """

    claims: tuple[str, ...] = ("*",)
    metrics: tuple[str, ...] = ()
    fine: tuple[str, ...] = ()
    tol: tuple[tuple[str, float], ...] = ()
    kernel: tuple[tuple[str, float], ...] = ()


HEADLINES: dict[str, Headlines] = {
    "00_quickstart": Headlines(claims=(), metrics=("slope",), fine=("slope",)),
    "01_uniformity_analysis": Headlines(
        metrics=("acc_vs_uniformity_pearson_r", "acc_vs_uniformity_spearman_r"),
        fine=("uniformity.*_uniformity*", "uniformity.uniformity_*", "uniformity.*entropy*",
              "uniformity.modality_gap*", "acc_vs_uniformity_*")),
    "02_uniinfo_tta": Headlines(
        claims=("uniinfo.*",), metrics=("mean_acc/*", "uniinfo_minus_no_adapt"),
        fine=("uniinfo.more_uniform: *", "uniinfo.closes_modality_gap: *")),
    "03_coop_shots": Headlines(metrics=("diff/*",), fine=("coop.vectors_not_words: *",)),
    "04_visual_prompt_fid": Headlines(
        metrics=("mean_gain", "*_pearson_r", "*_spearman_r"),
        kernel=(("*vision_only_gain", 7.0), ("*spearman_r", 0.3), ("*: linear_probe", 1.0), ("*lpips*pearson_r", 0.05),
                ("vp.gain_correlates_with_lpips: p_value", 0.05), ("*fid*pearson_r", 0.03),
                *((p, 2.0) for p in ("*mean_gain", "*: padding", "*: fixed_patch",
                                     "*: random_patch", "vp.gain_largest_far: *", "vp.*: vp", "*vp_minus_lp",
                                     "*max_gain", "*min_gain", "*: spread", "*clip_gain")))),
    "05_vlm_blind_tests": Headlines(
        metrics=("mean_readout_minus_vlm", "mean_same_answer_blank"),
        fine=("blind.tv_*", "blind.blank_barely_changes: *tv(*", "blind.blank_answers_skewed: *"),
        kernel=(("blind.vision_helps_little: *", 6.0), ("blind.lora_helps_most: vision", 6.0),
                ("blind.tv_*: vision", 0.04))),
}
# Headlines.kernel's tolerances: the range of each number over seven kernel paths (the expected run's CPU, and
# on an AVX-512/AMX Xeon its own paths, one thread, ATen at AVX2, everything at AVX2, ATen unvectorised and
# oneDNN off; `python scripts/kernel_spread.py`, 2026-12-05), rounded up to a step and one step added (steps:
# 0.5 points, 0.05 for Spearman's rho, 0.01 for Pearson's r, p and TV). Ranges: 04's prompt accuracies and
# gains <= 1.5 points, vision-only gain 6.5, linear probe 0.5 (its C search on the forward features), rho
# 0.22, lpips r 0.039 and p 0.037, fid r 0.015; 05's vision variant 5.5 points and TV 0.029.


class VerifyError(Exception):
    """A number cannot be read from the results (missing file, row, column or value)."""


def parse_ours(text: str) -> dict[str, str]:
    """``"clean=85; corruption mean=31.25"`` -> ``{"clean": "85", "corruption mean": "31.25"}``."""
    pairs = [part.rpartition("=") for part in str(text).split("; ") if "=" in part]
    return {name.strip(): value.strip() for name, _, value in pairs}


def _number(text: Any, where: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise VerifyError(f"{where}: {text!r} is not a number") from None


def _table_value(run_dir: Path, path: str, selector: str, column: str) -> float:
    file = run_dir / path
    if not file.is_file():
        raise VerifyError(f"{file} is missing; rerun the notebook")
    table = pd.read_csv(file, dtype=str, keep_default_na=False)
    rows = table
    for cond in selector.split("&"):
        col, _, value = cond.partition("=")
        if col not in table.columns:
            raise VerifyError(f"{file}: no column {col!r} for selector {selector!r}; columns: {list(table.columns)}")
        rows = rows[rows[col] == value]
    if len(rows) != 1:
        raise VerifyError(f"{file}: selector {selector!r} picks {len(rows)} rows, not one")
    match = re.fullmatch(r"(.+)\[(.+)\]", column)
    col, key = (match.group(1), match.group(2)) if match else (column, None)
    if col not in rows.columns:
        raise VerifyError(f"{file}: no column {col!r}; columns: {list(table.columns)}")
    cell = rows[col].iloc[0]
    if key is None:
        return _number(cell, f"{file} [{selector}] {col}")
    values = parse_ours(cell)
    if key not in values:
        raise VerifyError(f"{file} [{selector}] {col}: no value {key!r} in {cell!r}")
    return _number(values[key], f"{file} [{selector}] {column}")


def lookup(run_dir: Path | str, source: str) -> float:
    """The number ``source`` names in the results folder ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    if source.startswith("metrics.json:"):
        key = source.partition(":")[2]
        path = run_dir / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        if key not in metrics:
            raise VerifyError(f"{path}: no metric {key!r}")
        return _number(metrics[key], f"{path} {key}")
    parts = source.split(":", 2)
    if len(parts) != 3 or not parts[0].startswith("tables/"):
        raise VerifyError(f"source {source!r}: use 'metrics.json:<key>' or 'tables/<name>.csv:<selector>:<column>'")
    return _table_value(run_dir, *parts)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


def _tolerance(name: str, spec: Headlines) -> float:
    exact = dict(spec.tol)
    if name in exact:
        return float(exact[name])
    for pattern, tol in spec.kernel:
        if _matches(name, (pattern,)):
            return float(tol)
    return FINE_TOL if _matches(name, spec.fine + FINE_EVERYWHERE) else DEFAULT_TOL


def derive(run_dir: Path | str, notebook: str) -> dict[str, dict[str, Any]]:
    """The headline numbers of ``notebook`` per :data:`HEADLINES`, read from ``run_dir``.

    Returns:
        ``{name: {"value", "tol", "source"}}``: claims first (ledger order), then metrics.
    """
    run_dir, spec = Path(run_dir), HEADLINES.get(notebook, Headlines())
    out: dict[str, dict[str, Any]] = {}
    claims = run_dir / "tables" / "claims.csv"
    if spec.claims and claims.is_file():
        for row in pd.read_csv(claims, dtype=str, keep_default_na=False).itertuples():
            if not _matches(row.claim_id, spec.claims):
                continue
            for key, text in parse_ours(row.ours).items():
                name = f"{row.claim_id}: {key}"
                if _matches(name, NEVER) or not _is_number(text):
                    continue
                out[name] = {"value": float(text), "tol": _tolerance(name, spec),
                             "source": f"tables/claims.csv:claim_id={row.claim_id}:ours[{key}]"}
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    for key, value in metrics.items():
        if _matches(key, spec.metrics) and not _matches(key, NEVER) and _is_number(value):
            out[key] = {"value": float(value), "tol": _tolerance(key, spec), "source": f"metrics.json:{key}"}
    return out


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _ok(expected: float, got: float, tol: float) -> bool:
    if math.isnan(expected) or math.isnan(got):
        return math.isnan(expected) and math.isnan(got)
    return abs(got - expected) <= tol + 1e-9 * max(1.0, abs(expected))


def check(run_dir: Path | str, notebook: str, expected: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Compare ``run_dir``'s numbers with ``expected``; one row per number, ``got`` NaN when unreadable."""
    rows = []
    for name, spec in expected.items():
        try:
            got, note = lookup(run_dir, spec["source"]), ""
        except VerifyError as err:
            got, note = float("nan"), str(err)
        ok = not note and _ok(float(spec["value"]), got, float(spec["tol"]))
        rows.append({"notebook": notebook, "number": name, "expected": float(spec["value"]), "got": got,
                     "tol": float(spec["tol"]), "ok": ok, "note": note})
    return pd.DataFrame(rows, columns=["notebook", "number", "expected", "got", "tol", "ok", "note"])


def update(run_dir: Path | str, notebook: str, path: Path | str) -> Path:
    """Rewrite ``path`` with ``run_dir``'s current values; keep its numbers, tolerances and sources.

    A missing file is derived from :data:`HEADLINES`. Raises :class:`VerifyError` naming every
    number the results no longer give (nothing is written then).
    """
    path = Path(path)
    if not path.is_file():
        numbers = derive(run_dir, notebook)
        if not numbers:
            raise VerifyError(f"{run_dir}: no headline numbers for {notebook} (HEADLINES in vlmlab/verify.py)")
    else:
        numbers, problems = load_expected(path), []
        for name, spec in numbers.items():
            try:
                spec["value"] = lookup(run_dir, spec["source"])
            except VerifyError as err:
                problems.append(f"{name}: {err}")
        if problems:
            raise VerifyError(f"cannot update {path}:\n  " + "\n  ".join(problems)
                              + f"\n(delete {path} to derive its numbers anew)")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    return path


def load_expected(path: Path | str) -> dict[str, dict[str, Any]]:
    """Read an expected-numbers file; a malformed entry raises :class:`VerifyError` naming it."""
    path = Path(path)
    try:
        numbers = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VerifyError(f"{path}: not valid JSON ({err})") from None
    bad = [k for k, v in numbers.items() if not (isinstance(v, dict) and {"value", "tol", "source"} <= set(v))]
    if bad:
        raise VerifyError(f"{path}: entries {bad} need 'value', 'tol' and 'source'")
    return numbers


class MissingResults(VerifyError):
    """A notebook has expected numbers but no finished run (no ``provenance.json``)."""


def _complete(run_dir: Path) -> bool:
    return (run_dir / "provenance.json").is_file()


def verify_profile(results: Path | str, expected_dir: Path | str) -> pd.DataFrame:
    """Check every ``<expected_dir>/<notebook>.json`` against ``<results>/<notebook>/``.

    Raises:
        MissingResults: no expected file, or a notebook's results folder is missing or unfinished
            (names them all and the command that makes them).
    """
    results, expected_dir = Path(results), Path(expected_dir)
    files = sorted(expected_dir.glob("*.json"))
    if not files:
        raise MissingResults(f"no expected numbers in {expected_dir}/; write them from a finished run with "
                             f"`make verify UPDATE=1 PROFILE={expected_dir.name}`")
    missing = [f.stem for f in files if not _complete(results / f.stem)]
    if missing:
        raise MissingResults(f"no finished run (provenance.json) of {missing} in {results}/; "
                             f"run `make reproduce PROFILE={results.name} NOTEBOOKS=\"{' '.join(missing)}\"`")
    return pd.concat([check(results / f.stem, f.stem, load_expected(f)) for f in files], ignore_index=True)


def update_profile(results: Path | str, expected_dir: Path | str) -> list[Path]:
    """Rewrite every expected file of a profile from ``results``, and derive one for each finished run without one.

    Raises:
        MissingResults: a notebook with an expected file has no finished run.
        VerifyError: a listed number can no longer be read (nothing of that notebook is written).
    """
    results, expected_dir = Path(results), Path(expected_dir)
    listed = [f.stem for f in sorted(expected_dir.glob("*.json"))]
    finished = [d.name for d in sorted(results.glob("[0-9][0-9]_*")) if d.name in HEADLINES and _complete(d)]
    names = sorted(set(listed) | set(finished))          # a finished run without a file (deleted: derive anew)
    if not names:
        raise MissingResults(f"no finished run in {results}/ to take numbers from; run `make reproduce "
                             f"PROFILE={results.name}` first")
    missing = [n for n in listed if not _complete(results / n)]
    if missing:
        raise MissingResults(f"no finished run (provenance.json) of {missing} in {results}/")
    expected_dir.mkdir(parents=True, exist_ok=True)
    return [update(results / n, n, expected_dir / f"{n}.json") for n in names]


def format_table(table: pd.DataFrame) -> str:
    """The verify table as text: notebook, number, expected, got, tol, ok."""
    shown = table.assign(expected=table.expected.map("{:.6g}".format), got=table.got.map("{:.6g}".format),
                         tol=table.tol.map("{:g}".format), ok=table.ok.map({True: "ok", False: "MISS"}))
    return shown[["notebook", "number", "expected", "got", "tol", "ok"]].to_string(index=False)
