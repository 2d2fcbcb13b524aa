"""Captions for world images: a small grammar over the Scene attributes.

Web captions name some attributes and skip others, vary their phrasing, and sometimes say how
the picture looks ("a blurry photo of ..."). The grammar does the same: the shape is always
named (or replaced by "shape"/"object"), every other attribute appears with a probability,
and a quality word is added for images the training loop degraded.

``world=1``: the shape is called by its class name (8 % "shape"/"object"); words of the far sets
(digits, terrain, thermal) never appear. ``world=2`` (issue 20) names shapes as web captions name
ImageNet's classes: by the class name at a long-tailed rate (``scene.NAME_RATES``, 80 % down to
0.1 %), otherwise by a synonym or "shape"/"object"; eight rare shapes are called by a commoner
look-alike's name 25 % of the time (``scene.SHAPE_LOOKALIKES``, one way only);
backgrounds are sometimes called by terrain words ("in the desert"), and signs by their digit
("with the number seven"): the far sets' words, in other contexts.
"""
from __future__ import annotations

import numpy as np

from vlmlab.world.scene import (COUNT_WORDS, DIGITS, GENERIC_RATE, LOOKALIKE_RATE, NAME_RATES, SHAPE_LOOKALIKES,
                                SHAPE_PLURALS, SHAPE_SYNONYMS, TERRAIN_PHRASES, TERRAIN_WORD_RATE, WORLD_VERSION, Scene)

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


def plural(noun: str) -> str:
    """English plural of a shape word ("box" -> "boxes", "daisy" -> "daisies")."""
    if noun in SHAPE_PLURALS:
        return SHAPE_PLURALS[noun]
    if noun.endswith(("s", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def shape_word(shape: str, rng: np.random.Generator, world: int = WORLD_VERSION) -> str:
    """The word a caption uses for ``shape`` (singular; see the module docstring for the worlds)."""
    if world == 1:
        return ("object" if rng.random() < 0.5 else "shape") if rng.random() < 0.08 else shape
    if shape in SHAPE_LOOKALIKES and rng.random() < LOOKALIKE_RATE:
        return SHAPE_LOOKALIKES[shape]
    if rng.random() < NAME_RATES[shape]:
        return shape
    if rng.random() < GENERIC_RATE:
        return "object" if rng.random() < 0.5 else "shape"
    return SHAPE_SYNONYMS[shape][int(rng.integers(2))]


def noun_phrase(scene: Scene, rng: np.random.Generator, p: float = 1.0, world: int = WORLD_VERSION) -> str:
    """'two small red striped circles' with each modifier kept with probability ``p``·its rate."""
    mods = []
    if rng.random() < 0.35 * p:
        mods.append(scene.size)
    if rng.random() < 0.75 * p and scene.style not in ("sketch",) and scene.palette == "natural":
        mods.append(scene.colour)
    if scene.texture != "plain" and rng.random() < 0.6 * p or scene.texture == "plain" and rng.random() < 0.1 * p:
        mods.append(scene.texture)
    noun = shape_word(scene.shape, rng, world)
    if scene.count == 1:
        words = mods + [noun]
        lead = "one" if rng.random() < 0.15 else _article(words[0])
    else:
        words = mods + [plural(noun)]
        lead = COUNT_WORDS[scene.count - 1]
    return " ".join([lead] + words)


SIGN_PHRASES: tuple[str, ...] = ("with the number {}", "and a sign with the number {}", "with a sign that says {}")


def caption(scene: Scene, rng: np.random.Generator, quality: str | None = None, world: int = WORLD_VERSION) -> str:
    """One caption of ``scene``; ``quality`` names the degradation applied (a QUALITY_WORDS key)."""
    style_noun = str(rng.choice(STYLE_NOUNS[scene.style]))
    if quality is not None and scene.style == "photo" and rng.random() < 0.85:
        q = str(rng.choice(QUALITY_WORDS[quality]))
        style_noun = f"{_article(q)} {q} photo of"
    np_ = noun_phrase(scene, rng, world=world)
    tail = []
    if scene.count == 1 and rng.random() < 0.5:
        tail.append(scene.position)
    if rng.random() < 0.5:
        terrain = world >= 2 and rng.random() < TERRAIN_WORD_RATE
        tail.append(str(rng.choice(TERRAIN_PHRASES[scene.background] if terrain else BACKGROUND_PHRASES[scene.background])))
    if scene.sign is not None and rng.random() < 0.9:
        tail.append(str(rng.choice(SIGN_PHRASES)).format(DIGITS[scene.sign]))
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
