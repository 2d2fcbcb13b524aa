"""Seeded datasets of the procedural world: a training pool and evaluation tasks near to far.

Every image ``i`` of split ``s`` is drawn from its own generator seeded with
``(seed, SPLIT_IDS[s], i)``, so a dataset is the same bytes on every machine and any subset
can be regenerated alone. Datasets are cached as ``.npz`` under ``runtime.cache_root()/world``;
a truncated or damaged cache file is a miss (logged by name, deleted, rendered again).

Task table (``TASKS``): name, label field, class names and the hand-written prompt template.
``objects`` is the ImageNet analogue, ``renditions`` the ImageNet-R analogue, and ``digits``,
``terrain`` and ``thermal`` are far sets. In world 2 (``WORLD_VERSION``) they are far but not
unknown, as EuroSAT's classes are to CLIP: digits appear only on signs in 5 % of the training pool,
terrain words only as rare names of backgrounds; terrain tiles and thermal colour maps never appear
in training, nor does a digit filling the whole image.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlmlab.results import atomic_path, read_cached
from vlmlab.runtime import cache_root, get_logger, progress
from vlmlab.world.render import render_digit, render_scene, render_terrain
from vlmlab.world.scene import (BACKGROUNDS, COLOURS, COUNT_WORDS, DIGITS, POSITIONS, SHAPES, SIGN_RATE, SIZES,
                                STYLES, TERRAINS, TEXTURES, TRAIN_STYLE_WEIGHTS, WORLD_VERSION, Scene)

log = get_logger(__name__)
SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "pool": 3}


def sample_scene(rng: np.random.Generator, **fixed) -> Scene:
    """A scene from the training distribution; keyword arguments pin attributes."""
    styles = list(TRAIN_STYLE_WEIGHTS)
    draw = {
        "shape": lambda: SHAPES[rng.integers(len(SHAPES))],
        "colour": lambda: list(COLOURS)[rng.integers(len(COLOURS))],
        "texture": lambda: TEXTURES[rng.integers(len(TEXTURES))],
        "size": lambda: list(SIZES)[rng.integers(len(SIZES))],
        "count": lambda: int(rng.choice([1, 2, 3, 4], p=[0.55, 0.15, 0.15, 0.15])),
        "position": lambda: list(POSITIONS)[rng.integers(len(POSITIONS))],
        "background": lambda: BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        "style": lambda: styles[rng.choice(len(styles), p=list(TRAIN_STYLE_WEIGHTS.values()))],
    }
    values = {k: (fixed[k] if k in fixed else f()) for k, f in draw.items()}
    if values["count"] > 1:
        values["position"] = "in the center"
    return Scene(**values, palette=fixed.get("palette", "natural"))


@dataclass(frozen=True)
class Task:
    """One evaluation dataset: what it labels and how it is prompted."""

    name: str
    classnames: tuple[str, ...]
    template: str
    make: Callable[[np.random.Generator, int], tuple[np.ndarray, Scene | None]]
    distance: str  # "near", "shift", "far": how far from the training distribution
    description: str = ""


def _scene_task(field_: str, values, **pins) -> Callable:
    def make(rng, label, size):
        kw = dict(pins)
        for k, v in list(kw.items()):
            if callable(v):
                kw[k] = v(rng)
        kw[field_] = values[label]
        if field_ == "position":
            kw["count"] = 1
        sc = sample_scene(rng, **kw)
        return render_scene(sc, rng, size), sc
    return make


def _pick(options):
    return lambda rng: options[rng.integers(len(options))]


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("objects", SHAPES, "a photo of a {}.", _scene_task("shape", SHAPES, style="photo"), "near",
         "shape category, photo style (the ImageNet analogue)"),
    Task("colours", tuple(COLOURS), "a photo of a {} object.",
         _scene_task("colour", list(COLOURS), style=_pick(["photo", "cartoon"]), texture=_pick(["plain", "gradient", "dotted"])),
         "near", "object colour"),
    Task("textures", TEXTURES, "a photo of a {} shape.", _scene_task("texture", TEXTURES, style="photo", size=_pick(["medium", "large"])),
         "near", "surface pattern"),
    Task("counts", COUNT_WORDS, "a photo of {} shapes.", _scene_task("count", [1, 2, 3, 4], style="photo"), "near",
         "how many objects"),
    Task("positions", tuple(POSITIONS), "a photo of a shape {}.", _scene_task("position", list(POSITIONS), style="photo", size=_pick(["small", "medium"])),
         "near", "where a single object is"),
    Task("backgrounds", BACKGROUNDS, "a photo of a shape on a {} background.", _scene_task("background", BACKGROUNDS, style="photo"),
         "near", "scene / background type"),
    Task("styles", STYLES, "a {} of a shape.", _scene_task("style", STYLES), "shift", "rendition style"),
    Task("renditions", SHAPES, "a photo of a {}.", _scene_task("shape", SHAPES, style=_pick(["cartoon", "sketch", "painting", "pixel art"])),
         "shift", "shape category in non-photo renditions (the ImageNet-R analogue)"),
    Task("thermal", SHAPES, "a photo of a {}.", _scene_task("shape", SHAPES, style="photo", palette="thermal"), "far",
         "shape category under a thermal colour map"),
    Task("digits", DIGITS, "a photo of the number {}.", lambda rng, label, size: (render_digit(label, rng, size), None), "far",
         "rendered digits (world 2: seen in training only on rare signs)"),
    Task("terrain", TERRAINS, "a satellite photo of {}.", lambda rng, label, size: (render_terrain(TERRAINS[label], rng, size), None), "far",
         "aerial terrain tiles, never seen in training (world 2: their words name backgrounds, rarely)"),
]}


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def _load_cached(path: Path, shapes: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """The arrays of a cached ``.npz`` if it is whole and has the expected ``shapes``, else ``None``.

    A truncated or damaged file (a full disk, a copy cut short) is a miss, not a crash
    (``results.read_cached``): the caller renders the images again.
    """
    def load(p: Path) -> dict[str, np.ndarray]:
        with np.load(p) as data:
            arrays = {k: data[k] for k in shapes}
        bad = {k: a.shape for k, a in arrays.items() if a.shape != shapes[k]}
        if bad:
            raise ValueError(f"shapes {bad}, expected {shapes}")
        return arrays
    return read_cached(path, load, "world")


def _generate(task: Task, split: str, n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.arange(n) % len(task.classnames)
    for i in progress(range(n), desc=f"render {task.name}/{split}", total=n, leave=False):
        rng = np.random.default_rng([seed, SPLIT_IDS[split], i, int(hashlib.md5(task.name.encode()).hexdigest()[:6], 16)])
        images[i], _ = task.make(rng, int(labels[i]), size)
    return images, labels


class WorldDataset(Dataset):
    """Images of one world task as a torch Dataset returning ``(transform(PIL), label)``.

    Attributes:
        images: (N, S, S, 3) uint8. labels: (N,) int64 LongTensor. classnames, template, name, key.
    """

    def __init__(self, images: np.ndarray, labels, classnames, template: str, name: str, key: str,
                 transform: Callable | None = None, meta: dict | None = None):
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.classnames = list(classnames)
        self.template = template
        self.templates = [template]
        self.name = name
        self.key = key
        self.transform = transform
        self.meta = meta or {}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), int(self.labels[i])

    def subset(self, indices) -> "WorldDataset":
        idx = np.asarray(indices)
        h = hashlib.sha1(idx.tobytes()).hexdigest()[:10]
        return WorldDataset(self.images[idx], self.labels.numpy()[idx], self.classnames, self.template, self.name,
                            f"{self.key}/sub-{h}", self.transform, dict(self.meta))

    def with_images(self, images: np.ndarray, suffix: str) -> "WorldDataset":
        """Same labels, new pixels (e.g. corrupted); ``suffix`` extends the cache key."""
        return WorldDataset(images, self.labels.numpy(), self.classnames, self.template, self.name,
                            f"{self.key}/{suffix}", self.transform, dict(self.meta))


def load(name: str, split: str = "test", n: int = 1000, seed: int = 0, size: int = 64,
         transform: Callable | None = None, cache: bool = True) -> WorldDataset:
    """A world evaluation dataset, class-balanced (label = index mod C).

    Args:
        name: a key of ``TASKS``.
        split: "train", "val" or "test" (disjoint generator streams).
        n: number of images.
        seed: world seed; the same seed gives the same bytes.
        size: image side in pixels.
        transform: applied to each PIL image in ``__getitem__``.
    """
    if name not in TASKS:
        raise KeyError(f"unknown world dataset {name!r}; known: {sorted(TASKS)}")
    if split not in SPLIT_IDS:
        raise KeyError(f"unknown split {split!r}; known: {sorted(SPLIT_IDS)}")
    task = TASKS[name]
    key = f"world-v{WORLD_VERSION}/{name}/{split}/n{n}/s{seed}/px{size}"
    path = cache_root() / "world" / (key.replace("/", "_") + ".npz")
    data = _load_cached(path, {"images": (n, size, size, 3), "labels": (n,)}) if cache else None
    if data is not None:
        images, labels = data["images"], data["labels"]
    else:
        images, labels = _generate(task, split, n, seed, size)
        if cache:
            _atomic_savez(path, images=images, labels=labels)
    return WorldDataset(images, labels, task.classnames, task.template, name, key, transform,
                        {"distance": task.distance, "description": task.description})


def training_pool(n: int, seed: int = 0, size: int = 64, cache: bool = True,
                  world: int = WORLD_VERSION) -> tuple[np.ndarray, list[Scene]]:
    """``n`` images from the training distribution with their scenes (for captions).

    ``world=2`` puts a sign with a random digit on ``SIGN_RATE`` (5 %) of the images
    (``render.draw_sign``); the rest of each image is drawn as in world 1.
    """
    key = f"world-v{world}_pool_n{n}_s{seed}_px{size}"
    path = cache_root() / "world" / f"{key}.npz"
    scenes = []
    images = np.empty((n, size, size, 3), np.uint8)
    rngs = [np.random.default_rng([seed, SPLIT_IDS["pool"], i]) for i in range(n)]
    for rng in rngs:
        scene = sample_scene(rng)
        if world >= 2 and rng.random() < SIGN_RATE:
            scene = replace(scene, sign=int(rng.integers(len(DIGITS))))
        scenes.append(scene)
    if cache and (data := _load_cached(path, {"images": images.shape})) is not None:
        return data["images"], scenes
    for i in progress(range(n), desc="render training pool", total=n):
        images[i] = render_scene(scenes[i], rngs[i], size)  # continues each image's own stream
    if cache:
        _atomic_savez(path, images=images)
    return images, scenes
