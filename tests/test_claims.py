"""The claims ledger: evaluation, verdicts, the paper comparison, saving and the merged scorecard."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.cli import main as cli_main
from vlmlab.results import Run
from vlmlab.sweep import rerun_claims


def _gain_claim(paper_value=4.8, tolerance=1.0):
    def check(ev: C.Evidence) -> C.Verdict:
        t = ev.table("acc").set_index("method").accuracy
        if "coop" not in t:
            raise C.NotMeasured("no CoOp row")
        return C.holds_if(t["coop"] > t["zero_shot"], {"CoOp": t["coop"], "zero-shot": t["zero_shot"]},
                          "CoOp > zero-shot", headline=t["coop"] - t["zero_shot"])
    return C.Claim("demo.coop_beats_zero_shot", "CoOp", "Fig. 3", "CoOp beats zero-shot.", check,
                   paper_value=paper_value, tolerance=tolerance)


def _evidence(coop: float | None, zs: float = 60.0, profile="embedded") -> C.Evidence:
    rows = [("zero_shot", zs)] + ([("coop", coop)] if coop is not None else [])
    return C.Evidence({"acc": pd.DataFrame(rows, columns=["method", "accuracy"])}, params={"profile": profile})


def test_holds_fails_and_not_measured():
    claim = _gain_claim()
    ok = C.evaluate([claim], _evidence(65.0))
    assert list(ok.columns) == C.COLUMNS
    assert ok.verdict.tolist() == ["holds"] and ok.ours[0] == "CoOp=65; zero-shot=60"
    assert C.evaluate([claim], _evidence(55.0)).verdict.tolist() == ["fails"]
    missing = C.evaluate([claim], _evidence(None))
    assert missing.verdict.tolist() == ["not_measured"] and missing.note[0] == "no CoOp row"


def test_nan_among_compared_values_is_a_structural_error_not_a_verdict():
    with pytest.raises(ValueError, match="NaN"):
        C.evaluate([_gain_claim()], _evidence(math.nan))


def test_missing_table_raises_and_names_what_the_run_wrote():
    with pytest.raises(KeyError, match="'acc'.*wrote \\['other'\\]"):
        C.evaluate([_gain_claim()], C.Evidence({"other": pd.DataFrame()}))


def test_duplicate_ids_and_bad_returns_are_rejected():
    claim = _gain_claim()
    with pytest.raises(ValueError, match="twice"):
        C.evaluate([claim, claim], _evidence(65.0))
    bad = C.Claim("demo.bad", "p", "w", "s", lambda ev: True)
    with pytest.raises(TypeError, match="not a Verdict"):
        C.evaluate([bad], _evidence(65.0))
    with pytest.raises(ValueError, match="verdict"):
        C.Verdict("maybe")


def test_paper_comparison_only_in_the_paper_profile_and_within_tolerance():
    claim = _gain_claim(paper_value=4.8, tolerance=1.0)
    assert C.evaluate([claim], _evidence(65.0))["vs_paper"][0] == ""           # embedded: no comparison
    within = C.evaluate([claim], _evidence(65.5, profile="paper"))["vs_paper"][0]  # gain 5.5, |0.7| <= 1
    off = C.evaluate([claim], _evidence(67.0, profile="paper"))["vs_paper"][0]     # gain 7.0, |2.2| > 1
    assert within.startswith("within (+0.70") and off.startswith("off (+2.20")


def test_save_writes_csv_md_and_counts(tmp_path):
    run = Run("03_coop_shots", {"profile": "tiny", "out_dir": str(tmp_path)})
    ledger = C.evaluate([_gain_claim()], _evidence(55.0))
    C.save(run, ledger)
    back = pd.read_csv(tmp_path / "tables" / "claims.csv", keep_default_na=False)
    assert back.verdict.tolist() == ["fails"] and (tmp_path / "tables" / "claims.md").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["claims/fails"] == 1 and metrics["claims/holds"] == 0


def test_evidence_load_reads_saved_tables_but_not_the_ledger(tmp_path):
    run = Run("03_coop_shots", {"profile": "tiny", "out_dir": str(tmp_path)})
    run.save_table(pd.DataFrame({"method": ["zero_shot", "coop"], "accuracy": [60.0, 70.0]}), "acc")
    run.log_metric(r=0.5)
    C.save(run, C.evaluate([_gain_claim()], C.Evidence.load(tmp_path)))
    ev = C.Evidence.load(tmp_path, {"profile": "tiny"})
    assert sorted(ev.tables) == ["acc"] and ev.metrics == {"r": 0.5, "claims/holds": 1, "claims/fails": 0,
                                                           "claims/not_measured": 0}
    assert C.evaluate([_gain_claim()], ev).verdict.tolist() == ["holds"]


def test_evidence_load_reads_an_empty_table_as_empty(tmp_path):
    run = Run("02_uniinfo_tta", {"profile": "tiny", "out_dir": str(tmp_path)})
    run.save_table(pd.DataFrame(), "paired")                     # written as a bare newline
    assert C.Evidence.load(tmp_path).table("paired").empty


def _fake_notebook(root, name, verdicts, complete=True):
    run = Run(name, {"profile": "embedded", "out_dir": str(root / name)})
    rows = [{"claim_id": f"{name}.c{i}", "paper": "P", "where": "W", "statement": f"s{i}", "paper_value": "",
             "ours": f"x={i}", "verdict": v, "note": "", "vs_paper": ""} for i, v in enumerate(verdicts)]
    C.save(run, pd.DataFrame(rows, columns=C.COLUMNS))
    if complete:
        run.finish()


def test_merge_and_scorecard_of_two_notebooks(tmp_path):
    root = tmp_path / "results" / "embedded"
    _fake_notebook(root, "01_a", ["holds", "fails", "holds"])
    _fake_notebook(root, "02_b", ["not_measured", "fails"], complete=False)
    claims, per_nb = C.merge(root)
    assert per_nb.set_index("notebook")[["holds", "fails", "not_measured"]].to_dict("index") == {
        "01_a": {"holds": 2, "fails": 1, "not_measured": 0}, "02_b": {"holds": 0, "fails": 1, "not_measured": 1}}
    assert claims.complete.tolist() == [True] * 3 + [False] * 2
    assert cli_main(["claims", "--profile", "embedded", "--results-root", str(tmp_path / "results")]) == 0
    md = (root / "claims.md").read_text()
    assert "5 claims: 2 hold, 2 fail, 1 not measured" in md
    failing = md.split("## Failing claims")[1].split("## Every claim")[0]
    assert "01_a.c1" in failing and "02_b.c1" in failing and "01_a.c0" not in failing
    assert "02_b" in md.split("## Failing claims")[0].split("Runs without provenance.json")[1]
    assert len(pd.read_csv(root / "claims.csv")) == 5


def test_claims_command_without_results_says_what_to_run(tmp_path, caplog):
    assert cli_main(["claims", "--profile", "embedded", "--results-root", str(tmp_path)]) == 2
    assert "make reproduce" in caplog.text


def _fake_rerun(root, name, case, verdicts, done=True, commit=None, dirty=False):
    """A complete (or not) case of notebook ``name``'s rerun sweep, as ``vlmlab sweep`` leaves it."""
    _fake_notebook(root / name / "sweeps" / C.RERUNS, case, verdicts)
    folder = root / name / "sweeps" / C.RERUNS / case
    table = pd.read_csv(folder / "tables" / "claims.csv")
    table["claim_id"] = table.claim_id.str.replace(case, name)                # the notebook's claim ids
    table.to_csv(folder / "tables" / "claims.csv", index=False)
    (folder / "case.json").write_text("{}")
    if done:
        (folder / ".done").write_text("{}")
    if commit is not None:
        prov = json.loads((folder / "provenance.json").read_text())
        prov["git"] = {"commit": commit, "dirty": dirty}
        (folder / "provenance.json").write_text(json.dumps(prov))


