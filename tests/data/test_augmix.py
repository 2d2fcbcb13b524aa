"""AugMix views (vlmlab.data.augmix): each operation at severity 1 in closed form, the mixing, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlmlab.data import augmix as A
from vlmlab.data.augment import view_rng


def _image(seed: int = 0, size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _replay(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    return np.random.default_rng(seed), np.random.default_rng(seed)


def test_posterize_keeps_the_top_four_bits_at_severity_one():
    img = _image()
    for s in range(5):
        out = np.asarray(A.posterize(img, np.random.default_rng(s), 1.0))
        assert np.array_equal(out, np.asarray(img) & 0xF0)


def test_solarize_inverts_only_pixels_above_a_threshold_in_231_to_254():
    img = _image()
    for s in range(5):
        rng, replay = _replay(s)
        out, x = np.asarray(A.solarize(img, rng, 1.0)).astype(int), np.asarray(img).astype(int)
        threshold = 256 - int(replay.uniform(0.1, 1.0) * 25.6)
        assert 231 <= threshold <= 254
        assert np.array_equal(out, np.where(x >= threshold, 255 - x, x))


@pytest.mark.parametrize("op,axis", [(A.translate_x, 1), (A.translate_y, 0)])
def test_translate_moves_the_content_by_the_drawn_pixels(op, axis):
    img = _image(size=90)                                                 # S / 30 = 3: shifts of 0-2 px
    shifts = set()
    for s in range(12):
        rng, replay = _replay(s)
        t = int(replay.uniform(0.1, 1.0) * 90 / 3 / 10)
        t = -t if replay.uniform() > 0.5 else t
        out, x = np.asarray(op(img, rng, 1.0)), np.asarray(img)
        shifts.add(t)
        n = 90 - abs(t)                                                   # output p reads input p + t
        src = np.take(x, range(max(t, 0), max(t, 0) + n), axis=axis)
        dst = np.take(out, range(max(-t, 0), max(-t, 0) + n), axis=axis)
        assert np.array_equal(src, dst)
    assert len(shifts) > 1


def test_rotate_and_shear_draw_the_references_severity_one_levels():
    """rotate: int(30 u / 10) degrees, u ~ U(0.1, 1): 0-2; shear: 0.3 u / 10, up to 0.03; a random sign each."""
    img, degrees, shears = _image(), set(), []
    for s in range(20):
        rng, replay = _replay(s)
        d = int(replay.uniform(0.1, 1.0) * 3)
        d = -d if replay.uniform() > 0.5 else d
        assert np.array_equal(np.asarray(A.rotate(img, rng, 1.0)), np.asarray(img.rotate(d, resample=Image.BILINEAR)))
        degrees.add(d)
        rng, replay = _replay(s)
        k = replay.uniform(0.1, 1.0) * 0.03
        k = -k if replay.uniform() > 0.5 else k
        want = img.transform(img.size, Image.AFFINE, (1, k, 0, 0, 1, 0), resample=Image.BILINEAR)
        assert np.array_equal(np.asarray(A.shear_x(img, rng, 1.0)), np.asarray(want))
        shears.append(k)
    assert degrees <= {-2, -1, 0, 1, 2} and len(degrees) > 2
    assert max(abs(k) for k in shears) <= 0.03 and min(shears) < 0 < max(shears)


def test_mix_is_the_convex_combination():
    x0, chains = torch.rand(3, 4, 4), [torch.rand(3, 4, 4) for _ in range(3)]
    assert torch.equal(A.mix(x0, chains, [0.2, 0.3, 0.5], 1.0), x0)
    torch.testing.assert_close(A.mix(x0, chains, [0.0, 1.0, 0.0], 0.0), chains[1])
    w, m = [0.2, 0.3, 0.5], 0.25
    torch.testing.assert_close(A.mix(x0, chains, w, m), m * x0 + (1 - m) * sum(a * c for a, c in zip(w, chains)))


def test_a_view_is_a_pure_function_of_its_seed_item_and_view():
    img = _image()
    a = A.augmix_one(img, 32, view_rng(3, 7, 1))
    assert a.shape == (3, 32, 32) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, A.augmix_one(img, 32, view_rng(3, 7, 1)))
    assert not torch.equal(a, A.augmix_one(img, 32, view_rng(3, 7, 2)))


class _Bundle:
    image_size = 32

    @staticmethod
    def normalize_pixels(x):
        return (x - 0.5) / 0.25


class _World:
    images = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)


def test_augmix_inputs_do_not_depend_on_batch_or_workers():
    both = A.augmix_inputs(_Bundle, _World, [0, 3, 3], [1, 1, 2], seed=5, workers=1)
    alone = A.augmix_inputs(_Bundle, _World, [3], [2], seed=5, workers=2)
    assert both.shape == (3, 3, 32, 32)
    assert torch.equal(both[2], alone[0]) and not torch.equal(both[1], both[2])
    raw = A.augmix_one(Image.fromarray(_World.images[0]), 32, view_rng(5, 0, 1))
    assert torch.equal(both[0], (raw - 0.5) / 0.25)
