"""Notebook 02's figures: every row of the poster table gets a colour of its own that the eye can tell apart."""
from __future__ import annotations

import itertools

import numpy as np
from matplotlib.colors import to_rgb

from vlmlab.tta.figures import row_colours

ROWS = ["No-adapt", "Linear probing (1)", "Linear probing (5)", "Linear probing (10)", "Tip-Adapter (1)",
        "Tip-Adapter (5)", "Tip-Adapter (10)", "TPT", "ZERO", "MTA", "TDA", "UniInfo", "an unknown method"]


def test_every_row_has_its_own_colour_far_from_every_other():
    colours = {r: np.array(to_rgb(c)) for r, c in row_colours(ROWS).items()}
    assert set(colours) == set(ROWS)
    closest = min((float(np.linalg.norm(colours[a] - colours[b])), a, b) for a, b in itertools.combinations(ROWS, 2))
    # Linear probing (1) and MTA were 0.11 apart in RGB (light blue on light blue) and hard to tell apart in the bars.
    assert closest[0] >= 0.15, closest


def test_shot_counts_of_one_method_are_shades_of_its_hue_darkening_with_shots():
    colours = row_colours(ROWS)
    for family in ("Linear probing", "Tip-Adapter"):
        shades = [np.array(to_rgb(colours[f"{family} ({k})"])) for k in (1, 5, 10)]
        brightness = [s.sum() for s in shades]
        assert brightness[0] > brightness[1] > brightness[2], (family, brightness)
