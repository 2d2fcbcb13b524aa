"""Notebook 05's control rows: letter questions in the vision-centric formats about trained attributes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import vlmlab.blind.experiment as BX
from vlmlab.blind.tasks import CONTROLS, LETTERS, control_task, options_text
from vlmlab.blind.train_vlm import MULTI_QUESTIONS
from vlmlab.blind.vlm import TinyVLM, VLMConfig, WordTokenizer, option_logprobs


@pytest.fixture(scope="module")
def tiny_vlm():
    """A random 2-block VLM on the embedded CLIP whose vocabulary holds every control question's words."""
    from vlmlab.models import load_clip

    texts = [t.segments(q)[-1] for name in CONTROLS for t in [control_task(name, 8, seed=0, size=32)]
             for q in range(len(t))]
    torch.manual_seed(0)
    return TinyVLM(load_clip("embedded", device="cpu"), WordTokenizer.from_texts(texts),
                   VLMConfig(width=32, layers=2, heads=2, mlp=64)).eval()


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_tasks_have_their_formats_one_match_and_balanced_answers(name):
    format_of, k, attr = CONTROLS[name]
    task = control_task(name, 4 * k, seed=3, size=32)
    assert format_of in ("depth", "style", "correspondence", "odd_one_out")
    assert task.n_options == k == (2 if format_of in ("depth", "style") else 4)
    assert task.images.shape == (4 * k, k, 32, 32, 3) and task.labels == tuple(LETTERS[:k])
    assert np.bincount(task.answers, minlength=k).tolist() == [4] * k          # each letter right 4 times
    for ans, m in zip(task.answers, task.meta):
        assert m["values"][ans] == m["target"] and m["values"].count(m["target"]) == 1


@pytest.mark.parametrize("name", list(CONTROLS))
def test_control_questions_are_the_training_templates_and_the_prompt_uses_them(name):
    _, k, attr = CONTROLS[name]
    task = control_task(name, 6, seed=1, size=32)
    assert task.question == MULTI_QUESTIONS[attr]
    for q, m in enumerate(task.meta):
        assert task.questions[q] == MULTI_QUESTIONS[attr].format(m["target"])
        seg = task.segments(q)
        assert seg[-1] == f"{task.questions[q]} {options_text(k)}"
        assert seg[:-1] == [x for i in range(k) for x in (LETTERS[i], i)]     # A <img> B <img> ... as in training


def test_control_tasks_are_deterministic_and_reject_unknown_names():
    a, b = control_task("control_depth", 4, seed=7, size=32), control_task("control_depth", 4, seed=7, size=32)
    assert np.array_equal(a.images, b.images) and a.questions == b.questions
    assert not np.array_equal(a.images, control_task("control_depth", 4, seed=8, size=32).images)
    with pytest.raises(KeyError, match="control_depth"):
        control_task("depth", 4)


def test_letter_scores_use_each_questions_own_text(tiny_vlm):
    """Per-question texts reach the LM: each row equals scoring that question's own prompt alone."""
    task = control_task("control_odd_one_out", 3, seed=0, size=32)
    patches = BX.trunk_patches(tiny_vlm, task.images)
    lp = BX.vlm_logprobs(tiny_vlm, task, patches)
    for q in range(3):
        one = option_logprobs(tiny_vlm, [task.segments(q)], [patches[q]], list("ABCD"))
        torch.testing.assert_close(lp[q:q + 1], one)


def test_control_table_on_a_tiny_vlm_has_its_columns_and_chance(tiny_vlm):
    t = BX.control_table(tiny_vlm, list(CONTROLS), n=8, seed=0, size=32)
    assert list(t.columns) == ["task", "format_of", "n_options", "accuracy", "chance"]
    assert t.task.tolist() == list(CONTROLS) and t.format_of.tolist() == [v[0] for v in CONTROLS.values()]
    assert t.chance.tolist() == [50.0, 50.0, 25.0, 25.0] and t.n_options.tolist() == [2, 2, 4, 4]
    assert t.accuracy.between(0, 100).all() and (t.accuracy * 8 / 100).round(6).mod(1).eq(0).all()   # k of 8


def test_control_table_scores_planted_answers(tiny_vlm, monkeypatch):
    """An oracle letter scorer gets 100 %; one that always says A gets exactly chance (balanced answers)."""
    oracle = lambda vlm, task, patches, n_soft=0: torch.eye(task.n_options)[torch.as_tensor(task.answers)].log()
    monkeypatch.setattr(BX, "vlm_logprobs", oracle)
    assert (BX.control_table(tiny_vlm, list(CONTROLS), n=8, seed=0, size=32).accuracy == 100.0).all()
    always_a = lambda vlm, task, patches, n_soft=0: torch.eye(task.n_options)[torch.zeros(len(task), dtype=int)].log()
    monkeypatch.setattr(BX, "vlm_logprobs", always_a)
    t = BX.control_table(tiny_vlm, list(CONTROLS), n=8, seed=0, size=32)
    assert t.accuracy.tolist() == t.chance.tolist()


def test_controls_beside_puts_each_control_next_to_its_format():
    readout = pd.DataFrame({"task": ["depth", "style", "odd_one_out"], "model": "m", "readout_acc": [90.0, 80.0, 70.0],
                            "vlm_acc": [55.0, 50.0, 26.0], "chance": [50.0, 50.0, 25.0]})
    controls = pd.DataFrame({"task": ["control_odd_one_out", "control_depth"], "format_of": ["odd_one_out", "depth"],
                             "n_options": [4, 2], "accuracy": [81.0, 95.0], "chance": [25.0, 50.0]})
    m = BX.controls_beside(readout, controls)
    assert list(m.columns) == ["task", "readout_acc", "vlm_acc", "chance", "control", "control_acc"]
    assert m.task.tolist() == ["depth", "style", "odd_one_out"]
    assert m.control.tolist()[::2] == ["control_depth", "control_odd_one_out"] and m.control_acc.tolist()[::2] == [95.0, 81.0]
    assert pd.isna(m.control[1]) and np.isnan(m.control_acc[1])


def test_control_summary_counts_rows_above_the_margin():
    t = pd.DataFrame({"task": ["c2", "c4"], "accuracy": [56.5, 31.0], "chance": [50.0, 25.0]})
    assert "1 of 2 more than 6 points above chance" in BX.control_summary(t, 6.0)      # 6.5 > 6, 6.0 is not
    assert "c2 56.5 % (chance 50 %)" in BX.control_summary(t, 6.0)
    assert "2 of 2" in BX.control_summary(t, 5.0) and "competent on the answer formats" in BX.control_summary(t, 5.0)
