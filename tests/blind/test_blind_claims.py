"""Notebook 05's claims (``vlmlab.blind.claims``): every predicate on a hand-made table where it must hold,
one where it must fail, and ``not_measured`` where the run lacks what it needs.

The hand-made world: two tasks, ``depth`` (2 options, chance 50 %) and ``correspondence`` (4 options, chance
25 %), with the columns the notebook saves (``vlmlab.blind.experiment``).
"""
from __future__ import annotations

import pandas as pd
import pytest

from vlmlab import claims as C
from vlmlab.blind import claims as B

TASKS = ("depth", "correspondence")
FREQ = {"image": {"depth": [.6, .4], "correspondence": [.7, .1, .1, .1]},
        "blank": {"depth": [.65, .35], "correspondence": [.75, .1, .05, .1]},
        "labels": {"depth": [.5, .5], "correspondence": [.25, .25, .25, .25]}}
FINETUNE = {("original", 0): (62, 28), ("prompt", 1): (64, 30), ("prompt", 5): (65, 29), ("prompt", 10): (63, 29),
            ("lora", 8): (70, 40), ("projector", 0): (63, 27), ("vision", 0): (62, 30)}
TV = {"original": (.3, .4), "prompt-1": (.28, .38), "prompt-5": (.29, .37), "prompt-10": (.3, .39), "lora": (.1, .1),
      "projector": (.2, .25), "vision": (.29, .39)}


def readout(vlm=(62, 28), readout_acc=(85, 70), tasks=TASKS) -> pd.DataFrame:
    chance = {"depth": 50.0, "correspondence": 25.0}
    return pd.DataFrame([{"task": t, "model": "m", "readout_acc": r, "vlm_acc": v, "chance": chance[t]}
                         for t, r, v in zip(TASKS, readout_acc, vlm) if t in tasks])


def blind(freq=None) -> pd.DataFrame:
    freq = {**FREQ, **(freq or {})}
    return pd.DataFrame([{"task": t, "model": "m", "condition": c, "option": "ABCD"[i], "frequency": f}
                         for c, per_task in freq.items() for t, fs in per_task.items() for i, f in enumerate(fs)])


def layers(trunk=(85, 70), lm=((80, 78), (66, 64))) -> pd.DataFrame:
    rows = []
    for t, tr, per_layer in zip(TASKS, trunk, lm):
        rows.append({"task": t, "model": "m", "layer": -1, "accuracy": tr})
        rows += [{"task": t, "model": "m", "layer": i, "accuracy": a} for i, a in enumerate(per_layer)]
    return pd.DataFrame(rows)


def finetune(**changes) -> pd.DataFrame:
    """``changes``: ``lora=(d, c)`` replaces a variant's accuracies, ``prompt_10=None`` drops a row."""
    table = dict(FINETUNE)
    for key, acc in changes.items():
        variant, _, n = key.partition("_")
        match = [k for k in table if k[0] == variant and (not n or k[1] == int(n))]
        for k in match:
            if acc is None:
                del table[k]
            else:
                table[k] = acc
    return pd.DataFrame([{"task": t, "variant": v, "n_tokens_or_rank": n, "accuracy": a}
                         for (v, n), accs in table.items() for t, a in zip(TASKS, accs)])


def tv(**changes) -> pd.DataFrame:
    table = {**TV, **changes}
    return pd.DataFrame([{"task": t, "model": "m", "variant": v, "tv": x}
                         for v, xs in table.items() if xs is not None for t, x in zip(TASKS, xs)])


def evidence(**tables) -> C.Evidence:
    """A full set of holding tables, ``tables`` replacing some."""
    full = {"readout_vs_vlm": readout(), "blind": blind(),
            "blind_agreement": pd.DataFrame({"task": TASKS, "same_answer_blank": [90.0, 80.0], "blank_acc": [50, 25]}),
            "layers": layers(), "finetune": finetune(), "tv": tv(), **tables}
    return C.Evidence(full, params={"profile": "embedded", "tasks": list(TASKS)})


def verdict(check, ev) -> str:
    try:
        return check(ev).verdict
    except C.NotMeasured:
        return "not_measured"


