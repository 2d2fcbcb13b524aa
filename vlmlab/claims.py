"""The claims ledger: the papers' findings as predicates over a run's own tables.

A :class:`Claim` names one finding of a paper (where the paper says it, one sentence, the
paper's number when there is one) and carries a predicate, a plain function of the run's
:class:`Evidence` (its saved tables, metrics and parameters) that returns a :class:`Verdict`:
``holds``, ``fails`` or ``not_measured`` (with why), and the numbers it compared. Predicates
live next to each notebook's code (``vlmlab/coop/claims.py``, ...); this module only evaluates
and merges, so it holds no notebook logic::

    ledger = vlmlab.claims.evaluate(vlmlab.coop.claims.CLAIMS, vlmlab.claims.Evidence.load(run.dir, P))
    vlmlab.claims.save(run, ledger)       # tables/claims.csv and tables/claims.md

A failing claim is a finding: it is reported, never raised. A predicate raises only on a
structural defect of the run (a missing table or row, a NaN among the compared numbers), which
is a bug, not a result. ``vlmlab claims`` (``make claims``) merges every notebook's
``tables/claims.csv`` of a profile into ``results/<profile>/claims.md`` and ``.csv``.

A verdict decided inside a run's noise would flip on another run. ``params/sweeps/reruns/<notebook>.yaml``
reruns a notebook with other seeds (a fresh world and fresh method seeds; ``make reruns``), each rerun
writing its own ledger under ``results/<profile>/<notebook>/sweeps/reruns/<case>/``. Given those ledgers
(``vlmlab.sweep.rerun_claims``), the scorecard counts per claim in how many of the runs (the run and its
complete reruns) it holds (column ``reruns``, :func:`stability`) and lists the claims whose verdict
changes between them: the noise is measured from outside, with no margin chosen per claim.

In the paper profile a claim with a published number (``paper_value``, a float) and a
``headline`` value in its verdict is also compared with the paper: column ``vs_paper`` says
``within`` or ``off`` by more than the claim's ``tolerance`` (points, default 1).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from vlmlab.runtime import get_logger

__all__ = ["Claim", "Verdict", "Evidence", "NotMeasured", "holds_if", "not_measured", "evaluate", "save",
           "merge", "stability", "run_code", "COLUMNS", "VERDICTS", "RERUNS"]

log = get_logger("vlmlab.claims")

VERDICTS = ("holds", "fails", "not_measured")
RERUNS = "reruns"  # the sweep name of a notebook's reruns (params/sweeps/reruns/<notebook>.yaml)
COLUMNS = ["claim_id", "paper", "where", "statement", "paper_value", "ours", "verdict", "note", "vs_paper"]


class NotMeasured(Exception):
    """Raised by a predicate when the run cannot test the claim (e.g. a dataset the profile lacks)."""


@dataclass(frozen=True)
class Verdict:
    """What a predicate found.

    Args:
        verdict: ``"holds"``, ``"fails"`` or ``"not_measured"``.
        ours: the numbers compared, by name (e.g. ``{"CoOp": 84.1, "zero-shot": 86.5}``).
        note: one line on how they were compared or why nothing was measured.
        headline: the one number to set beside the claim's ``paper_value`` (paper profile).
    """

    verdict: str
    ours: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    headline: float | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.verdict != "not_measured":
            bad = [k for k, v in self.ours.items() if isinstance(v, float) and math.isnan(v)]
            if bad:
                raise ValueError(f"NaN among the compared values {bad}: a table is missing rows "
                                 f"(a structural defect of the run, not a finding)")


def holds_if(condition: bool, ours: Mapping[str, Any], note: str = "", headline: float | None = None) -> Verdict:
    """``holds`` when ``condition`` is true, else ``fails``, with the numbers compared."""
    return Verdict("holds" if bool(condition) else "fails", dict(ours), note, headline)


def not_measured(why: str) -> Verdict:
    """A verdict for a claim this run cannot test; ``why`` names what is missing."""
    return Verdict("not_measured", {}, why)


@dataclass(frozen=True)
class Claim:
    """One finding of a paper, checkable on a run's tables.

    Args:
        id: ``<notebook-topic>.<finding>``, e.g. ``"coop.16shot_beats_zero_shot"``; unique.
        paper: the paper, short (``"CoOp (Zhou et al., IJCV 2022)"``).
        where: where it says so: seed file, table or figure, and the ``shared/papers/`` section.
        statement: the finding, one sentence.
        check: the predicate, ``check(evidence) -> Verdict``; may raise :class:`NotMeasured`.
        paper_value: the paper's number(s), free text or a float (compared with the verdict's
            ``headline`` in the paper profile).
        tolerance: largest ``|headline - paper_value|`` counted as ``within`` the paper.
    """

    id: str
    paper: str
    where: str
    statement: str
    check: Callable[["Evidence"], Verdict]
    paper_value: float | str | None = None
    tolerance: float = 1.0


@dataclass
class Evidence:
    """What predicates read: a run's tables (by name), its metrics and its parameters."""

    tables: Mapping[str, pd.DataFrame]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path | str, params: Mapping[str, Any] | None = None) -> "Evidence":
        """Read ``run_dir/tables/*.csv`` and ``metrics.json``: the claims see what a reader sees."""
        run_dir = Path(run_dir)
        tables = {p.stem: _read_csv(p) for p in sorted((run_dir / "tables").glob("*.csv")) if p.stem != "claims"}
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        return cls(tables, metrics, dict(params or {}))

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name``; a missing one is a structural defect and raises ``KeyError``."""
        if name not in self.tables:
            raise KeyError(f"claims need table {name!r}; the run wrote {sorted(self.tables)}")
        return self.tables[name]

    def has(self, name: str) -> bool:
        return name in self.tables


def _read_csv(path: Path) -> pd.DataFrame:
    """A saved table; an empty frame saved without columns (a bare newline) reads as an empty frame."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ours_text(ours: Mapping[str, Any]) -> str:
    return "; ".join(f"{k}={_format(v)}" for k, v in ours.items())


