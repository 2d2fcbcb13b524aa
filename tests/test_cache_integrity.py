"""Caches and checkpoints that are damaged, misplaced, shared or hostile (issue 19, defects 7, 8, 10).

A truncated world ``.npz`` or corruption ``.npy`` is a miss (rebuilt, same values); a feature file
copied under another key is a miss; cache files read like other files (umask, not 0600); training
checkpoints load with ``weights_only=True``; the corruption worker pool dies with its parent.
"""
from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import vlmlab.world as W
from vlmlab.data.corruptions import corrupt_images
from vlmlab.features import FeatureCache, extract_arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_world_file_is_rebuilt(cache, caplog):
    fresh = W.load("objects", "test", n=12, seed=3, cache=False)
    W.load("objects", "test", n=12, seed=3)
    (path,) = (cache / "world").glob("*.npz")
    truncate(path)
    with caplog.at_level(logging.WARNING):
        again = W.load("objects", "test", n=12, seed=3)
    assert str(path) in caplog.text
    np.testing.assert_array_equal(again.images, fresh.images)
    np.testing.assert_array_equal(again.labels, fresh.labels)
    with np.load(path) as data:                        # rewritten whole
        np.testing.assert_array_equal(data["images"], fresh.images)


def test_a_truncated_training_pool_is_rebuilt(cache):
    fresh, _ = W.training_pool(6, seed=1, cache=False)
    W.training_pool(6, seed=1)
    (path,) = (cache / "world").glob("*pool*.npz")
    truncate(path)
    np.testing.assert_array_equal(W.training_pool(6, seed=1)[0], fresh)


def test_a_truncated_corruption_file_is_recomputed(cache, caplog):
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    fresh = corrupt_images(images, "gaussian_noise", 3, cache=False, workers=1)
    corrupt_images(images, "gaussian_noise", 3, workers=1)
    (path,) = (cache / "corruptions").glob("*.npy")
    truncate(path)
    with caplog.at_level(logging.WARNING):
        again = corrupt_images(images, "gaussian_noise", 3, workers=1)
    assert str(path) in caplog.text
    np.testing.assert_array_equal(again, fresh)
    np.testing.assert_array_equal(np.load(path), fresh)


def test_a_feature_file_copied_under_another_key_is_a_miss(tmp_path, tiny_clip):
    store = FeatureCache(tmp_path / "features")
    a = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    fa = extract_arrays(tiny_clip, a, [0, 1, 2], key="a", cache=store)
    fb = extract_arrays(tiny_clip, b, [0, 1, 2], key="b", cache=store)
    store.path(fb.spec).write_bytes(store.path(fa.spec).read_bytes())     # a's features filed under b
    assert store.get(fa.spec) is not None and store.get(fb.spec) is None
    again = extract_arrays(tiny_clip, b, [0, 1, 2], key="b", cache=store)
    torch.testing.assert_close(again.feats, fb.feats)
    assert store.get(fb.spec) is not None                                  # recomputed and stored


def test_cache_files_follow_the_umask(cache, tmp_path, tiny_clip):
    old = os.umask(0o022)
    try:
        W.load("objects", "test", n=4, seed=5)
        images = np.zeros((2, 32, 32, 3), np.uint8)
        corrupt_images(images, "contrast", 2, workers=1)
        extract_arrays(tiny_clip, images, [0, 1], key="zeros", cache=FeatureCache(cache / "features"))
    finally:
        os.umask(old)
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".npz", ".npy", ".safetensors", ".json"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


class _RunsCode:
    """Unpickling this runs ``os.mkdir(marker)``: what a hostile checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from vlmlab.models.train_embedded import TrainConfig, train
    ckpt_dir, marker = tmp_path / "ckpt", tmp_path / "ran"
    ckpt_dir.mkdir()
    torch.save({"config": {}, "payload": _RunsCode(marker)}, ckpt_dir / "last.pt")
    cfg = TrainConfig(steps=1, batch_size=4, pool_size=8, warmup=1, ckpt_every=1, eval_every=100)
    with pytest.raises(RuntimeError, match="last.pt"):
        train(cfg, tmp_path / "out.safetensors", ckpt_dir)
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_training_checkpoints_hold_only_plain_values(tmp_path):
    from vlmlab.models.train_embedded import TrainConfig, load_checkpoint, train
    cfg = TrainConfig(steps=1, batch_size=4, pool_size=8, warmup=1, ckpt_every=1, eval_every=100)
    train(cfg, tmp_path / "out.safetensors", tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)       # raises on anything else
    assert state["step"] == 1 and isinstance(state["gen"], torch.Tensor)
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt").keys() == state.keys()


_KILLED_PARENT = """
import numpy as np
from vlmlab.data.corruptions import corrupt_images
if __name__ == "__main__":
    images = np.zeros((600, 224, 224, 3), np.uint8)
    # about 45 s of queued work (zoom blur, 0.08 s an image at 224 px); glass blur on small images no longer
    # lasts: its workers inherit numba's compiled code (corruptions._warm) and finish within a second
    corrupt_images(images, "zoom_blur", 5, cache=False, workers=2, chunk=1)
"""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"         # a zombie has exited
    except FileNotFoundError:
        return False


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_corruption_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "VLMLAB_CACHE": str(tmp_path / "cache")}
    parent = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline, workers = time.monotonic() + 60, []
    while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
        workers = [c for c in _children(parent.pid) if _is_worker(c)]
    assert len(workers) == 2, f"expected 2 pool workers under {parent.pid}, found {workers}"
    time.sleep(1.0)                                          # let them take jobs
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors, f"corruption workers {survivors} outlived their killed parent"
