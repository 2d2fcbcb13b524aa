"""Multiple-choice tasks rendered by the world, with balanced answer positions.

Paper analogues (``../shared/papers/hidden_in_plain_sight.md`` §3):

* ``odd_one_out_task`` -- MOCHI's 3-D object awareness: four images, three show the same shape under
  different renderings (colour, texture, background, rendition style, size, position), one shows another
  shape. Chance 1/4.
* ``style_task`` -- BLINK Art_Style: a reference image and two candidates; one candidate shares the
  reference's rendition style (with another shape and colour), the other does not. Chance 1/2.

Every question is drawn from one ``numpy`` generator seeded by ``seed``, so the same seed gives the
same pixels; the correct option's position cycles through the options and is then shuffled, so each
position is correct equally often (``balanced_answers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlmlab.world.datasets import sample_scene
from vlmlab.world.render import render_scene
from vlmlab.world.scene import SHAPES, STYLES

LETTERS = "ABCD"


@dataclass
class MCTask:
    """``n`` questions of one task.

    Attributes:
        name: task name. images: (n, k, S, S, 3) uint8, ``k`` images per question (style: the reference
        first, then the candidates). answers: (n,) index of the correct option. n_options: options per
        question (chance = 1 / n_options). question: the text a VLM is asked. meta: per-question details.
    """

    name: str
    images: np.ndarray
    answers: np.ndarray
    n_options: int
    question: str
    meta: list[dict] = field(default_factory=list)

    @property
    def chance(self) -> float:
        return 1.0 / self.n_options

    def __len__(self) -> int:
        return len(self.answers)


def balanced_answers(n: int, n_options: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` answer positions, each option correct ``n // n_options`` or one more times, in random order."""
    answers = np.arange(n) % n_options
    rng.shuffle(answers)
    return answers


def odd_one_out_task(n: int, seed: int = 0, size: int = 64) -> MCTask:
    """Four images per question; the one whose shape differs is the answer."""
    rng = np.random.default_rng(seed)
    answers = balanced_answers(n, 4, rng)
    images, meta = np.empty((n, 4, size, size, 3), np.uint8), []
    for q, ans in enumerate(answers):
        same, odd = rng.choice(len(SHAPES), 2, replace=False)
        shapes = [SHAPES[odd] if i == ans else SHAPES[same] for i in range(4)]
        for i, shape in enumerate(shapes):
            images[q, i] = render_scene(sample_scene(rng, shape=shape, count=1), rng, size)
        meta.append({"shapes": shapes})
    return MCTask("odd_one_out", images, answers, 4,
                  "Which image shows a different object from the other three? Answer A, B, C or D.", meta)


def style_task(n: int, seed: int = 0, size: int = 64) -> MCTask:
    """A reference and two candidates; the candidate in the reference's rendition style is the answer."""
    rng = np.random.default_rng(seed)
    answers = balanced_answers(n, 2, rng)
    images, meta = np.empty((n, 3, size, size, 3), np.uint8), []
    for q, ans in enumerate(answers):
        ref_style, other = (STYLES[i] for i in rng.choice(len(STYLES), 2, replace=False))
        styles = [ref_style if i == ans else other for i in range(2)]
        ref = sample_scene(rng, style=ref_style, count=1)
        images[q, 0] = render_scene(ref, rng, size)
        for i, style in enumerate(styles):
            cand = sample_scene(rng, style=style, count=1)
            while cand.shape == ref.shape:                 # the shared style, not a shared object, is the cue
                cand = sample_scene(rng, style=style, count=1)
            images[q, 1 + i] = render_scene(cand, rng, size)
        meta.append({"reference_style": ref_style, "candidate_styles": styles})
    return MCTask("style", images, answers, 2,
                  "Which image, A or B, is drawn in the same style as the reference?", meta)
