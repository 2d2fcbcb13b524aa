"""Notebook 01's claims: each predicate holds on a hand-made table, fails on another, and on the poster's own numbers."""
from __future__ import annotations

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.analysis import claims as AC
from vlmlab.analysis import uniformity as U
from vlmlab.runtime import REPO_ROOT

CORRUPTIONS = ["gaussian_noise", "fog", "defocus_blur"]
PARAMS = {"profile": "embedded", "corruptions": CORRUPTIONS, "severities": [1, 5], "uniformity_kept_by": ["renditions"]}
# condition, severity: acc_plain, acc_ensemble, acc_corruption_prompt, entropy, uniformity, modality_gap_emd
HOLDING = {
    ("clean", 0): (80, 81, None, 0.7, 0.50, 1.30),
    ("gaussian_noise", 1): (50, 51, 49, 2.0, 0.70, 1.30),
    ("gaussian_noise", 5): (10, 11, 9, 3.5, 0.85, 1.30),
    ("fog", 1): (70, 71, 69, 1.0, 0.55, 1.30),
    ("fog", 5): (40, 42, 39, 1.7, 0.66, 1.31),
    ("defocus_blur", 1): (60, 61, 60, 1.2, 0.60, 1.30),
    ("defocus_blur", 5): (30, 31, 30, 2.0, 0.68, 1.29),
    ("renditions", 0): (60, 62, None, 0.9, 0.52, 1.34),
    ("thermal", 0): (30, 31, None, 2.5, 0.80, 1.32),
}


def _metrics(rows: dict) -> pd.DataFrame:
    out = [{"condition": c, "severity": s, "n_images": 10, **dict(zip(U.METRIC_COLUMNS, v))} for (c, s), v in rows.items()]
    return pd.DataFrame(out, columns=U.COLUMNS)


def _evidence(change: dict | None = None, params: dict | None = None, drop: tuple = ()) -> C.Evidence:
    """The holding world, with ``change = {(condition, severity): {column: value}}`` applied."""
    t = _metrics({k: v for k, v in HOLDING.items() if k not in drop})
    for (cond, sev), values in (change or {}).items():
        for col, value in values.items():
            t.loc[(t.condition == cond) & (t.severity == sev), col] = value
    corr = pd.DataFrame([U.correlations(t)])
    return C.Evidence({"metrics": t, "correlation": corr}, params=dict(PARAMS, **(params or {})))


def _verdict(check, ev: C.Evidence) -> str:
    try:
        return check(ev).verdict
    except C.NotMeasured:
        return "not_measured"


# One change per predicate that must turn it from holds into fails.
FAILING = {
    AC.check_corruption_lowers_accuracy: {("fog", 5): {"acc_plain": 80}},              # equal to clean: not below
    AC.check_corruption_raises_uniformity_loss: {("fog", 5): {"uniformity": 0.49}},
    AC.check_corruption_raises_entropy: {("defocus_blur", 5): {"entropy": 0.7}},
    AC.check_noise_lowest_accuracy: {("gaussian_noise", 5): {"acc_plain": 35}},       # above defocus (30)
    AC.check_noise_highest_uniformity_loss: {("gaussian_noise", 5): {"uniformity": 0.67}},  # below defocus (0.68)
    AC.check_corruption_prompt_does_not_help: {("fog", 5): {"acc_corruption_prompt": 45}},  # mean diff +4/3 > 0
    AC.check_domain_shift_lowers_accuracy: {("renditions", 0): {"acc_plain": 81}},
    AC.check_domain_shift_keeps_uniformity: {("renditions", 0): {"uniformity": 0.33}},  # |-0.17| > mildest rise 0.16
    AC.check_uniformity_separates_corruption_from_shift: {("renditions", 0): {"uniformity": 0.70}},
    AC.check_modality_gap_does_not_separate: {("fog", 5): {"modality_gap_emd": 1.50}},
    AC.check_ensemble_at_least_plain: {("fog", 5): {"acc_ensemble": 30}},                # -10 outweighs the +1s
    AC.check_accuracy_uniformity_negative_correlation: {k: {"uniformity": 1.0 - v[4]} for k, v in HOLDING.items()},
}


def test_every_claim_has_a_failing_case():
    assert {c.check for c in AC.CLAIMS} == set(FAILING)


@pytest.mark.parametrize("check", list(FAILING), ids=lambda f: f.__name__)
def test_predicate_holds_on_the_holding_world_and_fails_on_its_change(check):
    ok = check(_evidence())
    assert ok.verdict == "holds", ok
    assert ok.headline is not None and all(isinstance(v, (int, float)) for v in ok.ours.values())
    bad = check(_evidence(FAILING[check]))
    assert bad.verdict == "fails", bad


def test_headlines_are_the_documented_differences():
    ev = _evidence()
    assert AC.check_corruption_lowers_accuracy(ev).headline == pytest.approx(40 - 80)   # best corruption - clean
    assert AC.check_corruption_raises_uniformity_loss(ev).headline == pytest.approx((0.85 + 0.66 + 0.68) / 3 - 0.5)
    assert AC.check_noise_lowest_accuracy(ev).headline == pytest.approx(30 - 10)
    assert AC.check_noise_highest_uniformity_loss(ev).headline == pytest.approx(0.85 - 0.68)
    assert AC.check_domain_shift_keeps_uniformity(ev).headline == pytest.approx(0.02)
    assert AC.check_domain_shift_keeps_uniformity(ev).ours["mildest corruption rise"] == pytest.approx(0.16)
    # clean, renditions, thermal and the three corruptions at severity 5: gains 1, 2, 1, 1, 2, 1
    assert AC.check_ensemble_at_least_plain(ev).headline == pytest.approx(8 / 6)
    assert AC.check_corruption_prompt_does_not_help(ev).headline == pytest.approx(-2 / 3)