def test_stability_counts_holds_over_the_run_and_its_complete_reruns(tmp_path):
    root = tmp_path / "embedded"
    _fake_notebook(root, "01_a", ["holds", "fails", "holds", "not_measured"])
    _fake_notebook(root, "02_b", ["holds"])
    _fake_rerun(root, "01_a", "seed=1", ["holds", "holds", "holds", "holds"])
    _fake_rerun(root, "01_a", "seed=2", ["holds", "fails", "fails", "not_measured"])
    _fake_rerun(root, "01_a", "seed=3", ["fails", "fails", "fails", "fails"], done=False)   # killed: skipped
    reruns = rerun_claims(root)
    assert sorted(set(reruns.run)) == ["seed=1", "seed=2"]
    out = C.stability(C.merge(root)[0], reruns).set_index("claim_id")
    assert out.runs_hold.to_dict() == {"01_a.c0": 3, "01_a.c1": 1, "01_a.c2": 2, "01_a.c3": 1, "02_b.c0": 1}
    assert out.runs.to_dict() == {"01_a.c0": 3, "01_a.c1": 3, "01_a.c2": 3, "01_a.c3": 1, "02_b.c0": 1}
    assert out.reruns.to_dict() == {"01_a.c0": "3/3 hold", "01_a.c1": "1/3 hold", "01_a.c2": "2/3 hold",
                                    "01_a.c3": "", "02_b.c0": ""}                 # measured once, no rerun
    assert out.changes.to_dict() == {"01_a.c0": False, "01_a.c1": True, "01_a.c2": True, "01_a.c3": False,
                                     "02_b.c0": False}
    # the verdict columns of the run itself are unchanged
    assert out.verdict.tolist() == ["holds", "fails", "holds", "not_measured", "holds"]


