"""The procedural world: determinism, captions, labels, far-set vocabulary."""
import re

import numpy as np
import pytest

import vlmlab.world as W
from dataclasses import replace

from vlmlab.world.captions import QUALITY_WORDS, caption, plural, shape_word
from vlmlab.world.datasets import sample_scene
from vlmlab.world.render import render_scene
from vlmlab.world.scene import (GENERIC_RATE, LOOKALIKE_RATE, NAME_ORDER, NAME_RATES, SHAPE_LOOKALIKES, SHAPE_SYNONYMS,
                                SIGN_RATE, TERRAIN_PHRASES, TERRAIN_WORD_RATE)
from vlmlab.world.shapes import POLYGONS, shape_mask


def test_same_seed_same_bytes_and_other_seed_differs():
    a = W.load("objects", "test", n=12, seed=3, cache=False)
    b = W.load("objects", "test", n=12, seed=3, cache=False)
    c = W.load("objects", "test", n=12, seed=4, cache=False)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.images.tobytes() != c.images.tobytes()


def test_image_does_not_depend_on_dataset_size():
    small = W.load("colours", "test", n=5, cache=False)
    large = W.load("colours", "test", n=15, cache=False)
    np.testing.assert_array_equal(small.images, large.images[:5])


def test_splits_are_disjoint_streams():
    tr = W.load("objects", "train", n=8, cache=False)
    te = W.load("objects", "test", n=8, cache=False)
    assert not any(np.array_equal(x, y) for x in tr.images for y in te.images)


def test_cache_roundtrip_equals_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path))
    first = W.load("digits", n=10)
    again = W.load("digits", n=10)
    assert any(tmp_path.rglob("*.npz"))
    np.testing.assert_array_equal(first.images, again.images)


@pytest.mark.parametrize("name", sorted(W.TASKS))
def test_every_task_is_balanced_and_well_formed(name):
    task = W.TASKS[name]
    ds = W.load(name, n=2 * len(task.classnames), cache=False)
    assert ds.images.shape == (len(ds), 64, 64, 3) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels.numpy()).tolist() == [2] * len(task.classnames)
    assert task.template.count("{}") == 1
    assert ds.images.std() > 5  # not blank


def test_labels_match_the_rendered_description():
    """Re-render each labelled image from its own generator stream and read the scene back."""
    for name, field in [("objects", "shape"), ("colours", "colour"), ("positions", "position"),
                        ("backgrounds", "background"), ("styles", "style"), ("textures", "texture")]:
        task = W.TASKS[name]
        for i in range(len(task.classnames)):
            rng = np.random.default_rng(i)
            label = i % len(task.classnames)
            img, scene = task.make(rng, label, 32)
            value = getattr(scene, field)
            assert value == task.classnames[label], (name, value)
    img, scene = W.TASKS["counts"].make(np.random.default_rng(0), 2, 32)
    assert scene.count == 3


def test_size_is_a_parameter():
    ds = W.load("objects", n=3, size=96, cache=False)
    assert ds.images.shape[1:] == (96, 96, 3)


def test_colour_really_colours_the_object():
    """A plain red object on a white background is red where the mask says so."""
    sc = W.Scene(shape="square", colour="red", texture="plain", size="large", background="white", style="cartoon")
    img = render_scene(sc, np.random.default_rng(0), 64).astype(float)
    centre = img[28:36, 28:36].reshape(-1, 3).mean(0)
    assert centre[0] > 150 and centre[1] < 80 and centre[2] < 80


def test_every_shape_mask_is_distinct():
    masks = {s: shape_mask(s, 32, 16, 16, 12) for s in W.SHAPES}
    assert all(m.max() > 0.99 and 0.05 < m.mean() < 0.9 for m in masks.values())
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(masks[a] - masks[b]).mean() > 0.01, (a, b)
    assert set(POLYGONS) < set(W.SHAPES)


def test_caption_grammar_covers_every_attribute():
    rng = np.random.default_rng(0)
    text = " ".join(caption(sample_scene(rng), rng, world=1) for _ in range(3000))
    for vocab in (W.SHAPES, list(W.COLOURS), [t for t in W.TEXTURES], list(W.SIZES), W.COUNT_WORDS[1:],
                  list(W.POSITIONS), W.BACKGROUNDS):
        for word in vocab:
            assert word in text, word
    for style_word in ("photo", "cartoon", "sketch", "painting", "pixel art"):
        assert style_word in text


def test_captions_name_the_shape_and_quality():
    rng = np.random.default_rng(1)
    for _ in range(200):
        sc = sample_scene(rng, style="photo")
        c = caption(sc, rng, quality="blur", world=1)
        assert sc.shape.split()[0] in c or "shape" in c or "object" in c
    qual = [caption(sample_scene(rng, style="photo"), rng, quality="noise", world=1) for _ in range(200)]
    share = np.mean([any(w in c for w in QUALITY_WORDS["noise"]) for c in qual])
    assert 0.7 < share < 1.0


def test_far_vocabulary_never_in_training_captions():
    rng = np.random.default_rng(2)
    text = " ".join(caption(sample_scene(rng), rng, quality=None, world=1) for _ in range(3000))
    for word in ("number", "satellite", "thermal", "forest", "desert", "seven", "nine", "city"):
        assert not re.search(rf"\b{word}\b", text), word


# World 2 (issue 20): long-tailed names, look-alikes, far words in other contexts.

