"""``vlmlab verify``: headline numbers of a run against params/expected/<profile>/ (fake results trees)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from vlmlab import cli, verify
from vlmlab.verify import DEFAULT_TOL, FINE_TOL, Headlines, VerifyError, derive, lookup, parse_ours

NB = "01_uniformity_analysis"
CLAIMS = pd.DataFrame({
    "claim_id": ["uniformity.corruption_lowers_accuracy", "uniformity.corruption_raises_uniformity_loss",
                 "uniformity.accuracy_uniformity_negative_correlation", "uniformity.not_run"],
    "ours": ["clean=85; corruption mean=31.25; best=fog", "clean=0.2014; corruption mean=0.389",
             "pearson_r=-0.9041; n=6", ""],
    "verdict": ["holds", "holds", "holds", "not_measured"]})
METRICS = {"acc_vs_uniformity_pearson_r": -0.9041127, "acc_vs_uniformity_spearman_r": -0.6, "claims/holds": 3}


def make_run(root, notebook=NB, claims=CLAIMS, metrics=METRICS, finished=True):
    """A fake results/<profile>/<notebook>/ folder: claims ledger, metrics.json, provenance.json."""
    run = root / notebook
    (run / "tables").mkdir(parents=True, exist_ok=True)
    claims.to_csv(run / "tables" / "claims.csv", index=False)
    (run / "metrics.json").write_text(json.dumps(metrics))
    if finished:
        (run / "provenance.json").write_text(json.dumps({"notebook": notebook}))
    return run


def run_cli(capsys, *args):
    code = cli.main(["verify", *args])
    return code, capsys.readouterr().out


@pytest.fixture
def tree(tmp_path):
    """(results root, expected root, run folder results/fake/<NB>/) with one finished fake run of NB."""
    results, expected = tmp_path / "results", tmp_path / "expected"
    return results, expected, make_run(results / "fake")


def args(tree, *extra):
    results, expected, _ = tree
    return ["--profile", "fake", "--results-root", str(results), "--expected-root", str(expected), *extra]


def test_parse_ours_splits_names_and_values():
    assert parse_ours("clean=85; |a - b|=0.004; TV(image,blank)=0.25; best=fog") == {
        "clean": "85", "|a - b|": "0.004", "TV(image,blank)": "0.25", "best": "fog"}
    assert parse_ours("") == {}


def test_lookup_reads_metrics_and_table_cells(tree):
    run = tree[2]
    pd.DataFrame({"task": ["a", "a", "b"], "model": ["x", "y", "x"], "acc": [1.5, 2.5, 3.5]}).to_csv(
        run / "tables" / "main.csv", index=False)
    assert lookup(run, "metrics.json:acc_vs_uniformity_spearman_r") == -0.6
    assert lookup(run, "tables/main.csv:task=a&model=y:acc") == 2.5
    assert lookup(run, "tables/claims.csv:claim_id=uniformity.corruption_lowers_accuracy:ours[corruption mean]") \
        == 31.25
    with pytest.raises(VerifyError, match="picks 2 rows"):
        lookup(run, "tables/main.csv:task=a:acc")
    with pytest.raises(VerifyError, match="'best'.*not a number|not a number"):
        lookup(run, "tables/claims.csv:claim_id=uniformity.corruption_lowers_accuracy:ours[best]")
    with pytest.raises(VerifyError, match="no metric 'nope'"):
        lookup(run, "metrics.json:nope")


def test_derive_picks_numbers_and_tolerances(tree, monkeypatch):
    monkeypatch.setitem(verify.HEADLINES, NB, Headlines(
        metrics=("acc_vs_uniformity_*",), fine=("uniformity.*_uniformity*",),
        tol=(("uniformity.corruption_lowers_accuracy: clean", 2.0),)))
    numbers = derive(tree[2], NB)
    assert list(numbers) == [
        "uniformity.corruption_lowers_accuracy: clean", "uniformity.corruption_lowers_accuracy: corruption mean",
        "uniformity.corruption_raises_uniformity_loss: clean",
        "uniformity.corruption_raises_uniformity_loss: corruption mean",
        "uniformity.accuracy_uniformity_negative_correlation: pearson_r",
        "uniformity.accuracy_uniformity_negative_correlation: n",
        "acc_vs_uniformity_pearson_r", "acc_vs_uniformity_spearman_r"]          # "best=fog" and claims/* left out
    tol = {k: v["tol"] for k, v in numbers.items()}
    assert tol["uniformity.corruption_lowers_accuracy: clean"] == 2.0                     # per-number override
    assert tol["uniformity.corruption_lowers_accuracy: corruption mean"] == DEFAULT_TOL
    assert tol["uniformity.corruption_raises_uniformity_loss: clean"] == FINE_TOL         # notebook pattern
    assert tol["uniformity.accuracy_uniformity_negative_correlation: pearson_r"] == FINE_TOL  # everywhere
    for spec in numbers.values():                                                        # sources read back
        assert lookup(tree[2], spec["source"]) == pytest.approx(spec["value"])


def test_derive_leaves_out_timings(tmp_path):
    claims = pd.DataFrame({"claim_id": ["uniinfo.tda_cheaper_than_tpt"],
                           "ours": ["TDA ms/image=3.1; TPT ms/image=90; TPT / TDA=29"], "verdict": ["holds"]})
    run = make_run(tmp_path, "02_uniinfo_tta", claims, {"mean_acc/UniInfo": 50.0, "sweep/wall_s": 3.0})
    assert list(derive(run, "02_uniinfo_tta")) == ["mean_acc/UniInfo"]


def test_verify_passes_when_every_number_matches(tree, capsys):
    assert run_cli(capsys, *args(tree, "--update"))[0] == 0
    code, out = run_cli(capsys, *args(tree))
    assert code == 0, out
    assert "acc_vs_uniformity_pearson_r" in out and "MISS" not in out
    assert out.splitlines()[0].split() == ["notebook", "number", "expected", "got", "tol", "ok"]


def test_verify_names_the_number_that_is_off(tree, capsys):
    run_cli(capsys, *args(tree, "--update"))
    off = CLAIMS.copy()
    off.loc[0, "ours"] = "clean=84.2; corruption mean=31.6; best=fog"     # 0.8 off (miss), 0.35 off (within 0.5)
    make_run(tree[0] / "fake", claims=off)
    code, out = run_cli(capsys, *args(tree))
    assert code == 1
    assert f"MISS {NB}: uniformity.corruption_lowers_accuracy: clean" in out
    assert "corruption mean" not in out.split("missed")[1]
    assert "1 missed" in out


def test_verify_exit_2_without_results_or_expected_numbers(tree, capsys):
    assert run_cli(capsys, *args(tree))[0] == 2                         # no expected file yet
    run_cli(capsys, *args(tree, "--update"))
    (tree[2] / "provenance.json").unlink()                               # unfinished run counts as missing
    assert run_cli(capsys, *args(tree))[0] == 2
    import shutil
    shutil.rmtree(tree[2])
    assert run_cli(capsys, *args(tree))[0] == 2


def test_update_round_trip_keeps_list_and_tolerances(tree, capsys):
    results, expected, run = tree
    assert run_cli(capsys, *args(tree, "--update"))[0] == 0
    path = expected / "fake" / f"{NB}.json"
    numbers = json.loads(path.read_text())
    kept = {k: v for k, v in numbers.items() if "corruption_lowers_accuracy" in k}  # a reviewer trims the list
    kept["uniformity.corruption_lowers_accuracy: clean"]["tol"] = 3.0               # and widens one tolerance
    path.write_text(json.dumps(kept))
    changed = CLAIMS.copy()
    changed.loc[0, "ours"] = "clean=80; corruption mean=30; best=fog"
    changed.loc[1, "ours"] = "clean=0.5; corruption mean=0.6"                         # not in the list any more
    make_run(results / "fake", claims=changed)
    assert run_cli(capsys, *args(tree))[0] == 1                                        # 85 -> 80 misses by 5 > 3
    assert run_cli(capsys, *args(tree, "--update"))[0] == 0
    after = json.loads(path.read_text())
    assert list(after) == list(kept)
    assert after["uniformity.corruption_lowers_accuracy: clean"] == {**kept["uniformity.corruption_lowers_accuracy: clean"], "value": 80.0}
    assert after["uniformity.corruption_lowers_accuracy: corruption mean"]["value"] == 30.0
    assert run_cli(capsys, *args(tree))[0] == 0
    path.unlink()                                                                      # deleted: derived anew
    assert run_cli(capsys, *args(tree, "--update"))[0] == 0
    assert len(json.loads(path.read_text())) > len(kept)


def test_update_refuses_when_a_listed_number_is_gone(tree, capsys):
    run_cli(capsys, *args(tree, "--update"))
    path = tree[1] / "fake" / f"{NB}.json"
    before = path.read_text()
    gone = CLAIMS.copy()
    gone.loc[0, "ours"] = ""                                                          # now not measured
    make_run(tree[0] / "fake", claims=gone)
    assert run_cli(capsys, *args(tree, "--update"))[0] == 1
    assert path.read_text() == before                                                 # nothing half-written


def test_kernel_patterns_set_the_tolerance_after_exact_names_and_before_fine(tree, monkeypatch):
    monkeypatch.setitem(verify.HEADLINES, NB, Headlines(
        metrics=("acc_vs_uniformity_*",), fine=("uniformity.*_uniformity*",),
        tol=(("uniformity.corruption_lowers_accuracy: clean", 2.0),),
        kernel=(("uniformity.corruption_*", 3.0), ("acc_vs_uniformity_pearson*", 0.2), ("uniformity.*", 9.0))))
    tol = {k: v["tol"] for k, v in derive(tree[2], NB).items()}
    assert tol["uniformity.corruption_lowers_accuracy: clean"] == 2.0                 # exact name first
    assert tol["uniformity.corruption_lowers_accuracy: corruption mean"] == 3.0       # first kernel pattern
    assert tol["uniformity.corruption_raises_uniformity_loss: clean"] == 3.0          # kernel before fine
    assert tol["uniformity.accuracy_uniformity_negative_correlation: n"] == 9.0       # a later pattern
    assert tol["acc_vs_uniformity_pearson_r"] == 0.2
    assert tol["acc_vs_uniformity_spearman_r"] == FINE_TOL                            # no pattern: as before


def test_shipped_expected_tolerances_are_the_ones_headlines_derive():
    """A tolerance in params/expected equals HEADLINES' rule for its name (a hand edit of one would show)."""
    root = Path(__file__).resolve().parents[1] / "params" / "expected"
    files = sorted(root.glob("*/*.json"))
    assert files
    for f in files:
        spec = verify.HEADLINES.get(f.stem, Headlines())
        for name, number in verify.load_expected(f).items():
            assert number["tol"] == verify._tolerance(name, spec), (f.name, name)
