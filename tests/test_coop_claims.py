"""CoOp's claims ledger (vlmlab.coop.claims): each predicate on hand-made tables where it holds and where it fails.

The base world has two datasets, `objects` (near, the ImageNet analogue) and `digits` (far), with
numbers chosen so that every claim of the paper holds; each failing case changes the few cells the
claim reads. Tables have the columns the notebook saves (coop_mean_std, domain_generalization,
nearest_words).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.coop import claims as CC

SHOTS = (1, 2, 4, 8, 16)
ZS, LP, UC = "Zero-shot CLIP", "Linear probe", "CoOp M16 end"
PHOTO = "CoOp M4 end 'a photo of a'"


def base_world() -> dict[tuple[str, str, int], float]:
    """(label, dataset, shots) -> mean accuracy; every claim of the paper holds here."""
    zs = {"objects": 80.0, "digits": 20.0}
    gain = {"objects": 1.0, "digits": 10.0}  # per doubling of K: 1..5 on objects, 10..50 on digits
    w = {(ZS, d, 0): z for d, z in zs.items()}
    for d, z in zs.items():
        csc_shift = -2.0 if d == "objects" else 1.0                  # CSC loses on objects, wins on digits
        for i, k in enumerate(SHOTS):
            coop = z + gain[d] * (i + 1)
            w[(UC, d, k)] = coop
            w[(LP, d, k)] = coop - 10.0
            w[("CoOp M16 end CSC", d, k)] = coop + csc_shift
            w[("CoOp M16 middle", d, k)] = coop - 0.2
            w[("CoOp M16 middle CSC", d, k)] = coop - 0.2 + csc_shift
        top = w[(UC, d, 16)]
        w[("CoOp M4 end", d, 16)] = top + 1.0 if d == "objects" else top - 5.0   # best M: 4 on objects, 16 on digits
        w[("CoOp M8 end", d, 16)] = top - 1.0
        w[("CoOp M4 middle", d, 16)] = w[("CoOp M4 end", d, 16)] - 1.0
        w[(PHOTO, d, 16)] = w[("CoOp M4 end", d, 16)] + 0.5
    return w


def long_table(world: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    """coop_mean_std: per-dataset rows plus the "Average" over datasets where every dataset has the point."""
    rows = [{"dataset": d, "label": lb, "shots": k, "mean": v, "std": 0.5, "n_seeds": 3}
            for (lb, d, k), v in world.items()]
    t = pd.DataFrame(rows)
    n = t["dataset"].nunique()
    avg = t.groupby(["label", "shots"]).agg(mean=("mean", "mean"), count=("mean", "size")).reset_index()
    avg = avg[avg["count"] == n].drop(columns="count").assign(dataset="Average", std=0.5, n_seeds=3)
    return pd.concat([t, avg], ignore_index=True)[["dataset", "label", "shots", "mean", "std", "n_seeds"]]


DG_BASE = {("zero_shot", 0, "random"): (80.0, 50.0), ("linear_probe", 0, "random"): (75.0, 40.0),
           ("coop", 16, "random"): (85.0, 55.0), ("coop", 4, "random"): (84.0, 57.0)}


def dg_table(acc=DG_BASE, targets=("world:renditions", "world:thermal")) -> pd.DataFrame:
    """domain_generalization: (method, M, init) -> (source accuracy, accuracy on every target), 2 seeds."""
    rows = []
    for (method, m, init), (src, tgt) in acc.items():
        cols = ({"n_ctx": m, "position": "end", "init": init, "csc": False, "shots": 16} if method == "coop" else
                {"n_ctx": 0, "position": "-", "init": "-", "csc": False, "shots": 0 if method == "zero_shot" else 16})
        for seed in (1, 2):
            for target, a in [("objects", src), *[(t, tgt) for t in targets]]:
                rows.append({"source": "objects", "target": target, "method": method, **cols, "seed": seed,
                             "accuracy": a + (seed - 1.5) * 0.1})
    return pd.DataFrame(rows)


def words_table(d1=0.9, d2=1.0, n_ctx=4, k=3) -> pd.DataFrame:
    """nearest_words: every context vector has nearest distance d1, second d2, then +0.1 per rank."""
    return pd.DataFrame([{"dataset": "objects", "variant": "M16 end", "shots": 16, "seed": 1, "class_index": -1,
                          "ctx_index": m, "rank": r, "word": f"w{m}{r}",
                          "distance": d1 if r == 1 else d2 + 0.1 * (r - 2)}
                         for m in range(1, n_ctx + 1) for r in range(1, k + 1)])


def evidence(world=None, dg=None, words=None, far=("digits", "terrain")) -> C.Evidence:
    tables = {"coop_mean_std": long_table(base_world() if world is None else world),
              "domain_generalization": dg_table() if dg is None else dg,
              "nearest_words": words_table() if words is None else words}
    return C.Evidence(tables, params={"profile": "embedded", "far_datasets": list(far)})


def verdict(claim_id: str, ev: C.Evidence) -> pd.Series:
    claim = next(c for c in CC.CLAIMS if c.id == claim_id)
    return C.evaluate([claim], ev).iloc[0]


def setcells(updates: dict) -> dict:
    """base_world with the (label, dataset, shots) cells in ``updates`` replaced."""
    w = base_world()
    w.update(updates)
    return w


def without(drop) -> dict:
    """base_world without the cells whose key (label, dataset, shots) ``drop`` accepts."""
    return {k: v for k, v in base_world().items() if not drop(k)}


def csc_shifted(delta: float, on: str, shots: int | None = None) -> dict:
    """base_world with every CSC curve on dataset ``on`` (at ``shots``, or every K) moved by ``delta``."""
    w = base_world()
    for (lb, d, k), v in list(w.items()):
        if lb.endswith("CSC") and d == on and shots in (None, k):
            w[(lb, d, k)] = v + delta
    return w


MEASURED_HERE = [c.id for c in CC.CLAIMS if c.id != "coop.16shot_gain_per_dataset"]


@pytest.mark.parametrize("claim_id", MEASURED_HERE)
def test_every_claim_holds_on_the_base_world(claim_id):
    row = verdict(claim_id, evidence())
    assert row.verdict == "holds", (row.ours, row.note)


FAILING = {
    "coop.1shot_beats_zero_shot": lambda: evidence(setcells({(UC, "objects", 1): 70.0, (UC, "digits", 1): 25.0})),
    "coop.2shot_beats_zero_shot": lambda: evidence(setcells({(UC, "objects", 2): 70.0, (UC, "digits", 2): 25.0})),
    "coop.16shot_beats_zero_shot": lambda: evidence(setcells({(UC, "objects", 16): 70.0, (UC, "digits", 16): 25.0})),
    "coop.16shot_gain_large": lambda: evidence(setcells({(UC, "objects", 16): 80.0, (UC, "digits", 16): 39.0})),
    "coop.16shot_gain_imagenet_analogue": lambda: evidence(setcells({(UC, "objects", 16): 79.0})),
    "coop.16shot_beats_zero_shot_far": lambda: evidence(setcells({(UC, "digits", 16): 19.0})),
    "coop.16shot_gain_far_exceeds_near": lambda: evidence(setcells({(UC, "objects", 16): 99.0,
                                                                     (UC, "digits", 16): 30.0})),
    "coop.accuracy_rises_with_shots": lambda: evidence(setcells({(UC, "objects", 8): 99.0})),
    "coop.beats_linear_probe_every_shot": lambda: evidence(setcells({(LP, "objects", 4): 99.0})),
    "coop.linear_probe_below_zero_shot_1shot": lambda: evidence(setcells({(LP, "objects", 1): 90.0,
                                                                            (LP, "digits", 1): 30.0})),
    "coop.imagenet_linear_probe_below_zero_shot": lambda: evidence(setcells({(LP, "objects", 16): 81.0})),
    "coop.unified_wins_on_average": lambda: evidence(csc_shifted(10.0, on="digits")),
    "coop.csc_helps_specialised": lambda: evidence(csc_shifted(-2.0, on="digits", shots=16)),
    "coop.no_single_best_context_length": lambda: evidence(setcells({("CoOp M4 end", "objects", 16): 80.0})),
    "coop.longer_context_helps_on_average": lambda: evidence(setcells({("CoOp M4 end", "digits", 16): 90.0})),
    "coop.middle_gains_with_length": lambda: evidence(setcells({("CoOp M4 middle", "objects", 16): 99.0})),
    "coop.init_differs_little": lambda: evidence(setcells({(PHOTO, "objects", 16): 70.0, (PHOTO, "digits", 16): 45.0})),
    "coop.dg_beats_zero_shot": lambda: evidence(dg=dg_table({**DG_BASE, ("zero_shot", 0, "random"): (80.0, 56.0)})),
    "coop.dg_beats_linear_probe": lambda: evidence(dg=dg_table({**DG_BASE,
                                                                ("linear_probe", 0, "random"): (75.0, 56.0)})),
    "coop.dg_context_length_tradeoff": lambda: evidence(dg=dg_table({**DG_BASE, ("coop", 4, "random"): (84.0, 54.0)})),
    "coop.vectors_not_words": lambda: evidence(words=words_table(d1=0.1)),
}


def test_every_claim_has_a_failing_case():
    assert sorted(FAILING) == sorted(MEASURED_HERE)


@pytest.mark.parametrize("claim_id", sorted(FAILING))
def test_claim_fails_on_its_failing_table(claim_id):
    row = verdict(claim_id, FAILING[claim_id]())
    assert row.verdict == "fails", (row.ours, row.note)


def paper_world(gains: dict[str, float]) -> dict:
    w = {}
    for d, g in gains.items():
        w[(ZS, d, 0)] = 40.0
        w[(UC, d, 16)] = 40.0 + g
    return w


def test_per_dataset_gain_bars_hold_fail_and_not_measured():
    holds = paper_world({"EuroSAT": 46.0, "DTD": 21.0, "Food101": -2.0})  # Food101 has no bar
    fails = paper_world({"EuroSAT": 44.0, "DTD": 21.0})                  # 44 <= 45
    assert verdict("coop.16shot_gain_per_dataset", evidence(holds)).verdict == "holds"
    row = verdict("coop.16shot_gain_per_dataset", evidence(fails))
    assert row.verdict == "fails" and "below: ['EuroSAT']" in row.note
    assert verdict("coop.16shot_gain_per_dataset", evidence()).verdict == "not_measured"


def test_large_gain_bar_is_inclusive_at_ten_points():
    # average gain exactly 10: objects +1 (81), digits +19 (39) -> (1 + 19) / 2 = 10
    row = verdict("coop.16shot_gain_large", evidence(setcells({(UC, "objects", 16): 81.0, (UC, "digits", 16): 39.0})))
    assert row.verdict == "holds" and row.ours == "average gain=10"


def test_init_margin_is_symmetric():
    w = base_world()
    for d in ("objects", "digits"):
        w[(PHOTO, d, 16)] = w[("CoOp M4 end", d, 16)] - 0.9                  # 0.9 below random: still "little"
    assert verdict("coop.init_differs_little", evidence(w)).verdict == "holds"
    for d in ("objects", "digits"):
        w[(PHOTO, d, 16)] = w[("CoOp M4 end", d, 16)] - 1.1
    assert verdict("coop.init_differs_little", evidence(w)).verdict == "fails"


NOT_MEASURED = {
    "coop.16shot_beats_zero_shot": lambda: evidence(without(lambda k: k[2] == 16)),
    "coop.2shot_beats_zero_shot": lambda: evidence(without(lambda k: k[2] == 2)),
    "coop.1shot_beats_zero_shot": lambda: evidence(without(lambda k: k[0] == UC)),
    "coop.16shot_gain_imagenet_analogue": lambda: evidence(without(lambda k: k[1] == "objects")),
    "coop.16shot_beats_zero_shot_far": lambda: evidence(far=("terrain",)),
    "coop.16shot_gain_far_exceeds_near": lambda: evidence(far=("objects", "digits")),
    "coop.unified_wins_on_average": lambda: evidence(without(lambda k: "CSC" in k[0])),
    "coop.csc_helps_specialised": lambda: evidence(far=()),
    "coop.no_single_best_context_length": lambda: evidence(without(lambda k: k[0] in ("CoOp M4 end", "CoOp M8 end"))),
    "coop.middle_gains_with_length": lambda: evidence(without(lambda k: k[0] == "CoOp M4 middle")),
    "coop.init_differs_little": lambda: evidence(without(lambda k: k[0] == PHOTO)),
    "coop.dg_beats_zero_shot": lambda: evidence(dg=dg_table(targets=())),
    "coop.dg_beats_linear_probe": lambda: evidence(
        dg=dg_table({k: v for k, v in DG_BASE.items() if k[0] != "linear_probe"})),
    "coop.dg_context_length_tradeoff": lambda: evidence(dg=dg_table({k: v for k, v in DG_BASE.items() if k[1] != 4})),
    "coop.vectors_not_words": lambda: evidence(words=words_table(k=1)),
    "coop.16shot_gain_large": lambda: evidence(without(lambda k: k[2] == 16)),
    "coop.accuracy_rises_with_shots": lambda: evidence(without(lambda k: k[2] in (1, 2, 4, 8))),
    "coop.beats_linear_probe_every_shot": lambda: evidence(without(lambda k: k[0] == LP)),
    "coop.linear_probe_below_zero_shot_1shot": lambda: evidence(without(lambda k: k[0] == LP)),
    "coop.imagenet_linear_probe_below_zero_shot": lambda: evidence(without(lambda k: k[1] == "objects")),
    "coop.longer_context_helps_on_average": lambda: evidence(without(lambda k: k[0] in ("CoOp M4 end", "CoOp M8 end"))),
}


@pytest.mark.parametrize("claim_id", sorted(NOT_MEASURED))
def test_claim_not_measured_when_the_run_lacks_what_it_needs(claim_id):
    row = verdict(claim_id, NOT_MEASURED[claim_id]())
    assert row.verdict == "not_measured" and row.note, row.ours


def test_dg_reads_source_and_targets_apart():
    source, targets, names = CC._dg_means(evidence())
    assert names == ["world:renditions", "world:thermal"]
    assert math.isclose(source[UC], 85.0) and math.isclose(targets["Linear probe"], 40.0)


def test_nearest_words_ratio_counts_vectors_reading_as_words():
    w = words_table(d1=0.9)
    w.loc[(w.ctx_index == 1) & (w["rank"] == 1), "distance"] = 0.2       # one of four sits on a word
    row = verdict("coop.vectors_not_words", evidence(words=w))
    assert row.verdict == "holds" and "share reading as a word=0.25" in row.ours and "vectors=4" in row.ours


def test_missing_table_is_a_structural_error_not_a_verdict():
    ev = evidence()
    del ev.tables["domain_generalization"]
    with pytest.raises(KeyError, match="domain_generalization"):
        C.evaluate(CC.CLAIMS, ev)


def test_evaluate_all_claims_gives_unique_ids_and_valid_verdicts():
    ledger = C.evaluate(CC.CLAIMS, evidence())
    assert ledger.claim_id.is_unique and len(ledger) == len(CC.CLAIMS)
    assert set(ledger.verdict) <= set(C.VERDICTS)
    assert all(i.startswith("coop.") for i in ledger.claim_id)
    assert ledger.set_index("claim_id").verdict.to_dict() == {
        **{i: "holds" for i in MEASURED_HERE}, "coop.16shot_gain_per_dataset": "not_measured"}
    with_number = [c for c in CC.CLAIMS if isinstance(c.paper_value, float) and c.id in MEASURED_HERE]
    assert with_number and all(c.check(evidence()).headline is not None for c in with_number)  # vs_paper needs it