def _binomial_ok(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(hits - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


def test_world2_shape_words_are_name_lookalike_synonym_or_generic():
    rng = np.random.default_rng(3)
    for shape in W.SHAPES:
        allowed = {shape, "shape", "object", *SHAPE_SYNONYMS[shape]} | ({SHAPE_LOOKALIKES[shape]} if shape in SHAPE_LOOKALIKES else set())
        seen = {shape_word(shape, rng, world=2) for _ in range(400)}
        assert seen <= allowed, (shape, seen - allowed)
        assert set(SHAPE_SYNONYMS[shape]) <= seen
    assert all(s not in W.SHAPES for syn in SHAPE_SYNONYMS.values() for s in syn)


@pytest.mark.parametrize("shape", ["house", "triangle", "octagon"])
def test_world2_name_and_lookalike_rates(shape):
    rng = np.random.default_rng(4)
    n = 20_000
    words = [shape_word(shape, rng, world=2) for _ in range(n)]
    look = SHAPE_LOOKALIKES.get(shape)
    p_look = LOOKALIKE_RATE if look else 0.0
    assert _binomial_ok(sum(w == shape for w in words), n, (1 - p_look) * NAME_RATES[shape])
    if look:
        assert _binomial_ok(sum(w == look for w in words), n, p_look)
    generic = (1 - p_look) * (1 - NAME_RATES[shape]) * GENERIC_RATE
    assert _binomial_ok(sum(w in ("shape", "object") for w in words), n, generic)


def test_world2_lookalikes_lend_commoner_names_once():
    assert all(NAME_RATES[look] > NAME_RATES[shape] for shape, look in SHAPE_LOOKALIKES.items())
    assert len(set(SHAPE_LOOKALIKES.values())) == len(SHAPE_LOOKALIKES)
    assert not set(SHAPE_LOOKALIKES.values()) & set(SHAPE_LOOKALIKES)


def test_world2_name_rates_fall_geometrically_from_80_to_0_1_percent():
    rates = [NAME_RATES[s] for s in NAME_ORDER]
    assert sorted(NAME_ORDER) == sorted(W.SHAPES)
    assert rates[0] == pytest.approx(0.8) and rates[-1] == pytest.approx(0.001)
    assert np.allclose(np.diff(np.log(rates)), np.log(rates[1] / rates[0]))


def test_world1_shape_word_is_the_class_name_or_generic():
    rng = np.random.default_rng(5)
    words = [shape_word("octagon", rng, world=1) for _ in range(5000)]
    assert set(words) <= {"octagon", "shape", "object"}
    assert _binomial_ok(sum(w == "octagon" for w in words), 5000, 0.92)


def test_plural():
    assert [plural(w) for w in ("box", "daisy", "valentine", "cross", "lightning bolt", "plus", "hoop")] == [
        "boxes", "daisies", "valentines", "crosses", "lightning bolts", "pluses", "hoops"]


def test_world2_far_words_only_in_their_other_contexts():
    rng = np.random.default_rng(6)
    pool_scenes = [sample_scene(rng) for _ in range(3000)]
    plain = [caption(sc, rng, world=2) for sc in pool_scenes]
    text = " ".join(plain)
    for word in ("number", "satellite", "thermal", "five", "seven", "nine"):  # "five-sided" is a shape's synonym
        assert not re.search(rf"\b{word}\b(?!-)", text), word
    terrain_phrases = [p for ps in TERRAIN_PHRASES.values() for p in ps]
    for word in W.TERRAINS:
        for c in plain:
            if re.search(rf"\b{word}\b", c):
                assert any(p in c for p in terrain_phrases), c
    share = np.mean([any(p in c for p in terrain_phrases) for c in plain])
    assert 0.3 * TERRAIN_WORD_RATE < share < 0.7 * TERRAIN_WORD_RATE  # about half the captions name a background
    # terrain words name the background they stand for
    for sc, c in zip(pool_scenes, plain):
        for bg, phrases in TERRAIN_PHRASES.items():
            if any(p in c for p in phrases):
                assert sc.background == bg, (sc.background, c)
    signed = [caption(replace(sc, sign=7), rng, world=2) for sc in pool_scenes[:500]]
    assert 0.85 < np.mean(["seven" in c for c in signed]) < 0.95
    assert all("seven" not in c for c in plain)


def test_world2_pool_signs():
    imgs1, scenes1 = W.training_pool(600, seed=1, cache=False, world=1)
    imgs2, scenes2 = W.training_pool(600, seed=1, cache=False, world=2)
    assert all(s.sign is None for s in scenes1)
    signed = [i for i, s in enumerate(scenes2) if s.sign is not None]
    assert _binomial_ok(len(signed), 600, SIGN_RATE)
    assert {scenes2[i].sign for i in signed} <= set(range(10))
    # a sign changes the picture; images without one keep world 1's scene
    unsigned = [i for i in range(600) if scenes2[i].sign is None]
    assert all(replace(scenes2[i], sign=None) == scenes1[i] for i in signed)
    assert all(scenes2[i] == scenes1[i] for i in unsigned)
    sc = replace(scenes1[0], sign=3)
    a = render_scene(replace(sc, sign=None), np.random.default_rng(0))
    b = render_scene(sc, np.random.default_rng(0))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    with pytest.raises(ValueError):
        replace(sc, sign=10)


def test_evaluation_tasks_never_carry_signs():
    for name, task in W.TASKS.items():
        rng = np.random.default_rng(0)
        _, sc = task.make(rng, 0, 32)
        assert sc is None or sc.sign is None, name
