"""The ``vlmlab`` command: sweeps over a notebook and their merged tables, the claims scorecard, the site, verify, data.

    vlmlab sweep FILE [--executor local|slurm] [--workers N] [--dry-run] [--status]
    vlmlab collect FILE|DIR [--table NAME] [-o out.csv]
    vlmlab claims [--profile embedded] [--results-root results]
    vlmlab report [--profile embedded] [--results-root results]
    vlmlab verify [--profile embedded] [--update] [--results-root results] [--expected-root params/expected]
    vlmlab data status|fetch [NAME ... | --all] [--profile paper] [--notebooks NB ...] [--data-root DIR]

``sweep`` runs every case of the sweep file that is not complete yet (rerunning after a failure
or Ctrl-C finishes only what is missing) and exits 1 if a case failed, listing each failed case
with its papermill log. ``collect`` stacks one table of every complete case, with the grid
parameters as columns. See ``docs/sweeps.md``. ``claims`` merges every notebook's
``tables/claims.csv`` of a profile into ``results/<profile>/claims.md`` and ``.csv`` (the
scorecard). ``report`` builds the static site ``results/<profile>/site/index.html``
(:mod:`vlmlab.report`); ``verify`` compares a profile's headline numbers with
``params/expected/<profile>/`` and exits 1 on a miss, 2 when results are missing
(:mod:`vlmlab.verify`). Also ``python -m vlmlab.cli``.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
from pathlib import Path

from vlmlab import claims as claims_ledger
from vlmlab.runtime import REPO_ROOT, get_logger
from vlmlab.sweep import (SweepError, collect, jobs_for, load_sweep, rerun_claims, run_sweep, status_table,
                          write_table)

log = get_logger("vlmlab.cli")


def _out(text: str) -> None:
    """The command's own output (plans, status tables) goes to stdout; logs go to stderr."""
    sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmlab", description="vlmlab from the shell: sweeps over the notebooks, the claims scorecard, the results "
                                   "site, the check against the expected numbers, and the paper profile's data.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run the cases of a sweep file that are not complete yet")
    s.add_argument("file", help="sweep file, e.g. params/sweeps/embedded_small.yaml")
    s.add_argument("--executor", choices=["local", "slurm"], help="default: the file's `executor` (local)")
    s.add_argument("--workers", type=int, help="local cases at once (default: the file's, else #GPUs or 1)")
    s.add_argument("--dry-run", action="store_true", help="list the cases and what would run; run nothing")
    s.add_argument("--status", action="store_true", help="print each case's state and exit")
    s.add_argument("--rerun-all", action="store_true", help="also rerun complete cases")
    s.add_argument("--device", help="papermill -r device for every case (auto | cpu | cuda)")
    s.add_argument("--results-root", help="root of results/<profile>/<notebook>/sweeps/ (default: results/)")
    s.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                   help="submitit backend of --executor slurm; local/debug run without a cluster")
    s.add_argument("--no-wait", action="store_true", help="slurm: submit the job array and return")
    c = sub.add_parser("collect", help="merge one table of every complete case")
    c.add_argument("source", help="sweep file or sweep folder results/<profile>/<notebook>/sweeps/<name>/")
    c.add_argument("--table", help="table name (tables/<NAME>.csv); default: the file's `tables`, or the only one")
    c.add_argument("-o", "--output", help="CSV to write (default: <sweep folder>/<table>.csv)")
    c.add_argument("--results-root", help="root of results/ for a sweep file (default: results/)")
    k = sub.add_parser("claims", help="merge every notebook's claims of a profile into one scorecard")
    k.add_argument("--profile", default="embedded", help="results/<PROFILE>/ (default: embedded)")
    k.add_argument("--results-root", help="root of results/ (default: the repository's results/)")
    r = sub.add_parser("report", help="build the static site results/<profile>/site/index.html")
    r.add_argument("--profile", default="embedded", help="results/<PROFILE>/ (default: embedded)")
    r.add_argument("--results-root", help="root of results/ (default: the repository's results/)")
    v = sub.add_parser("verify", help="compare a profile's headline numbers with params/expected/<profile>/")
    v.add_argument("--profile", default="embedded", help="results/<PROFILE>/ (default: embedded)")
    v.add_argument("--update", action="store_true", help="rewrite the expected files from the current results")
    v.add_argument("--results-root", help="root of results/ (default: the repository's results/)")
    v.add_argument("--expected-root", help="root of the expected numbers (default: params/expected/)")
    d = sub.add_parser("data", help="datasets and weights of a profile: status, or fetch what is downloadable")
    d.add_argument("action", choices=["status", "fetch"], help="status: one table, exit 0 only if all present")
    d.add_argument("names", nargs="*", help="fetch: catalog names (see `vlmlab data status`)")
    d.add_argument("--all", action="store_true", help="fetch: every downloadable item of the profile")
    d.add_argument("--profile", default="paper", help="profile whose needs to list (default: paper)")
    d.add_argument("--notebooks", nargs="+", metavar="NB", help="only these notebooks' needs (e.g. 03_coop_shots)")
    d.add_argument("--data-root", help="data root (default: $VLMLAB_DATA, else ~/data)")
    return parser


