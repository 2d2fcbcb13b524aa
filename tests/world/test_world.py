"""The procedural world: determinism, captions, labels, far-set vocabulary."""
import re

import numpy as np
import pytest

import vlmlab.world as W
from vlmlab.world.captions import QUALITY_WORDS, caption
from vlmlab.world.datasets import sample_scene
from vlmlab.world.render import render_scene
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
    text = " ".join(caption(sample_scene(rng), rng) for _ in range(3000))
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
        c = caption(sc, rng, quality="blur")
        assert sc.shape.split()[0] in c or "shape" in c or "object" in c
    qual = [caption(sample_scene(rng, style="photo"), rng, quality="noise") for _ in range(200)]
    share = np.mean([any(w in c for w in QUALITY_WORDS["noise"]) for c in qual])
    assert 0.7 < share < 1.0


def test_far_vocabulary_never_in_training_captions():
    rng = np.random.default_rng(2)
    text = " ".join(caption(sample_scene(rng), rng, quality=None) for _ in range(3000))
    for word in ("number", "satellite", "thermal", "forest", "desert", "seven", "nine", "city"):
        assert not re.search(rf"\b{word}\b", text), word
