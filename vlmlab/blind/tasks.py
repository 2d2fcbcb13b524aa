"""Multiple-choice tasks rendered by the world, with balanced answer positions.

Paper analogues (``../shared/papers/hidden_in_plain_sight.md`` §3):

* ``odd_one_out_task`` -- MOCHI's 3-D object awareness: four images, three show the same shape under
  different renderings (colour, texture, background, rendition style, size, position), one shows another
  shape. Chance 1/4 (MOCHI's trials have 3 images in most cases, 4 in the rest: the paper plots chance
  0.328; ``benchmarks.load_mochi`` keeps the two sizes as two tasks).
* ``style_task`` -- BLINK Art_Style: a reference image and two candidates; one candidate shares the
  reference's rendition style (with another shape and colour), the other does not. Chance 1/2.
* ``depth_task`` -- CV-Bench Depth: one image with two objects, A on the left and B on the right; which
  is closer to the camera? The closer object is larger, lower in the frame (on the ground plane) and
  drawn over the other where they overlap. Chance 1/2.
* ``correspondence_task`` -- BLINK Visual_Correspondence (low-level matching): a reference image with a
  marked point and a second view of the same scene, shifted and under other lighting, with four marked
  candidate points A-D; which one is the reference point? Chance 1/4.
* ``control_task`` -- the control rows (§1, §4: the paper's VLMs are competent general models): per
  vision-centric format, 2 (A/B) or 4 (A-D) labelled world images and a letter question about an
  attribute the embedded VLM was trained on, in ``corpus.MULTI_QUESTIONS``' own words ("which image
  has a red object ?"); exactly one image matches (``CONTROLS``).

Every question is drawn from one ``numpy`` generator seeded by ``seed``, so the same seed gives the
same pixels; the correct option's position cycles through the options and is then shuffled, so each
position is correct equally often (``balanced_answers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vlmlab.world.datasets import sample_scene
from vlmlab.world.render import background, render_scene, texture_fill
from vlmlab.world.scene import BACKGROUNDS, COLOURS, SHAPES, STYLES, TEXTURES
from vlmlab.world.shapes import shape_mask

LETTERS = "ABCD"


@dataclass
class MCTask:
    """``n`` questions of one task.

    Attributes:
        name: task name. images: (n, k, S, S, 3) uint8, ``k`` images per question as the VLM sees them
        (style: the reference first, then the candidates; correspondence: with the points marked).
        answers: (n,) index of the correct option. n_options: options per question (chance =
        1 / n_options). question: the text a VLM is asked. meta: per-question details.
        clean: the images without markers, for the encoder readout (``None``: same as ``images``).
        points: (n, 1 + n_options, 2) pixel (x, y) of the reference point and the candidates
        (correspondence only; the candidates are in the second image).
        labels: the label shown before each image in the embedded VLM's prompt.
        questions: per-question texts, where they differ (the real benchmarks); ``None``: ``question``.
        kind: which readout answers the task (``depth``, ``correspondence``, ``odd_one_out``, ``style``);
        empty: the name.
        boxes: (n, 2, 4) pixel boxes (x1, y1, x2, y2) of objects A and B (depth on real images; ``None``:
        A is the left half of the image, B the right half).
    """

    name: str
    images: np.ndarray
    answers: np.ndarray
    n_options: int
    question: str
    meta: list[dict] = field(default_factory=list)
    clean: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    questions: list[str] | None = None
    kind: str = ""
    boxes: np.ndarray | None = None

    def segments(self, q: int | None = None) -> list:
        """The VLM prompt: each image (an index) after its label, then the question and its options
        ("... ? answer A , B , C or D ."). ``q``: question q's own text where the questions differ
        (``questions[q]``); otherwise, and by default, the text shared by every question (``question``)."""
        k = self.images.shape[1]
        labels = self.labels or ("",) * k
        out: list = []
        for i, lab in enumerate(labels):
            out += ([lab] if lab else []) + [i]
        text = self.question if q is None or self.questions is None else self.questions[q]
        return out + [f"{text} {options_text(self.n_options)}"]

    @property
    def readout_kind(self) -> str:
        return self.kind or self.name

    def question_texts(self) -> list[str]:
        """Each question's text (``questions``, else ``question`` for every one)."""
        return list(self.questions) if self.questions is not None else [self.question] * len(self)

    @property
    def readout_images(self) -> np.ndarray:
        return self.images if self.clean is None else self.clean

    @property
    def chance(self) -> float:
        return 1.0 / self.n_options

    def __len__(self) -> int:
        return len(self.answers)


