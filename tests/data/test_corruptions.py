"""ImageNet-C corruptions on world images."""
import numpy as np
import pytest

import vlmlab.world as W
from vlmlab.data.corruptions import ALL, COMMON, EXTRA, corrupt_dataset, corrupt_images


@pytest.fixture(scope="module")
def images():
    return W.load("objects", n=4, size=32, cache=False).images


def test_lists():
    assert len(COMMON) == 15 and len(EXTRA) == 4 and len(set(ALL)) == 19


@pytest.mark.parametrize("name", ALL)
def test_every_corruption_changes_pixels_keeps_shape_and_is_deterministic(images, name):
    a = corrupt_images(images, name, 5, seed=0, cache=False, workers=1)
    b = corrupt_images(images, name, 5, seed=0, cache=False, workers=1)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - images).mean() > 1.0
    np.testing.assert_array_equal(a, b)


def test_severity_grows_the_change(images):
    diffs = [np.abs(corrupt_images(images, "gaussian_noise", s, cache=False, workers=1).astype(int) - images).mean()
             for s in range(1, 6)]
    assert diffs == sorted(diffs)


def test_seed_changes_noise(images):
    a = corrupt_images(images, "shot_noise", 3, seed=0, cache=False, workers=1)
    b = corrupt_images(images, "shot_noise", 3, seed=1, cache=False, workers=1)
    assert not np.array_equal(a, b)


def test_parallel_equals_serial_and_cache(images, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path))
    big = np.concatenate([images] * 3)
    serial = corrupt_images(big, "impulse_noise", 4, cache=False, workers=1, chunk=4)
    parallel = corrupt_images(big, "impulse_noise", 4, workers=2, chunk=4)
    np.testing.assert_array_equal(serial, parallel)
    assert len(list(tmp_path.rglob("*.npy"))) == 1
    np.testing.assert_array_equal(corrupt_images(big, "impulse_noise", 4, workers=1), serial)


def test_bad_arguments(images):
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt_images(images, "rain", 3, cache=False)
    with pytest.raises(ValueError, match="severities are 1..5"):
        corrupt_images(images, "fog", 6, cache=False, workers=1)


def test_corrupt_dataset_extends_key():
    ds = W.load("objects", n=4, size=32, cache=False)
    c = corrupt_dataset(ds, "fog", 3, cache=False, workers=1)
    assert c.key != ds.key and "fog-3" in c.key and len(c) == len(ds)
    assert corrupt_dataset(ds, "clean", 0) is ds


def test_warming_before_the_fork_keeps_the_images_and_this_process_rng(images, monkeypatch):
    import vlmlab.data.corruptions as C
    monkeypatch.setattr(C, "_WARM", set())
    big = np.concatenate([images] * 3)
    serial = corrupt_images(big, "glass_blur", 2, cache=False, workers=1, chunk=4)
    np.random.seed(123)
    before = np.random.get_state()
    parallel = corrupt_images(big, "glass_blur", 2, cache=False, workers=2, chunk=4)
    after = np.random.get_state()
    assert C._WARM == {"glass_blur"}
    np.testing.assert_array_equal(parallel, serial)
    assert before[2:] == after[2:] and np.array_equal(before[1], after[1])
