"""Captions for world images: a small grammar over the Scene attributes.

Web captions name some attributes and skip others, vary their phrasing, and sometimes say how
the picture looks ("a blurry photo of ..."). The grammar does the same: the shape is always
named (or replaced by "shape"/"object"), every other attribute appears with a probability,
and a quality word is added for images the training loop degraded. Words of the far sets
(digits, terrain, thermal) never appear.
"""
from __future__ import annotations

import numpy as np

from vlmlab.world.scene import COUNT_WORDS, SHAPE_PLURALS, Scene

STYLE_NOUNS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of", "a picture of", "an image of", "a close-up photo of"),
    "cartoon": ("a cartoon of", "a drawing of", "a cartoon drawing of"),
    "sketch": ("a sketch of", "a pencil sketch of", "a line drawing of"),
    "painting": ("a painting of", "an oil painting of", "a watercolor of"),
    "pixel art": ("pixel art of", "a pixel art image of"),
}
# Degradations applied during training and the words web captions would use for them.
QUALITY_WORDS: dict[str, tuple[str, ...]] = {
    "noise": ("noisy", "grainy"), "impulse": ("noisy", "speckled"), "blur": ("blurry", "out of focus"), "dark": ("dark",),
    "bright": ("bright", "overexposed"), "contrast": ("low contrast", "faded"),
    "pixelate": ("pixelated", "low resolution"), "jpeg": ("jpeg compressed", "compressed"),
    "fog": ("foggy", "hazy"),
}
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "white": ("on a white background", "on white"), "dark": ("on a dark background", "on black"),
    "grass": ("on a grass background", "on grass"), "sky": ("on a sky background", "against the sky"),
    "sand": ("on a sand background", "on sand"), "wood": ("on a wood background", "on wood"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(scene: Scene, rng: np.random.Generator, p: float = 1.0) -> str:
    """'two small red striped circles' with each modifier kept with probability ``p``·its rate."""
    mods = []
    if rng.random() < 0.35 * p:
        mods.append(scene.size)
    if rng.random() < 0.75 * p and scene.style not in ("sketch",) and scene.palette == "natural":
        mods.append(scene.colour)
    if scene.texture != "plain" and rng.random() < 0.6 * p or scene.texture == "plain" and rng.random() < 0.1 * p:
        mods.append(scene.texture)
    generic = rng.random() < 0.08
    if scene.count == 1:
        noun = ("object" if rng.random() < 0.5 else "shape") if generic else scene.shape
        words = mods + [noun]
        lead = "one" if rng.random() < 0.15 else _article(words[0])
    else:
        noun = ("objects" if rng.random() < 0.5 else "shapes") if generic else SHAPE_PLURALS[scene.shape]
        words = mods + [noun]
        lead = COUNT_WORDS[scene.count - 1]
    return " ".join([lead] + words)


def caption(scene: Scene, rng: np.random.Generator, quality: str | None = None) -> str:
    """One caption of ``scene``; ``quality`` names the degradation applied (a QUALITY_WORDS key)."""
    style_noun = str(rng.choice(STYLE_NOUNS[scene.style]))
    if quality is not None and scene.style == "photo" and rng.random() < 0.85:
        q = str(rng.choice(QUALITY_WORDS[quality]))
        style_noun = f"{_article(q)} {q} photo of"
    np_ = noun_phrase(scene, rng)
    tail = []
    if scene.count == 1 and rng.random() < 0.5:
        tail.append(scene.position)
    if rng.random() < 0.5:
        tail.append(str(rng.choice(BACKGROUND_PHRASES[scene.background])))
    form = rng.integers(0, 4)
    if form == 3 and quality is None:
        return " ".join([np_] + tail)  # bare noun phrase, as alt-text often is
    return " ".join([style_noun, np_] + tail) + ("." if rng.random() < 0.5 else "")


ENSEMBLE_PREFIXES: tuple[str, ...] = (
    "a photo of", "a picture of", "an image of", "a close-up photo of", "a blurry photo of", "a noisy photo of",
    "a dark photo of", "a bright photo of", "a pixelated photo of", "a low contrast photo of",
    "a jpeg compressed photo of", "a foggy photo of", "a cartoon of", "a painting of", "a sketch of", "pixel art of",
)


def ensemble_templates(template: str) -> list[str]:
    """The world's prompt ensemble for a task template (the analogue of CLIP's 80 templates).

    Templates that start with "a photo of" get every prefix of ``ENSEMBLE_PREFIXES`` (plain,
    quality and style variants, as CLIP's ImageNet ensemble mixes "a blurry photo of",
    "a sketch of", ...); other templates are returned alone.
    """
    if not template.startswith("a photo of"):
        return [template]
    rest = template[len("a photo of"):]
    return [p + rest for p in ENSEMBLE_PREFIXES]