def options_text(k: int) -> str:
    """'answer A or B .', 'answer A , B or C .', 'answer A , B , C or D .'"""
    letters = list(LETTERS[:k])
    return "answer " + " , ".join(letters[:-1]) + " or " + letters[-1] + " ."


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
    return MCTask("odd_one_out", images, answers, 4, "Which image shows a different object from the other three?",
                  meta, labels=tuple(LETTERS))


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
    return MCTask("style", images, answers, 2, "Which image is drawn in the same style as the reference?", meta,
                  labels=("REF", "A", "B"))


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> np.ndarray:
    """Paint one textured, coloured shape over ``img`` (float32, in place semantics by return)."""
    size = img.shape[0]
    rgb = np.array(COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]], np.float32)
    fill = texture_fill(TEXTURES[rng.integers(len(TEXTURES))], rgb, size, rng)
    alpha = shape_mask(shape, size, cx, cy, r, rng.uniform(-0.35, 0.35))[..., None]
    return img * (1 - alpha) + fill * alpha


def depth_task(n: int, seed: int = 0, size: int = 64) -> MCTask:
    """Two objects on a ground plane; the closer one (larger, lower, in front) is the answer (A left, B right)."""
    rng = np.random.default_rng(seed)
    answers = balanced_answers(n, 2, rng)
    images, meta = np.empty((n, 1, size, size, 3), np.uint8), []
    for q, ans in enumerate(answers):
        img = background(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], size, rng)
        xs = (rng.uniform(0.24, 0.36) * size, rng.uniform(0.64, 0.76) * size)
        near_r, far_r = rng.uniform(0.17, 0.23) * size, rng.uniform(0.09, 0.13) * size
        near_y, far_y = rng.uniform(0.62, 0.72) * size, rng.uniform(0.30, 0.42) * size
        shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), 2, replace=False)]
        img = _draw(img, shapes[1 - ans], xs[1 - ans], far_y, far_r, rng)          # far first: the near one occludes
        img = _draw(img, shapes[ans], xs[ans], near_y, near_r, rng)
        images[q, 0] = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        meta.append({"closer": "left" if ans == 0 else "right", "shapes": shapes})
    return MCTask("depth", images, answers, 2,
                  "Which object is closer to the camera, A on the left or B on the right?", meta)


MARKER_COLOURS = {"REF": (255, 255, 255), "A": (255, 40, 40), "B": (40, 220, 40), "C": (60, 90, 255), "D": (255, 230, 0)}