CASES = {   # predicate: (tables where it fails, tables where it is not measured or None)
    B.check_vlm_below_readout: ({"readout_vs_vlm": readout(vlm=(62, 72))}, None),
    B.check_vlm_near_chance: ({"readout_vs_vlm": readout(vlm=(62, 40))},
                              {"readout_vs_vlm": readout(tasks=("depth",))}),
    B.check_vlm_above_chance_depth_style: ({"readout_vs_vlm": readout(vlm=(48, 28))},
                                           {"readout_vs_vlm": readout(tasks=("correspondence",))}),
    B.check_blank_barely_changes: ({"blind": blind({"blank": {"depth": [.65, .35],
                                                              "correspondence": [1.0, 0, 0, 0]}})}, None),
    B.check_blank_answers_skewed: ({"blind": blind({"blank": FREQ["labels"]})}, None),
    B.check_hidden_states_beat_answers: ({"layers": layers(lm=((80, 78), (20, 22)))}, None),
    B.check_hidden_states_keep_encoder_level: ({"layers": layers(lm=((50, 50), (30, 30)))}, None),
    B.check_prompt_tuning_helps_little: ({"finetune": finetune(prompt_1=(80, 30))},
                                         {"finetune": finetune(prompt=None)}),
    B.check_more_tokens_no_help: ({"finetune": finetune(prompt_10=(75, 29))},
                                  {"finetune": finetune(prompt_5=None, prompt_10=None)}),
    B.check_lora_helps_every_task: ({"finetune": finetune(lora=(70, 27))}, {"finetune": finetune(lora=None)}),
    B.check_lora_helps_most: ({"finetune": finetune(projector=(80, 60))},
                              {"finetune": finetune(prompt=None, projector=None, vision=None)}),
    B.check_lora_still_below_readout: ({"finetune": finetune(lora=(90, 40))}, {"finetune": finetune(lora=None)}),
    B.check_projector_helps_little: ({"finetune": finetune(projector=(72, 38))},
                                     {"finetune": finetune(projector=None)}),
    B.check_vision_helps_little: ({"finetune": finetune(vision=(72, 38))}, {"finetune": finetune(vision=None)}),
    B.check_tv_lora_lowest: ({"tv": tv(lora=(.25, .22))}, {"tv": tv(lora=None)}),
    B.check_tv_projector_below_vision: ({"tv": tv(projector=(.4, .4))}, {"tv": tv(projector=None)}),
}


@pytest.mark.parametrize("check", list(CASES), ids=lambda f: f.__name__)
def test_predicate_holds_fails_and_is_not_measured(check):
    failing, missing = CASES[check]
    assert verdict(check, evidence()) == "holds"
    assert verdict(check, evidence(**failing)) == "fails"
    if missing is not None:
        assert verdict(check, evidence(**missing)) == "not_measured"


def test_general_competence_is_not_measured_without_its_table_and_uses_the_chance_margin():
    general = lambda acc: pd.DataFrame({"task": ["colour", "letters"], "accuracy": [94.0, acc], "chance": [10.0, 25.0]})
    assert verdict(B.check_vlm_competent_general, evidence()) == "not_measured"
    assert verdict(B.check_vlm_competent_general, evidence(general_questions=general(60.0))) == "holds"
    assert verdict(B.check_vlm_competent_general, evidence(general_questions=general(27.1))) == "fails"   # model card
    assert verdict(B.check_vlm_competent_general,                                   # 6 points above chance: near it
                   evidence(general_questions=general(25.0 + B.NEAR_CHANCE_PTS))) == "fails"


def test_every_predicate_has_a_test():
    tested = set(CASES) | {B.check_vlm_competent_general}
    assert {c.check for c in B.CLAIMS} == tested


def test_blank_tv_and_skew_by_hand():
    """TV(image, blank): depth |.6-.65| = .05; correspondence (.05 + 0 + .05 + 0) / 2 = .05. The blank answers'
    top share minus 1/k: depth .65 - .5, correspondence .75 - .25 (k from the task's own options, not 4)."""
    v = B.check_blank_barely_changes(evidence())
    assert v.headline == pytest.approx(0.05) and v.ours["mean same answer %"] == 85.0
    s = B.check_blank_answers_skewed(evidence())
    assert s.headline == pytest.approx((0.15 + 0.5) / 2) and s.ours["labels top share - 1/k"] == 0.0