def _data(args: argparse.Namespace) -> int:
    """``vlmlab data status|fetch``: see ``vlmlab.data.catalog`` and ``vlmlab.data.fetch``."""
    from vlmlab.data import catalog, check
    from vlmlab.runtime import data_root

    places = catalog.Places(data_root(args.data_root))
    if args.action == "fetch" and not (args.names or args.all):
        log.error("vlmlab data fetch: name the items (see `vlmlab data status`) or pass --all")
        return 2
    try:
        items = catalog.select(args.profile, args.notebooks, args.names)
    except KeyError as err:
        log.error("%s", err.args[0])
        return 2
    if not items:
        _out(f"profile {args.profile!r} needs no downloaded data or weights")
        return 0
    if args.action == "status":
        rows = [check.status(i, places) for i in items]
        _out(check.status_table(rows))
        return 0 if all(r.ok or r.item.optional for r in rows) else 1
    from vlmlab.data.fetch import FetchError, fetch_item

    failed = 0
    for item in items if args.names else [i for i in items if i.fetchable]:
        try:
            _out(f"{item.name}: {fetch_item(item, places)}")
        except FetchError as err:
            failed += 1
            log.error("%s", err)
    manual = [i.name for i in items if not i.fetchable and not args.names and not check.status(i, places).ok]
    if manual:
        _out(f"{len(manual)} item(s) need a manual step, listed by `vlmlab data status`: {', '.join(manual)}")
    return 1 if failed else 0


def _sweep(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.file, args.results_root)
    if args.device:
        sweep = dataclasses.replace(sweep, device=args.device)
    if args.status or args.dry_run:
        table = status_table(sweep)
        _out(table.drop(columns=["log"] if args.dry_run else []).to_string(index=False))
        todo = table if args.rerun_all else table[table.status != "complete"]
        _out(f"\n{len(table)} case(s) in {sweep.dir}: {len(table) - len(todo)} complete, {len(todo)} to run")
        if args.dry_run and len(todo):
            job = next(j for j in jobs_for(sweep) if j.case.id == todo.case_id.iloc[0])
            _out("first command: " + shlex.join(job.command()))
        return 0
    report = run_sweep(sweep, executor=args.executor, workers=args.workers, rerun_all=args.rerun_all,
                       cluster=args.cluster, wait=not args.no_wait)
    _out(report.summary())
    return 0 if report.ok else 1


def _collect(args: argparse.Namespace) -> int:
    source = Path(args.source)
    table = collect(source, args.table, args.results_root)
    if args.output:
        out = Path(args.output)
    else:
        folder = source if source.is_dir() else load_sweep(source, args.results_root, validate=False).dir
        out = folder / f"{table.attrs['table']}.csv"
    write_table(table, out)
    _out(f"{len(table)} rows from {table.case_id.nunique()} case(s) -> {out}")
    return 0


def _claims(args: argparse.Namespace) -> int:
    folder = Path(args.results_root or REPO_ROOT / "results") / args.profile
    try:
        csv, md, line = claims_ledger.scorecard(folder, rerun_claims(folder))
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    _out(f"{line}\n-> {md}\n-> {csv}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from vlmlab import report

    folder = Path(args.results_root or REPO_ROOT / "results") / args.profile
    try:
        index = report.build_site(folder)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    _out(f"-> {index}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from vlmlab import verify

    results = Path(args.results_root or REPO_ROOT / "results") / args.profile
    expected = Path(args.expected_root or REPO_ROOT / "params" / "expected") / args.profile
    try:
        if args.update:
            paths = verify.update_profile(results, expected)
            _out("\n".join(f"-> {p}" for p in paths))
            return 0
        table = verify.verify_profile(results, expected)
    except verify.MissingResults as err:
        log.error("%s", err)
        return 2
    except verify.VerifyError as err:
        log.error("%s", err)
        return 1
    _out(verify.format_table(table))
    misses = table[~table.ok]
    for row in misses.itertuples():
        log.error("MISS %s %s: expected %.6g, got %.6g, tol %g%s", row.notebook, row.number, row.expected,
                  row.got, row.tol, f" ({row.note})" if row.note else "")
    named = "".join(f"\n  MISS {r.notebook}: {r.number}" for r in misses.itertuples())
    _out(f"{len(table)} numbers: {int(table.ok.sum())} ok, {len(misses)} missed{named}")
    return 1 if len(misses) else 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)     # kill, make, a closed terminal or ssh session


def _raise_interrupt(signum, frame):               # stops the running cases like Ctrl-C does
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlmlab`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in STOP_SIGNALS}
    try:
        return {"sweep": _sweep, "collect": _collect, "claims": _claims, "report": _report, "verify": _verify,
                "data": _data}[args.command](args)
    except SweepError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted; complete cases are kept, rerun the same command to finish the rest")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
