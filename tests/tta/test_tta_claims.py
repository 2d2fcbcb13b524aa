"""Notebook 02's claims: each predicate on a hand-made table where it must hold and one where it must fail."""
from __future__ import annotations

import pandas as pd
import pytest

from vlmlab.claims import VERDICTS, Evidence, NotMeasured, evaluate
from vlmlab.tta import claims as T

CORR = ["gaussian_noise", "fog"]
# Poster-like means: UniInfo best and above No-adapt everywhere, TPT / TDA above, ZERO / MTA / few-shot below.
GOOD = {("no_adapt", None): [10, 30], ("linear_probe", 1): [5, 15], ("linear_probe", 5): [8, 25],
        ("tip_adapter", 1): [7, 20], ("tip_adapter", 5): [9, 28], ("tpt", None): [11, 32], ("zero", None): [8, 29],
        ("mta", None): [9, 30], ("tda", None): [12, 33], ("uniinfo", None): [14, 36]}


def tta_table(accs: dict, seeds=(0,)) -> pd.DataFrame:
    """tables/tta.csv as read back: one row per method, shots, corruption and seed."""
    rows = [{"method": m, "corruption": c, "severity": 5, "shots": k, "seed": s, "accuracy": float(a)}
            for (m, k), values in accs.items() for c, a in zip(CORR, values) for s in seeds]
    t = pd.DataFrame(rows)
    t["shots"] = t["shots"].astype(float)          # blank cells read back as NaN
    return t


def paired_table(diffs: dict, base=(20.0, 40.0)) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "corruption": c, "seed": 0, "n_images": 6, "accuracy": b + d,
                          "no_adapt_same_images": b, "difference": d}
                         for m, ds in diffs.items() for c, b, d in zip(CORR, base, ds)])


def geometry_table(before: float, after: float) -> pd.DataFrame:
    return pd.DataFrame([{"corruption": c, "stage": st, "n_images": 20, "uniformity": v, "unif_loss": -1.0,
                          "entropy": 1.0, "modality_gap": v + 0.5, "accuracy": 10.0, "seed": 0}
                         for c in CORR for st, v in (("before", before), ("after", after))])


def cost_table(tda: float, tpt: float) -> pd.DataFrame:
    return pd.DataFrame([{"method": "tda", "ms_per_image": tda, "peak_mem_mb": 1.0, "device": "cpu"},
                         {"method": "tpt", "ms_per_image": tpt, "peak_mem_mb": 1.0, "device": "cpu"}])


def evidence(accs=None, paired=None, geometry=None, cost=None) -> Evidence:
    tables = {"tta": tta_table(accs if accs is not None else GOOD),
              "paired": paired if paired is not None else paired_table({"tpt": [1, 1], "zero": [-1, -1],
                                                                        "mta": [-1, 0]}),
              "uniinfo_geometry": geometry if geometry is not None else geometry_table(0.8, 0.6),
              "cost": cost if cost is not None else cost_table(5.0, 200.0)}
    return Evidence(tables, params={"profile": "embedded", "corruptions": CORR})


def with_(**changes) -> dict:
    """GOOD with some rows replaced (``uniinfo=[..]``) or dropped (``uniinfo=None``)."""
    out = dict(GOOD)
    for m, v in changes.items():
        key = next(k for k in GOOD if k[0] == m)
        out.pop(key) if v is None else out.__setitem__(key, v)
    return out


def verdict(check, ev) -> str:
    return check(ev).verdict


def test_method_means_average_seeds_then_corruptions():
    t = tta_table({("no_adapt", None): [10, 30], ("uniinfo", None): [20, 40]}, seeds=(0, 1))
    t.loc[(t.method == "uniinfo") & (t.seed == 1), "accuracy"] += 10            # seed 1: 30, 50
    means = T.method_means(Evidence({"tta": t}))
    assert means.to_dict() == {"No-adapt": 20.0, "UniInfo": 35.0}


def test_incomplete_table_is_a_structural_error():
    t = tta_table(GOOD).iloc[1:]                                                 # no_adapt loses one corruption
    with pytest.raises(ValueError, match="lacks rows"):
        T.method_means(Evidence({"tta": t}))


def test_beats_no_adapt():
    v = T.check_beats_no_adapt(evidence())
    assert v.verdict == "holds" and v.headline == pytest.approx(5.0)            # (14+36)/2 - (10+30)/2
    assert verdict(T.check_beats_no_adapt, evidence(with_(uniinfo=[10, 30]))) == "fails"   # a tie is not a win
    with pytest.raises(NotMeasured, match="uniinfo"):
        T.check_beats_no_adapt(evidence(with_(uniinfo=None)))


def test_best_mean():
    v = T.check_best_mean(evidence())
    assert v.verdict == "holds" and v.headline == 25.0
    assert verdict(T.check_best_mean, evidence(with_(tda=[14, 37]))) == "fails"
    only = evidence({("uniinfo", None): [1, 2]})
    with pytest.raises(NotMeasured, match="only method"):
        T.check_best_mean(only)


def test_beats_no_adapt_every_corruption():
    assert verdict(T.check_beats_no_adapt_every_corruption, evidence()) == "holds"
    v = T.check_beats_no_adapt_every_corruption(evidence(with_(uniinfo=[9, 50])))   # higher mean, loses on noise
    assert v.verdict == "fails" and v.ours["corruptions won"] == 1 and v.ours["smallest gain (gaussian_noise)"] == -1


def test_tda_above_no_adapt_uses_table_means():
    v = T.check_tda_above_no_adapt(evidence())
    assert v.verdict == "holds" and v.headline == 2.5
    assert verdict(T.check_tda_above_no_adapt, evidence(with_(tda=[10, 29]))) == "fails"
    with pytest.raises(NotMeasured):
        T.check_tda_above_no_adapt(evidence(with_(tda=None)))