def test_headlines_by_hand():
    ev = evidence()
    assert B.check_vlm_below_readout(ev).headline == pytest.approx(((85 - 62) + (70 - 28)) / 2)
    assert B.check_hidden_states_keep_encoder_level(ev).headline == pytest.approx(((85 - 79) + (70 - 65)) / 2)
    assert B.check_prompt_tuning_helps_little(ev).headline == pytest.approx(((65 - 62) + (30 - 28)) / 2)
    assert B.check_lora_helps_every_task(ev).headline == pytest.approx(((70 - 62) + (40 - 28)) / 2)


def test_missing_table_is_a_structural_error_not_a_verdict():
    ev = evidence()
    del ev.tables["layers"]
    with pytest.raises(KeyError, match="layers"):
        B.check_hidden_states_beat_answers(ev)


def test_evaluate_all_claims_on_a_full_set_of_tables():
    ledger = C.evaluate(B.CLAIMS, evidence())
    assert ledger.claim_id.is_unique and ledger.claim_id.str.startswith("blind.").all()
    assert set(ledger.verdict) <= set(C.VERDICTS)
    by_id = ledger.set_index("claim_id").verdict
    assert by_id["blind.vlm_competent_general"] == "not_measured"
    assert (by_id.drop("blind.vlm_competent_general") == "holds").all()
    assert all("003_e40e81704cf32457" in c.where and "hidden_in_plain_sight.md" in c.where for c in B.CLAIMS)


# hidden_in_plain_sight.md, transcribed: §5 (readout, VLM) per task, §6 (with image, blank) per letter,
# §8 (0 / 1 / 5 / 10 tokens) per task, §9 DINOv2 (VLM, FT ViT, FT Proj, FT LLM) per task.
S5_CLIP = [(.385, .298), (.533, .183), (.853, .624), (.295, .171), (.761, .539), (.504, .329)]
S6 = [[(.659, .603), (.087, .103), (.101, .080), (.087, .154), (.065, .060)],
      [(.532, .608), (.152, .058), (.058, .054), (.117, .101), (.140, .178)],
      [(.460, .529), (.540, .471)],
      [(.504, .558), (.101, .085), (.078, .062), (.124, .122), (.194, .172)],
      [(.897, .729), (.103, .271)],
      [(.177, .145), (.276, .117), (.523, .696), (.024, .042)]]
S8_CLIP = [(.298, .310, .310, .302), (.183, .202, .204, .205), (.624, .627, .642, .626)]
S9_DINO = [(.221, .324, .199, .353), (.152, .144, .199, .301), (.162, .198, .139, .351),
           (.529, .529, .511, .589), (.652, .628, .640, .729), (.312, .319, .316, .355)]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def test_numeric_paper_values_follow_from_the_docs_tables_and_name_their_model():
    """Each float ``paper_value`` is the doc's number its ``where`` names (e.g. CLIP's VLM, not a 4-model mean)."""
    letters = [task[:-1] if len(task) == 5 else task for task in S6]          # the 'other' bar is not a letter
    expected = {
        "vlm_below_readout": 100 * _mean(r - v for r, v in S5_CLIP),
        "blank_barely_changes": _mean(0.5 * sum(abs(a - b) for a, b in task) for task in S6),
        "blank_answers_skewed": _mean(max(b for _, b in task) - 1 / len(opts) for task, opts in zip(S6, letters)),
        "prompt_tuning_helps_little": 100 * _mean(max(t[1:]) - t[0] for t in S8_CLIP),
        "lora_helps_every_task": 100 * _mean(t[3] - t[0] for t in S9_DINO),
        "projector_helps_little": 100 * _mean(t[2] - t[0] for t in S9_DINO),
        "vision_helps_little": 100 * _mean(t[1] - t[0] for t in S9_DINO),
    }
    claims = {c.id.removeprefix("blind."): c for c in B.CLAIMS}
    numeric = {k for k, c in claims.items() if isinstance(c.paper_value, (int, float))}
    assert numeric == set(expected)
    model = {"vlm_below_readout": "CLIP", "prompt_tuning_helps_little": "CLIP", "lora_helps_every_task": "DINOv2",
             "projector_helps_little": "DINOv2", "vision_helps_little": "DINOv2",
             "blank_barely_changes": "unnamed VLM", "blank_answers_skewed": "unnamed VLM"}
    for finding, value in expected.items():
        assert claims[finding].paper_value == pytest.approx(value, abs=0.05 if value > 1 else 0.001), finding
        assert model[finding] in claims[finding].where, (finding, claims[finding].where)
