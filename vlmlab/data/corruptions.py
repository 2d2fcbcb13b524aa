"""ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019, arXiv:1903.12261) for any image array.

Uses ``imagecorruptions-imaug`` (module ``imagecorruptions``), the maintained fork of bethgelab's
package: the same 15 benchmark + 4 extra corruptions and severity constants, at any image size.
It is not bit-identical to the released ImageNet-C (re-implemented motion blur and snow,
rescaled elastic transform; ../shared/papers/uniinfo_tta.md §7): the paper profile reads the
released tarballs instead.

Determinism: image ``i`` of a call with ``seed`` gets its own seed ``(seed, i, corruption,
severity)``; ``np.random`` is seeded before each call, and ``glass_blur`` / ``impulse_noise``
also receive it as ``seed=`` (they ignore the global state). Before forking its workers, a call corrupts
one small blank image in this process (``_warm``, this process's ``np.random`` state restored), so
the workers inherit the imported package and numba's compiled glass blur instead of paying for them
in every worker of every call (0.5 s of imports, 3-4 s of compiling). Results are cached as ``.npy``
under ``runtime.cache_root()/corruptions``, written atomically; a truncated or damaged file is a
miss (logged by name, deleted, recomputed). The worker processes run ``runtime.exit_with_parent``
as their initializer, like ``runtime.process_map``'s: a killed kernel leaves no busy orphans.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vlmlab.results import atomic_path, read_cached
from vlmlab.runtime import cache_root, exit_with_parent, get_logger, progress

log = get_logger(__name__)

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise")
BLUR = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
WEATHER = ("snow", "frost", "fog", "brightness")
DIGITAL = ("contrast", "elastic_transform", "pixelate", "jpeg_compression")
COMMON: tuple[str, ...] = NOISE + BLUR + WEATHER + DIGITAL
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = COMMON + EXTRA
FAMILY = {**{c: "noise" for c in NOISE + ("speckle_noise",)}, **{c: "blur" for c in BLUR + ("gaussian_blur",)},
          **{c: "weather" for c in WEATHER + ("spatter",)}, **{c: "digital" for c in DIGITAL + ("saturate",)}}
_SEED_KW = {"glass_blur", "impulse_noise"}


def _image_seed(seed: int, index: int, name: str, severity: int) -> int:
    h = hashlib.sha256(f"{seed}/{index}/{name}/{severity}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt one (H, W, 3) uint8 image; deterministic for a given ``seed``."""
    from imagecorruptions import corrupt
    if name not in ALL:
        raise KeyError(f"unknown corruption {name!r}; known: {list(ALL)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity={severity}; ImageNet-C severities are 1..5")
    np.random.seed(seed)
    kw = {"seed": seed} if name in _SEED_KW else {}
    out = corrupt(image, severity=severity, corruption_name=name, **kw)
    return np.clip(np.asarray(out), 0, 255).astype(np.uint8)[: image.shape[0], : image.shape[1]]


_WARM: set[str] = set()


def _warm(name: str) -> None:
    """Run corruption ``name`` once here on a blank 32 x 32 image, leaving ``np.random``'s state as it was.

    Forked workers then start with ``imagecorruptions`` imported and its JIT-compiled code (numba's
    pixel shuffle of ``glass_blur``) compiled; the images they corrupt do not change.
    """
    if name in _WARM:
        return
    state = np.random.get_state()
    try:
        corrupt_image(np.zeros((32, 32, 3), np.uint8), name, 1, 0)
    finally:
        np.random.set_state(state)
    _WARM.add(name)


def _chunk(args) -> np.ndarray:
    images, start, name, severity, seed = args
    return np.stack([corrupt_image(img, name, severity, _image_seed(seed, start + i, name, severity))
                     for i, img in enumerate(images)])


def _key(images: np.ndarray, name: str, severity: int, seed: int, key: str | None) -> str:
    base = key or hashlib.sha1(images.tobytes()).hexdigest()[:16]
    return hashlib.sha1(f"{base}|{name}|{severity}|{seed}".encode()).hexdigest()[:20]


def corrupt_images(images: np.ndarray, name: str, severity: int, seed: int = 0, key: str | None = None,
                   cache: bool = True, workers: int | None = None, chunk: int = 64) -> np.ndarray:
    """Corrupt a stack (N, H, W, 3) uint8; cached on disk.

    Args:
        images: uint8 images.
        name: corruption name (``ALL``).
        severity: 1..5.
        seed: corruption seed; image ``i`` uses a seed derived from ``(seed, i, name, severity)``.
        key: stable id of ``images`` for the cache (default: a hash of the bytes).
        workers: processes (default: all cores, at most 8; 1 = in-process).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    path = cache_root() / "corruptions" / f"{_key(images, name, severity, seed, key)}.npy"
    if cache and (hit := _load_cached(path, images.shape)) is not None:
        return hit
    jobs = [(images[i:i + chunk], i, name, severity, seed) for i in range(0, len(images), chunk)]
    workers = workers or min(8, os.cpu_count() or 1)
    bar = progress(total=len(images), desc=f"corrupt {name}/{severity}", leave=False)
    parts = []
    if workers > 1 and len(jobs) > 1:
        _warm(name)
        # forked (cheap to start, one pool per call), and guarded like runtime.process_map's workers
        with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            for part in pool.map(_chunk, jobs):
                parts.append(part); bar.update(len(part))
    else:
        for job in jobs:
            parts.append(_chunk(job)); bar.update(len(job[0]))
    bar.close()
    out = np.concatenate(parts) if parts else images.copy()
    if cache:
        with atomic_path(path) as tmp:
            np.save(tmp, out)
    return out


def _load_cached(path: Path, shape: tuple) -> np.ndarray | None:
    """A cached ``.npy`` of ``shape`` uint8, or ``None`` (missing, or damaged: ``results.read_cached``)."""
    def load(p: Path) -> np.ndarray:
        out = np.load(p)
        if out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"{out.shape} {out.dtype}, expected {shape} uint8")
        return out
    return read_cached(path, load, "corruption")


def corrupt_dataset(dataset, name: str, severity: int, seed: int = 0, **kw):
    """A world dataset (has ``images`` and ``with_images``) with corrupted pixels and an extended key."""
    if name == "clean" or severity == 0:
        return dataset
    images = corrupt_images(dataset.images, name, severity, seed, key=dataset.key, **kw)
    return dataset.with_images(images, f"{name}-{severity}-s{seed}")