def _vs_paper(claim: Claim, verdict: Verdict, profile: str) -> str:
    if profile != "paper" or not isinstance(claim.paper_value, (int, float)) or verdict.headline is None:
        return ""
    diff = verdict.headline - float(claim.paper_value)
    return f"{'within' if abs(diff) <= claim.tolerance else 'off'} ({diff:+.2f}, tol {claim.tolerance:g})"


def evaluate(claims: Iterable[Claim], evidence: Evidence, profile: str | None = None) -> pd.DataFrame:
    """Evaluate every claim on ``evidence``; one row per claim, columns :data:`COLUMNS`.

    A predicate raising :class:`NotMeasured` gives ``not_measured`` with its message; any other
    exception propagates (a structural defect of the run). Ids must be unique.
    """
    profile = profile if profile is not None else str(evidence.params.get("profile", ""))
    rows, seen = [], set()
    for claim in claims:
        if claim.id in seen:
            raise ValueError(f"claim id {claim.id!r} appears twice")
        seen.add(claim.id)
        try:
            verdict = claim.check(evidence)
        except NotMeasured as why:
            verdict = not_measured(str(why))
        if not isinstance(verdict, Verdict):
            raise TypeError(f"claim {claim.id}: predicate returned {type(verdict).__name__}, not a Verdict")
        rows.append({"claim_id": claim.id, "paper": claim.paper, "where": claim.where, "statement": claim.statement,
                     "paper_value": "" if claim.paper_value is None else _format(claim.paper_value),
                     "ours": _ours_text(verdict.ours), "verdict": verdict.verdict, "note": verdict.note,
                     "vs_paper": _vs_paper(claim, verdict, profile)})
    return pd.DataFrame(rows, columns=COLUMNS)


def save(run, ledger: pd.DataFrame) -> Path:
    """Write the ledger as the run's ``tables/claims.csv`` and ``claims.md``; log the counts."""
    counts = ledger.verdict.value_counts()
    run.log_metric(**{f"claims/{v}": int(counts.get(v, 0)) for v in VERDICTS})
    log.info("claims: %s", ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS))
    return run.save_table(ledger, "claims")


def summary_line(table: pd.DataFrame) -> str:
    """``"N claims: a hold, b fail, c not measured"`` for a merged or single ledger."""
    counts = table.verdict.value_counts()
    return (f"{len(table)} claims: {int(counts.get('holds', 0))} hold, {int(counts.get('fails', 0))} fail, "
            f"{int(counts.get('not_measured', 0))} not measured")