def test_ensemble_equal_to_plain_still_holds():
    same = {k: {"acc_ensemble": v[0]} for k, v in HOLDING.items()}
    assert AC.check_ensemble_at_least_plain(_evidence(same)).verdict == "holds"


@pytest.mark.parametrize("check", [AC.check_noise_lowest_accuracy, AC.check_noise_highest_uniformity_loss])
def test_noise_claims_need_noise_and_another_corruption(check):
    only_fog = _evidence(params={"corruptions": ["fog", "defocus_blur"]})
    with pytest.raises(C.NotMeasured, match="noise"):
        check(only_fog)
    with pytest.raises(C.NotMeasured, match="noise"):
        check(_evidence(params={"corruptions": ["gaussian_noise"]}))


@pytest.mark.parametrize("check", [c.check for c in AC.CLAIMS])
def test_corruption_and_shift_claims_need_severity_5_or_a_shift_set(check):
    sev1 = _evidence(params={"severities": [1]}, drop=tuple((c, 5) for c in CORRUPTIONS))
    no_shift = _evidence(params={"uniformity_kept_by": []})
    reads_shift = check in {AC.check_domain_shift_lowers_accuracy, AC.check_domain_shift_keeps_uniformity,
                            AC.check_uniformity_separates_corruption_from_shift, AC.check_modality_gap_does_not_separate}
    assert _verdict(check, no_shift) == ("not_measured" if reads_shift else "holds")
    if check is not AC.check_domain_shift_lowers_accuracy:  # the only one that reads no corruption
        assert _verdict(check, sev1) == "not_measured"


def test_correlation_with_too_few_conditions_is_not_measured():
    ev = _evidence(params={"corruptions": ["fog"], "uniformity_kept_by": []},
                   drop=tuple(k for k in HOLDING if k[1] == 0 and k[0] != "clean"))       # clean + fog at 5: n = 2
    with pytest.raises(C.NotMeasured, match="needs 3"):
        AC.check_accuracy_uniformity_negative_correlation(ev)


def test_correlation_reads_the_posters_columns_not_the_other_severities():
    """Clean, the shifted sets and severity 5 (the poster's 18 columns); severity-1 rows do not count."""
    flip_sev1 = {k: {"uniformity": v[0] / 25} for k, v in HOLDING.items() if k[1] == 1}   # sev 1: r > 0 overall
    v = AC.check_accuracy_uniformity_negative_correlation(_evidence(flip_sev1))
    assert v.verdict == "holds" and v.ours["n"] == 6                                 # 3 at severity 0 + 3 at 5
    assert v.ours["pearson_r"] < 0 < v.ours["every condition pearson_r"]
    ev = _evidence({k: {"uniformity": 1.0 - v[4]} for k, v in HOLDING.items() if k[1] != 1})
    every = ev.table("correlation").iloc[0]
    assert every.n == len(HOLDING)
    v = AC.check_accuracy_uniformity_negative_correlation(ev)
    assert v.verdict == "fails" and v.ours["every condition n"] == len(HOLDING)


def test_missing_rows_are_structural_errors_not_verdicts():
    with pytest.raises(KeyError, match="lacks severity-5 rows for \\['fog'\\]"):
        AC.check_corruption_lowers_accuracy(_evidence(drop=(("fog", 5),)))
    with pytest.raises(KeyError, match="uniformity_kept_by names \\['imagenet_r'\\]"):
        AC.check_domain_shift_lowers_accuracy(_evidence(params={"uniformity_kept_by": ["imagenet_r"]}))
    with pytest.raises(KeyError, match="'clean'"):
        AC.check_corruption_raises_entropy(_evidence(drop=(("clean", 0),)))


def test_evaluate_gives_unique_ids_and_valid_verdicts():
    ledger = C.evaluate(AC.CLAIMS, _evidence())
    assert ledger.claim_id.is_unique and len(ledger) == len(AC.CLAIMS) >= 12
    assert all(i.startswith("uniformity.") for i in ledger.claim_id)
    assert set(ledger.verdict) == {"holds"}
    mixed = C.evaluate(AC.CLAIMS, _evidence(params={"uniformity_kept_by": []}))
    assert set(mixed.verdict) <= set(C.VERDICTS) and (mixed.verdict == "not_measured").sum() == 4


def _poster_evidence() -> C.Evidence:
    """The poster's Table 1 (params/published) as the notebook's ``metrics`` table at severity 5."""
    pub = pd.read_csv(REPO_ROOT / "params" / "published" / "01_uniformity_analysis.csv")
    wide = pub[~pub.condition.str.endswith("mean")].pivot_table(index="condition", columns="metric", values="value")
    wide = wide.reset_index()
    shifts = ["clean", "imagenet_a", "imagenet_r"]
    wide["severity"] = [0 if c in shifts else 5 for c in wide.condition]
    wide["n_images"] = 50000
    t = wide[U.COLUMNS]
    params = {"corruptions": sorted(set(t.condition) - set(shifts)), "severities": [5],
              "uniformity_kept_by": ["imagenet_a", "imagenet_r"], "profile": "paper"}
    return C.Evidence({"metrics": t, "correlation": pd.DataFrame([U.correlations(t)])}, params=params)


def test_every_claim_holds_on_the_posters_own_numbers_and_matches_its_paper_value():
    ledger = C.evaluate(AC.CLAIMS, _poster_evidence())
    assert set(ledger.verdict) == {"holds"}, ledger[ledger.verdict != "holds"][["claim_id", "ours"]]
    assert ledger.vs_paper.str.startswith("within").all(), ledger[["claim_id", "vs_paper"]]
