"""Notebook 04's claims on hand-made tables: every predicate holds, fails and (where it can) is not measured."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.visual_prompts import claims as VC

NAN = math.nan
PARAMS = {"profile": "embedded", "prompters": ["padding", "fixed_patch", "random_patch"]}


def vp_table(rows) -> pd.DataFrame:
    """``visual_prompting`` rows: (dataset, prompter, zero_shot, vp, lp); gain = vp - zero_shot, no gaps."""
    df = pd.DataFrame(rows, columns=["dataset", "prompter", "zero_shot_acc", "vp_acc", "linear_probe_acc"])
    df["gain"] = df.vp_acc - df.zero_shot_acc
    return df.assign(fid=1.0, lpips=0.1)[["dataset", "prompter", "zero_shot_acc", "vp_acc", "linear_probe_acc",
                                          "gain", "fid", "lpips"]]


def corr_table(fid=(0.8, 0.7), lpips=(0.5, 0.4), n=5) -> pd.DataFrame:
    return pd.DataFrame([("fid", *fid, 0.01, n), ("lpips", *lpips, 0.2, n)],
                        columns=["gap_metric", "pearson_r", "spearman_r", "p_value", "n_datasets"])


def summary_table(groups: dict[str, tuple[float, float, float]], prompter="padding") -> pd.DataFrame:
    """``gain_summary`` rows: group -> (zero_shot, vp, lp)."""
    rows = [(prompter, g, zs, vp, lp, vp - zs, 2) for g, (zs, vp, lp) in groups.items()]
    return pd.DataFrame(rows, columns=["prompter", "group", "zero_shot_acc", "vp_acc", "linear_probe_acc", "gain",
                                       "n_datasets"])


def vision_table(clip_gains, vision_gains) -> pd.DataFrame:
    rows = [(d, m, "padding", 0, 50.0, 50.0 + g, g) for m, gains in (("clip", clip_gains), ("vision_only", vision_gains))
            for d, g in gains.items()]
    return pd.DataFrame(rows, columns=["dataset", "model", "prompter", "seed", "base_acc", "vp_acc", "gain"])


def ev(params=PARAMS, **tables) -> C.Evidence:
    return C.Evidence(tables, params=params)


def verdict(check, evidence) -> str:
    try:
        return check(evidence).verdict
    except C.NotMeasured:
        return "not_measured"


# --- VP vs zero-shot ---------------------------------------------------------------------------------------

def test_vp_beats_zero_shot():
    up = vp_table([("a", "padding", 50, 55, 60), ("b", "padding", 40, 39, 45)])      # mean gain +2
    down = vp_table([("a", "padding", 50, 51, 60), ("b", "padding", 40, 37, 45)])    # mean gain -1
    v = VC.check_vp_beats_zero_shot(ev(visual_prompting=up))
    assert v.verdict == "holds" and v.headline == pytest.approx(2.0) and v.ours["n_datasets"] == 2
    assert VC.check_vp_beats_zero_shot(ev(visual_prompting=down)).verdict == "fails"
    other = vp_table([("a", "random_patch", 50, 55, 60)])
    assert verdict(VC.check_vp_beats_zero_shot, ev(visual_prompting=other)) == "not_measured"


def test_vp_beats_zero_shot_uses_the_first_prompter_of_the_run():
    t = vp_table([("a", "padding", 50, 45, 60), ("a", "random_patch", 50, 58, 60)])
    params = {"prompters": ["random_patch", "padding"]}
    assert VC.check_vp_beats_zero_shot(ev(params, visual_prompting=t)).verdict == "holds"
    assert VC.check_vp_beats_zero_shot(ev(visual_prompting=t)).verdict == "fails"


# --- prompter comparison -----------------------------------------------------------------------------------

@pytest.mark.parametrize("other, check", [("fixed_patch", VC.check_padding_beats_fixed_patch),
                                          ("random_patch", VC.check_padding_beats_random_patch)])
def test_padding_beats_patch_on_common_datasets(other, check):
    # padding runs on a, b, c; the patch only on a, b: c (padding 10) must not enter the comparison
    rows = [("a", "padding", 50, 60, 70), ("b", "padding", 50, 50, 70), ("c", "padding", 50, 10, 70)]
    holds = vp_table(rows + [("a", other, 50, 58, 70), ("b", other, 50, 50, 70)])   # 55 vs 54
    fails = vp_table(rows + [("a", other, 50, 61, 70), ("b", other, 50, 50, 70)])   # 55 vs 55.5
    v = check(ev(visual_prompting=holds))
    assert v.verdict == "holds" and v.ours == {"padding": 55.0, other: 54.0, "n_datasets": 2}
    assert check(ev(visual_prompting=fails)).verdict == "fails"
    tie = vp_table(rows[:1] + [("a", other, 50, 60, 70)])
    assert check(ev(visual_prompting=tie)).verdict == "fails"                       # strict
    assert verdict(check, ev(visual_prompting=vp_table(rows))) == "not_measured"     # prompter not run
    disjoint = vp_table(rows + [("z", other, 50, 1, 70)])
    assert verdict(check, ev(visual_prompting=disjoint)) == "not_measured"


# --- gain vs gap -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric, check", [("fid", VC.check_gain_correlates_with_fid),
                                           ("lpips", VC.check_gain_correlates_with_lpips)])
def test_gain_correlates_with_gap(metric, check):
    ok = check(ev(correlation=corr_table()))
    assert ok.verdict == "holds" and ok.headline > 0
    negative = corr_table(**{metric: (-0.3, -0.2)})
    mixed = corr_table(**{metric: (0.3, -0.1)})       # Pearson and Spearman must agree
    assert check(ev(correlation=negative)).verdict == "fails"
    assert check(ev(correlation=mixed)).verdict == "fails"
    undefined = corr_table(**{metric: (NAN, NAN)}, n=2)
    assert verdict(check, ev(correlation=undefined)) == "not_measured"
    only_other = corr_table()[lambda d: d.gap_metric != metric]
    assert verdict(check, ev(correlation=only_other)) == "not_measured"


# --- near / far --------------------------------------------------------------------------------------------

def test_gain_largest_far():
    holds = summary_table({"all": (50, 53, 60), "near": (60, 61, 62), "shift": (50, 52, 55), "far": (30, 36, 50)})
    fails = summary_table({"all": (50, 53, 60), "near": (60, 61, 62), "shift": (50, 58, 55), "far": (30, 36, 50)})
    v = VC.check_gain_largest_far(ev(gain_summary=holds))
    assert v.verdict == "holds" and v.ours == {"far": 6.0, "near": 1.0, "shift": 2.0} and v.headline == 4.0
    assert VC.check_gain_largest_far(ev(gain_summary=fails)).verdict == "fails"     # shift +8 > far +6
    no_far = summary_table({"all": (50, 53, 60), "near": (60, 61, 62)})
    only_far = summary_table({"all": (50, 53, 60), "far": (30, 36, 50)})
    other_prompter = summary_table({"near": (60, 61, 62), "far": (30, 36, 50)}, prompter="random_patch")
    for t in (no_far, only_far, other_prompter):
        assert verdict(VC.check_gain_largest_far, ev(gain_summary=t)) == "not_measured"


def test_vp_beats_linear_probe_far():
    holds = summary_table({"all": (50, 53, 60), "near": (60, 61, 62), "far": (30, 56, 50)})
    fails = summary_table({"all": (50, 53, 60), "near": (60, 61, 62), "far": (30, 36, 50)})
    v = VC.check_vp_beats_linear_probe_far(ev(gain_summary=holds))
    assert v.verdict == "holds" and v.headline == 6.0
    assert VC.check_vp_beats_linear_probe_far(ev(gain_summary=fails)).verdict == "fails"
    no_lp = summary_table({"all": (50, 53, NAN), "far": (30, 36, NAN)})
    assert verdict(VC.check_vp_beats_linear_probe_far, ev(gain_summary=no_lp)) == "not_measured"
    no_far = summary_table({"all": (50, 53, 60)})
    assert verdict(VC.check_vp_beats_linear_probe_far, ev(gain_summary=no_far)) == "not_measured"


# --- linear probe ------------------------------------------------------------------------------------------

def test_linear_probe_beats_vp_on_average():
    holds = vp_table([("a", "padding", 50, 70, 60), ("b", "padding", 40, 45, 60)])  # LP 60 vs VP 57.5
    fails = vp_table([("a", "padding", 50, 70, 60), ("b", "padding", 40, 55, 60)])  # LP 60 vs VP 62.5
    v = VC.check_linear_probe_beats_vp_on_average(ev(visual_prompting=holds))
    assert v.verdict == "holds" and v.headline == pytest.approx(2.5)
    assert VC.check_linear_probe_beats_vp_on_average(ev(visual_prompting=fails)).verdict == "fails"
    no_lp = vp_table([("a", "padding", 50, 70, NAN)])
    assert verdict(VC.check_linear_probe_beats_vp_on_average, ev(visual_prompting=no_lp)) == "not_measured"


def test_vp_beats_linear_probe_somewhere():
    holds = vp_table([("a", "padding", 50, 55, 60), ("b", "padding", 40, 62, 60), ("c", "padding", 1, 2, 3)])
    fails = vp_table([("a", "padding", 50, 55, 60), ("b", "padding", 40, 60, 60)])  # a tie is not a win
    v = VC.check_vp_beats_linear_probe_somewhere(ev(visual_prompting=holds))
    assert v.verdict == "holds" and v.ours["best_dataset"] == "b" and v.ours["n_vp_above_lp"] == 1
    assert VC.check_vp_beats_linear_probe_somewhere(ev(visual_prompting=fails)).verdict == "fails"
    no_lp = vp_table([("a", "padding", 50, 70, NAN)])
    assert verdict(VC.check_vp_beats_linear_probe_somewhere, ev(visual_prompting=no_lp)) == "not_measured"


# --- spread of the gain ------------------------------------------------------------------------------------

def test_gain_varies_across_datasets():
    holds = vp_table([("a", "padding", 50, 51, 60), ("b", "padding", 40, 50, 60)])  # gains 1, 10: spread 9 > 5.5
    fails = vp_table([("a", "padding", 50, 59, 60), ("b", "padding", 40, 50, 60)])  # gains 9, 10: spread 1 < 9.5
    v = VC.check_gain_varies_across_datasets(ev(visual_prompting=holds))
    assert v.verdict == "holds" and v.headline == pytest.approx(9.0)
    assert VC.check_gain_varies_across_datasets(ev(visual_prompting=fails)).verdict == "fails"
    negative = vp_table([("a", "padding", 50, 41, 60), ("b", "padding", 40, 30, 60)])  # gains -9, -10
    assert VC.check_gain_varies_across_datasets(ev(visual_prompting=negative)).verdict == "fails"
    one = vp_table([("a", "padding", 50, 51, 60)])
    assert verdict(VC.check_gain_varies_across_datasets, ev(visual_prompting=one)) == "not_measured"


# --- vision-only control -----------------------------------------------------------------------------------

def test_clip_gains_more_than_vision_only():
    holds = vision_table({"a": 5.0, "b": 3.0, "c": 100.0}, {"a": 1.0, "b": 2.0})   # c has no vision-only row
    fails = vision_table({"a": 1.0, "b": 2.0}, {"a": 5.0, "b": 3.0})
    v = VC.check_clip_gains_more_than_vision_only(ev(vision_only=holds))
    assert v.verdict == "holds" and v.ours == {"clip_gain": 4.0, "vision_only_gain": 1.5, "n_datasets": 2}
    assert VC.check_clip_gains_more_than_vision_only(ev(vision_only=fails)).verdict == "fails"
    empty = vision_table({}, {})
    clip_only = vision_table({"a": 5.0}, {})
    for e in (ev(vision_only=empty), ev(vision_only=clip_only), ev(visual_prompting=vp_table([]))):
        assert verdict(VC.check_clip_gains_more_than_vision_only, e) == "not_measured"


# --- the whole ledger --------------------------------------------------------------------------------------

def full_evidence() -> C.Evidence:
    vp = vp_table([("objects", "padding", 80, 82, 85), ("digits", "padding", 30, 40, 50),
                   ("terrain", "padding", 40, 45, 42), ("objects", "random_patch", 80, 81, 85),
                   ("digits", "random_patch", 30, 35, 50)])
    summary = summary_table({"all": (50, 55.67, 59), "near": (80, 82, 85), "far": (35, 42.5, 46)})
    return ev(visual_prompting=vp, correlation=corr_table(), gain_summary=summary,
              vision_only=vision_table({"digits": 10.0}, {"digits": 1.0}),
              gap=pd.DataFrame({"dataset": ["objects"], "fid": [0.1]}))


def test_evaluate_gives_unique_ids_and_valid_verdicts():
    ledger = C.evaluate(VC.CLAIMS, full_evidence())
    assert list(ledger.columns) == C.COLUMNS and len(ledger) == len(VC.CLAIMS) >= 11
    assert ledger.claim_id.is_unique and ledger.claim_id.str.startswith("vp.").all()
    assert set(ledger.verdict) <= set(C.VERDICTS)
    by_id = ledger.set_index("claim_id").verdict
    assert by_id["vp.padding_beats_fixed_patch"] == "not_measured"       # the run has no fixed patch
    assert by_id["vp.padding_beats_random_patch"] == "holds"
    assert by_id["vp.vp_beats_linear_probe_far"] == "fails" and by_id["vp.gain_largest_far"] == "holds"
    assert all(c.paper and c.where and c.statement for c in VC.CLAIMS)
