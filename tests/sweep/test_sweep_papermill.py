"""The real thing, on 00_quickstart's tiny profile: 2 local workers, a case that fails on purpose,
the rerun plan, and collect. Two papermill runs side by side: 15-60 s on 2 loaded cores.
(Re-execution after a failure or a kill, and the submitit path, are in test_sweep_run.py with a
stand-in command, where they take seconds.)
"""
from __future__ import annotations

import datetime as dt
import json

import nbformat
import pandas as pd
import pytest
import yaml

from vlmlab.cli import main
from vlmlab.sweep import collect, load_sweep, run_sweep, status_table

CASES = [{"seed": 0, "n_points": 40},
         {"seed": -1, "n_points": 40}]                 # valid (an int) but numpy's default_rng(-1) raises inside


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    path = root / "tiny_mixed.yaml"
    path.write_text(yaml.safe_dump({"notebook": "00_quickstart", "profile": "tiny", "cases": CASES,
                                    "workers": 2, "tables": ["summary"]}))
    sweep = load_sweep(path, results_root=root / "results")
    return path, sweep, run_sweep(sweep)


def _window(folder):
    meta = nbformat.read(folder / "executed.ipynb", as_version=4).metadata.papermill
    return dt.datetime.fromisoformat(meta.start_time), dt.datetime.fromisoformat(meta.end_time)


@pytest.mark.timeout(300)
def test_two_local_workers_run_cases_side_by_side_and_list_the_failure(first_run):
    _, sweep, report = first_run
    ok, broken = sweep.expand()
    assert sorted((r.case_id, r.status) for r in report.results) == sorted([(ok.id, "complete"),
                                                                            (broken.id, "failed")])
    (s1, e1), (s2, e2) = _window(sweep.dir / ok.id), _window(sweep.dir / broken.id)
    assert s1 < e2 and s2 < e1, "the two cases did not run at the same time"
    failed = report.failed[0]
    assert "expected non-negative integer" in failed.error and failed.log == sweep.dir / broken.id / "papermill.log"
    assert "ValueError" in failed.log.read_text()
    assert not (sweep.dir / broken.id / ".done").exists()
    for case in (ok,):
        prov = json.loads((sweep.dir / case.id / "provenance.json").read_text())
        assert prov["profile"] == "tiny" and prov["parameters"]["seed"] == case.params["seed"]
        assert prov["parameters"]["out_dir"] == str(sweep.dir / case.id)


@pytest.mark.timeout(300)
def test_collect_merges_the_complete_cases_with_grid_columns(first_run):
    _, sweep, _ = first_run
    ok, broken = sweep.expand()
    out = collect(sweep)                                          # the failed case is left out
    reference = pd.read_csv(sweep.dir / ok.id / "tables" / "summary.csv").assign(seed=0, n_points=40, case_id=ok.id)
    pd.testing.assert_frame_equal(out, reference[list(out.columns)])
    assert set(out.columns[:2]) == {"seed", "n_points"} and out.columns[2] == "case_id"
    assert out.n.sum() == 40 and set(out.group) == {"a", "b", "c"}


def test_rerun_plan_keeps_the_complete_cases_and_retries_the_failed_one(first_run, capsys):
    path, sweep, _ = first_run
    ok, broken = sweep.expand()
    assert status_table(sweep).set_index("case_id").status.to_dict() == {ok.id: "complete", broken.id: "failed"}
    assert main(["sweep", str(path), "--results-root", str(sweep.results_root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 case(s)" in out and "1 complete, 1 to run" in out
    assert "first command: " in out and "-y '{n_points: 40, seed: -1}'" in out      # ready to paste
    assert broken.id in out.split("first command: ")[1]