def mark(img: np.ndarray, x: int, y: int, rgb: tuple[int, int, int]) -> np.ndarray:
    """A 3x3 square of ``rgb`` with a black 1-pixel frame centred on pixel (x, y); returns a copy."""
    out = img.copy()
    out[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = 0
    out[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = rgb
    return out


def _distractors(true: np.ndarray, grid: np.ndarray, min_gap: float, rng: np.random.Generator,
                 tries: int = 20) -> list[np.ndarray] | None:
    """``true`` and three random grid points, all pairwise >= ``min_gap`` apart; None if none found."""
    for _ in range(tries):
        cands = [true]
        while len(cands) < 4:
            far = np.linalg.norm(grid[:, None] - np.array(cands)[None], axis=-1) >= min_gap
            free = grid[far.all(axis=1)]
            if len(free) == 0:
                break
            cands.append(free[rng.integers(len(free))])
        if len(cands) == 4:
            return cands
    return None


def correspondence_task(n: int, seed: int = 0, size: int = 64, max_shift: int = 8,
                        min_gap: float | None = None) -> MCTask:
    """Reference view with a point, second view (shifted, relit) with four candidates; the true match is the answer.

    Both views are crops of one larger render, so the correct candidate is exactly the reference point
    moved by the crop offset. Distractors lie at least ``min_gap`` pixels (default 3/16 of the side:
    12 at 64 px) from it and from each other.
    """
    rng = np.random.default_rng(seed)
    answers = balanced_answers(n, 4, rng)
    big = size + 2 * max_shift
    clean = np.empty((n, 2, size, size, 3), np.uint8)
    marked = np.empty_like(clean)
    points = np.empty((n, 5, 2), np.int64)
    meta = []
    lo, hi = 6, size - 7
    min_gap = 3 * size / 16 if min_gap is None else min_gap
    grid = np.stack(np.meshgrid(np.arange(lo, hi + 1), np.arange(lo, hi + 1)), -1).reshape(-1, 2)
    if min_gap > (hi - lo) / 2:
        raise ValueError(f"min_gap={min_gap} is too large for four points in {size}-pixel views")
    for q, ans in enumerate(answers):
        scene = sample_scene(rng, count=int(rng.integers(1, 3)), size="large", style="photo")
        full = render_scene(scene, rng, big).astype(np.float32)
        dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, 2))
        ref = full[max_shift:max_shift + size, max_shift:max_shift + size]
        tgt = full[max_shift + dy:max_shift + dy + size, max_shift + dx:max_shift + dx + size]
        tgt = np.clip(tgt * rng.uniform(0.65, 1.35, 3) + rng.uniform(-20, 20), 0, 255)      # other lighting
        cands = None
        while cands is None:                            # a reference point whose match stays inside the view
            px, py = (int(v) for v in rng.integers(lo, hi + 1, 2))
            if lo <= px - dx <= hi and lo <= py - dy <= hi:
                cands = _distractors(np.array([px - dx, py - dy]), grid, min_gap, rng)
        order = [1, 2, 3]
        rng.shuffle(order)
        order.insert(int(ans), 0)
        cands = [cands[i] for i in order]
        clean[q, 0], clean[q, 1] = ref.astype(np.uint8), tgt.astype(np.uint8)
        points[q, 0], points[q, 1:] = (px, py), cands
        a = mark(clean[q, 0], px, py, MARKER_COLOURS["REF"])
        b = clean[q, 1]
        for letter, (cx, cy) in zip(LETTERS, cands):
            b = mark(b, int(cx), int(cy), MARKER_COLOURS[letter])
        marked[q, 0], marked[q, 1] = a, b
        meta.append({"shift": (dx, dy)})
    return MCTask("correspondence", marked, answers, 4,
                  "Which point in the second image is the reference point of the first image?",
                  meta, clean=clean, points=points)


# name: (the vision-centric task whose answer format it mirrors, options, attribute asked about)
CONTROLS: dict[str, tuple[str, int, str]] = {
    "control_depth": ("depth", 2, "colour"),
    "control_style": ("style", 2, "style"),
    "control_correspondence": ("correspondence", 4, "background"),
    "control_odd_one_out": ("odd_one_out", 4, "shape"),
}


def control_task(name: str, n: int, seed: int = 0, size: int = 64) -> MCTask:
    """``n`` control questions of ``CONTROLS[name]``: k labelled scenes of the training distribution (drawn
    from ``seed``'s own stream, not the VLM's training pool); one has the asked value, the others not.

    The question is ``corpus.MULTI_QUESTIONS[attribute]`` filled with the target value, as in the
    VLM's multi-image training questions (``corpus.Mixture.multi``): the value is uniform over the attribute's
    vocabulary, the other images are scenes of the training distribution redrawn until theirs differs.
    """
    from vlmlab.blind.corpus import MULTI_QUESTIONS, answer_word    # corpus imports this module

    if name not in CONTROLS:
        raise KeyError(f"unknown control task {name!r}; choose from {list(CONTROLS)}")
    _, k, attr = CONTROLS[name]
    values = _attribute_values(attr)
    rng = np.random.default_rng(seed)
    answers = balanced_answers(n, k, rng)
    images, meta, questions = np.empty((n, k, size, size, 3), np.uint8), [], []
    for q, ans in enumerate(answers):
        target = values[int(rng.integers(len(values)))]
        scenes = []
        for i in range(k):
            scene = sample_scene(rng, **{attr: target}) if i == ans else sample_scene(rng)
            while i != ans and answer_word(scene, attr) == target:
                scene = sample_scene(rng)
            scenes.append(scene)
            images[q, i] = render_scene(scene, rng, size)
        questions.append(MULTI_QUESTIONS[attr].format(target))
        meta.append({"attribute": attr, "target": target, "values": [answer_word(s, attr) for s in scenes]})
    return MCTask(name, images, answers, k, MULTI_QUESTIONS[attr], meta, labels=tuple(LETTERS[:k]),
                  questions=questions, kind=name)


def _attribute_values(attr: str) -> tuple[str, ...]:
    vocab = {"shape": SHAPES, "colour": tuple(COLOURS), "style": STYLES, "background": BACKGROUNDS}
    if attr not in vocab:
        raise KeyError(f"control attribute {attr!r}: choose from {list(vocab)}")
    return vocab[attr]
