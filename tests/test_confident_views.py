"""scripts/confident_views.py: the three readouts in closed form on hand-made logits."""
from __future__ import annotations


import pytest
import torch

from script_loader import load_script

C = load_script("scripts/confident_views.py")


def test_readouts_of_view_zero_all_views_and_the_confident_tenth():
    """Image 0: view 0 right, most views mildly wrong, one sharp right view (the confident tenth of 10 views).
    Image 1: every view sharply wrong (class 2). Labels 0 and 1."""
    z = torch.zeros(2, 10, 3)
    z[0, 0, 0] = 0.3
    z[0, 1:, 1] = 0.5
    z[0, 5, 0] = 20.0
    z[1, :, 2] = 9.0
    r = C.readouts(z, torch.tensor([0, 1]))
    assert r["view 0"] == pytest.approx(50.0)        # image 0 right, image 1 wrong
    assert r["all views"] == pytest.approx(50.0)     # image 0: mean of class 0 is 2.03, of class 1 0.45
    assert r["confident"] == pytest.approx(50.0) and r["top class share"] == pytest.approx(0.5)
    z[0, 5, 0] = 0.0                                 # no sharp view: a mild class-1 view is the most confident
    r = C.readouts(z, torch.tensor([0, 1]))
    assert r["all views"] == 0.0 and r["confident"] == 0.0 and r["top class share"] == pytest.approx(0.5)