def test_scorecard_lists_claims_that_change_between_reruns(tmp_path):
    root = tmp_path / "results" / "embedded"
    _fake_notebook(root, "01_a", ["holds", "fails"])
    _fake_rerun(root, "01_a", "seed=1", ["holds", "holds"], commit="other")
    assert cli_main(["claims", "--profile", "embedded", "--results-root", str(tmp_path / "results")]) == 0
    md = (root / "claims.md").read_text()
    assert "2 claims: 1 hold, 1 fail, 0 not measured; 1 change verdict between the run and its reruns" in md
    section = md.split("## Claims that change verdict between reruns")[1].split("## Every claim")[0]
    assert "01_a.c1" in section and "1/2 hold" in section and "01_a.c0" not in section
    assert "Reruns of other code than their notebook's run (another commit, or one run on an edited tree): " \
           "01_a/seed=1." in section
    assert "2/2 hold" in md.split("## Every claim")[1]
    assert pd.read_csv(root / "claims.csv").changes.tolist() == [False, True]


def _set_code(run_dir, commit, dirty):
    prov = json.loads((run_dir / "provenance.json").read_text())
    prov["git"] = {"commit": commit, "dirty": dirty}
    (run_dir / "provenance.json").write_text(json.dumps(prov))


def test_run_code_names_the_commit_and_an_edited_tree(tmp_path):
    _fake_notebook(tmp_path, "01_a", ["holds"])
    _set_code(tmp_path / "01_a", "abc", dirty=False)
    assert C.run_code(tmp_path / "01_a") == "abc"
    _set_code(tmp_path / "01_a", "abc", dirty=True)
    assert C.run_code(tmp_path / "01_a") == "abc+dirty"
    _set_code(tmp_path / "01_a", None, dirty=None)
    assert C.run_code(tmp_path / "01_a") == "" and C.run_code(tmp_path / "missing") == ""


def test_scorecard_names_reruns_that_may_have_run_other_code(tmp_path):
    root = tmp_path / "results" / "embedded"
    _fake_notebook(root, "01_a", ["holds"])
    _set_code(root / "01_a", "abc", dirty=False)
    _fake_rerun(root, "01_a", "seed=1", ["holds"], commit="abc", dirty=True)       # the same commit, edited
    _fake_rerun(root, "01_a", "seed=2", ["holds"], commit="abc")                   # the same code

    def section():
        assert cli_main(["claims", "--profile", "embedded", "--results-root", str(tmp_path / "results")]) == 0
        return (root / "claims.md").read_text().split("## Claims that change verdict between reruns")[1]
    text = section()
    assert "(another commit, or one run on an edited tree): 01_a/seed=1." in text
    assert "seed=2" not in text and "edited tree of the same commit" not in text
    _set_code(root / "01_a", "abc", dirty=True)                                   # now the run was edited too
    text = section()
    assert "(another commit, or one run on an edited tree): 01_a/seed=2." in text
    assert "an edited tree of the same commit (the edits may differ): 01_a/seed=1." in text


def test_scorecard_without_reruns_has_no_rerun_columns(tmp_path):
    root = tmp_path / "embedded"
    _fake_notebook(root, "01_a", ["holds"])
    C.scorecard(root, rerun_claims(root))
    assert "reruns" not in (root / "claims.md").read_text()
    assert "changes" not in pd.read_csv(root / "claims.csv").columns
