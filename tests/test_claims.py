"""The claims ledger: evaluation, verdicts, the paper comparison, saving and the merged scorecard."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.cli import main as cli_main
from vlmlab.results import Run


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