def merge(results_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stack ``<results_dir>/<notebook>/tables/claims.csv`` of every notebook.

    Returns:
        ``(claims, per_notebook)``: every claim with a ``notebook`` and ``complete`` column
        (the run wrote ``provenance.json``), and one row per notebook with its counts.
    """
    results_dir = Path(results_dir)
    frames, rows = [], []
    for path in sorted(results_dir.glob("*/tables/claims.csv")):
        run_dir = path.parent.parent
        table = pd.read_csv(path, keep_default_na=False)
        complete = (run_dir / "provenance.json").is_file()
        frames.append(table.assign(notebook=run_dir.name, complete=complete))
        counts = table.verdict.value_counts()
        rows.append({"notebook": run_dir.name, "complete": complete, "claims": len(table),
                     **{v: int(counts.get(v, 0)) for v in VERDICTS}})
    if not frames:
        raise FileNotFoundError(f"no notebook in {results_dir} wrote tables/claims.csv; run `make reproduce` first")
    claims = pd.concat(frames, ignore_index=True)
    return claims[["notebook", *COLUMNS, "complete"]], pd.DataFrame(rows)


def run_code(run_dir: Path) -> str:
    """The code a run ran, from its ``provenance.json``: the git commit, with ``+dirty`` when the tree was
    edited ("" when it names no commit). Two runs ran the same code for sure only when this is equal and clean.
    """
    path = run_dir / "provenance.json"
    if not path.is_file():
        return ""
    git = json.loads(path.read_text()).get("git") or {}
    return f"{git['commit']}{'+dirty' if git.get('dirty') else ''}" if git.get("commit") else ""


def stability(claims: pd.DataFrame, reruns: pd.DataFrame) -> pd.DataFrame:
    """Per claim of ``claims`` (:func:`merge`'s), its verdicts over the run and its reruns.

    A run measures a claim when its verdict is ``holds`` or ``fails``; a rerun whose ledger lacks the claim
    does not count. Returns ``claims``' rows with ``runs`` (runs that measured it), ``runs_hold``,
    ``reruns`` (text, e.g. ``"2/3 hold"``; empty when no rerun measured it) and ``changes`` (the measured
    verdicts differ between runs). ``reruns``: ``vlmlab.sweep.rerun_claims``' table.
    """
    measured = ("holds", "fails")
    every = pd.concat([claims[["notebook", "claim_id", "verdict"]],
                       reruns[["notebook", "claim_id", "verdict"]]], ignore_index=True)
    every = every[every.verdict.isin(measured)]
    counts = every.groupby(["notebook", "claim_id"]).verdict.agg(
        runs="size", runs_hold=lambda v: int((v == "holds").sum()))
    out = claims.merge(counts.reset_index(), on=["notebook", "claim_id"], how="left")
    out[["runs", "runs_hold"]] = out[["runs", "runs_hold"]].fillna(0).astype(int)
    # the run gives a claim at most one measurement, so two or more means a rerun measured it too
    out["reruns"] = [f"{h}/{n} hold" if n > 1 else "" for h, n in zip(out.runs_hold, out.runs)]
    out["changes"] = (0 < out.runs_hold) & (out.runs_hold < out.runs)
    return out


def _reruns_section(results_dir: Path, claims: pd.DataFrame, reruns: pd.DataFrame) -> list[str]:
    """The scorecard's section on the claims whose verdict changes between the run and its reruns."""
    changing = claims[claims.changes]
    parts = ["## Claims that change verdict between reruns", "",
             f"Reruns with other seeds (`params/sweeps/{RERUNS}/`, `make reruns`): a verdict that changes is "
             "decided inside the run-to-run noise.", "",
             changing[["notebook", "claim_id", "verdict", "reruns", "ours"]].to_markdown(index=False)
             if len(changing) else "None.", ""]
    code = {nb: run_code(results_dir / nb) for nb in reruns.notebook.unique()}
    other = sorted({f"{r.notebook}/{r.run}" for r in reruns.itertuples() if r.code != code[r.notebook]})
    edited = sorted({f"{r.notebook}/{r.run}" for r in reruns.itertuples()
                     if r.code == code[r.notebook] and r.code.endswith("+dirty")})
    if other:
        parts += [f"Reruns of other code than their notebook's run (another commit, or one run on an edited "
                  f"tree): {', '.join(other)}.", ""]
    if edited:
        parts += [f"Reruns that ran, like their notebook's run, on an edited tree of the same commit (the edits may "
                  f"differ): {', '.join(edited)}.", ""]
    return parts


def scorecard(results_dir: Path | str, reruns: pd.DataFrame | None = None) -> tuple[Path, Path, str]:
    """Write ``<results_dir>/claims.csv`` and ``claims.md``; return both paths and the summary line.

    ``reruns``: the verdicts of the notebooks' reruns (``vlmlab.sweep.rerun_claims``), if any; then each
    claim also gets its :func:`stability` and the scorecard lists the claims that change verdict.
    """
    from vlmlab.results import atomic_path

    results_dir = Path(results_dir)
    claims, per_notebook = merge(results_dir)
    has_reruns = reruns is not None and len(reruns) > 0
    line = summary_line(claims)
    every = ["notebook", "claim_id", "verdict", "paper_value", "ours", "note", "vs_paper"]
    if has_reruns:
        claims = stability(claims, reruns)
        n_runs = reruns.groupby("notebook").run.nunique()
        per_notebook = per_notebook.assign(reruns=per_notebook.notebook.map(n_runs).fillna(0).astype(int))
        line += f"; {int(claims.changes.sum())} change verdict between the run and its reruns"
        every.insert(3, "reruns")
    failing = claims[claims.verdict == "fails"]
    parts = [f"# Claims scorecard: {results_dir.name}", "", f"**{line}.**", "",
             per_notebook.to_markdown(index=False), ""]
    incomplete = per_notebook[~per_notebook.complete].notebook.tolist()
    if incomplete:
        parts += [f"Runs without provenance.json (interrupted or failed, their claims may be stale): "
                  f"{', '.join(incomplete)}.", ""]
    parts += ["## Failing claims", "",
              failing[["notebook", "claim_id", "statement", "paper_value", "ours", "note"]].to_markdown(index=False)
              if len(failing) else "None.", ""]
    if has_reruns:
        parts += _reruns_section(results_dir, claims, reruns)
    parts += ["## Every claim", "", claims[every].to_markdown(index=False), ""]
    csv, md = results_dir / "claims.csv", results_dir / "claims.md"
    with atomic_path(csv) as tmp:
        claims.to_csv(tmp, index=False)
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return csv, md, line