def test_multiview_claims_use_the_same_images():
    # Table means say TPT is below No-adapt, but on the same images it gains: the paired table decides.
    ev = evidence(with_(tpt=[5, 5]), paired=paired_table({"tpt": [1, 2], "zero": [-1, -1], "mta": [-1, 0]}))
    v = T.check_tpt_above_no_adapt(ev)
    assert v.verdict == "holds" and v.headline == 1.5 and v.ours["TPT"] == 5.0
    ev = evidence(paired=paired_table({"tpt": [-1, 0], "zero": [1, 0], "mta": [0, 0]}))
    assert [verdict(c, ev) for c in (T.check_tpt_above_no_adapt, T.check_zero_below_no_adapt,
                                     T.check_mta_below_no_adapt)] == ["fails", "fails", "fails"]
    ev = evidence()
    assert [verdict(c, ev) for c in (T.check_tpt_above_no_adapt, T.check_zero_below_no_adapt,
                                     T.check_mta_below_no_adapt)] == ["holds", "holds", "holds"]


def test_multiview_claim_without_paired_rows_falls_back_to_table_means():
    ev = evidence(paired=pd.DataFrame(columns=["method", "corruption", "accuracy", "no_adapt_same_images"]))
    v = T.check_zero_below_no_adapt(ev)
    assert v.verdict == "holds" and v.headline == pytest.approx(-1.5)          # 18.5 - 20
    with pytest.raises(NotMeasured, match="mta"):
        T.check_mta_below_no_adapt(evidence(with_(mta=None)))


def test_few_shot_rows_below_no_adapt_at_every_shot_count():
    v = T.check_linear_probe_below_no_adapt(evidence())
    assert v.verdict == "holds" and v.headline == pytest.approx(16.5 - 20)
    assert verdict(T.check_linear_probe_below_no_adapt,
                   evidence({**GOOD, ("linear_probe", 5): [12, 30]})) == "fails"     # one shot count above
    assert verdict(T.check_tip_adapter_below_no_adapt, evidence()) == "holds"
    assert verdict(T.check_tip_adapter_below_no_adapt, evidence({**GOOD, ("tip_adapter", 5): [10, 30]})) == "fails"
    no_lp = {k: v for k, v in GOOD.items() if k[0] != "linear_probe"}
    with pytest.raises(NotMeasured, match="linear_probe"):
        T.check_linear_probe_below_no_adapt(evidence(no_lp))


def test_baselines_sometimes_lower():
    v = T.check_baselines_sometimes_lower(evidence())                           # paired: ZERO -1, -1; MTA -1, 0
    assert v.verdict == "holds" and v.ours["ZERO cells below"] == 2 and v.ours["MTA cells below"] == 1
    assert v.ours["TPT cells below"] == 0 and v.ours["TDA cells below"] == 0 and v.ours["of"] == 8
    no_pairs = pd.DataFrame(columns=["method", "corruption", "accuracy", "no_adapt_same_images"])
    table_only = T.check_baselines_sometimes_lower(evidence(with_(mta=[10, 31]), paired=no_pairs))
    assert table_only.ours["ZERO cells below"] == 2 and table_only.ours["MTA cells below"] == 0   # a tie is not lower
    all_above = with_(zero=[11, 31], mta=[10, 30])
    fine = paired_table({"tpt": [1, 1], "zero": [0, 1], "mta": [0, 0]})
    assert verdict(T.check_baselines_sometimes_lower, evidence(all_above, paired=fine)) == "fails"
    bare = {k: v for k, v in GOOD.items() if k[0] not in T.BASELINES_TTA}
    with pytest.raises(NotMeasured, match="none of"):
        T.check_baselines_sometimes_lower(evidence(bare))


def test_more_uniform_and_modality_gap():
    for check in (T.check_more_uniform, T.check_closes_modality_gap):
        assert check(evidence(geometry=geometry_table(0.8, 0.6))).verdict == "holds"
        assert check(evidence(geometry=geometry_table(0.6, 0.6))).verdict == "fails"
        with pytest.raises(NotMeasured, match="geometry"):
            check(evidence(geometry=pd.DataFrame(columns=["corruption", "stage", "uniformity", "modality_gap"])))
    assert T.check_more_uniform(evidence()).headline == pytest.approx(-0.2)


def test_tda_cheaper_than_tpt():
    v = T.check_tda_cheaper_than_tpt(evidence())
    assert v.verdict == "holds" and v.headline == 40.0
    assert verdict(T.check_tda_cheaper_than_tpt, evidence(cost=cost_table(10.0, 9.0))) == "fails"
    with pytest.raises(NotMeasured, match="n_cost_images"):
        T.check_tda_cheaper_than_tpt(evidence(cost=pd.DataFrame(columns=["method", "ms_per_image"])))
    with pytest.raises(NotMeasured, match="tpt"):
        T.check_tda_cheaper_than_tpt(evidence(cost=cost_table(1.0, 2.0).iloc[:1]))


def test_every_claim_on_a_full_set_of_tables():
    ledger = evaluate(T.CLAIMS, evidence())
    assert ledger.claim_id.is_unique and all(i.startswith("uniinfo.") for i in ledger.claim_id)
    assert set(ledger.verdict) <= set(VERDICTS) and (ledger.verdict == "holds").all()
    failing = evaluate(T.CLAIMS, evidence(with_(uniinfo=[9, 29]), geometry=geometry_table(0.5, 0.7)))
    assert set(failing.verdict) <= set(VERDICTS)
    assert failing.set_index("claim_id").verdict["uniinfo.beats_no_adapt"] == "fails"
