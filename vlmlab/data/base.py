"""ImageDataset: a list of ``(path, label)`` samples with class names and a stable cache key.

Every real-data loader (``vlmlab.data.real``) returns one. Items are
``(transform(PIL RGB image), label)``; without a transform the PIL image itself.

Unreadable images (``on_error``):
    "raise" (default): reading a bad file raises ``ImageReadError`` naming its path.
    "skip":  with ``verify=True`` every file is decoded once at construction and bad
             ones are dropped (``.skipped`` lists them, ``.n_skipped`` counts them), so
             ``len``, ``.labels`` and the items stay aligned. With ``verify=False`` a bad
             file is met lazily in ``__getitem__``, which logs it, records it and returns
             the next readable sample instead (so that item's label is the neighbour's;
             ``vlmlab.features.extract`` keeps the labels it was given, not ``.labels``).
             Lazy skips made inside DataLoader worker processes are not counted here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vlmlab.runtime import get_logger

log = get_logger("vlmlab.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DatasetNotFound(FileNotFoundError):
    """A dataset folder or file is missing; the message names the path and how to get the data."""


class ImageReadError(OSError):
    """An image file exists but cannot be decoded; the message names the file."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB PIL image, or raise ``ImageReadError`` naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # convert() forces a full decode (catches truncation)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {str(path)!r}: {type(err).__name__}: {err}. "
                             f"Re-extract or delete the file, or load the dataset with "
                             f"on_error='skip'.") from err


class ImageDataset(Dataset):
    """Images on disk with integer labels.

    Args:
        samples: ``(path, label)`` pairs, labels in ``[0, len(classnames))``.
        classnames: one name per label.
        name: dataset name (``"imagenet"``, ``"imagenet-c/fog/5"``, ``"dtd"``...).
        root: folder the paths live under; the cache key uses paths relative to it, so moving
            the data root keeps cached features valid.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transform: ``PIL.Image -> Tensor`` (e.g. ``bundle.preprocess``) or ``None``.
        meta: extra key parts, e.g. ``{"corruption": "fog", "severity": 5}``.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring).
        verify: decode every file once now (slow on big sets; makes ``"skip"`` exact).
        imagenet_indices: for 200-class ImageNet subsets (A, R): ``(C,)`` index of each class
            in the 1000-class ImageNet head, so ``logits1000[:, ds.imagenet_indices]`` is (B, C).
    """

    def __init__(self, samples: Sequence[tuple[str | Path, int]], classnames: Sequence[str], name: str, *,
                 root: str | Path | None = None, split: str = "test", transform: Callable | None = None,
                 meta: dict | None = None, on_error: str = "raise", verify: bool = False,
                 imagenet_indices: Tensor | Sequence[int] | None = None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}; use 'raise' or 'skip'")
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.classnames = list(classnames)
        self.name, self.split, self.transform = name, split, transform
        self.root = None if root is None else str(root)
        self.meta = dict(meta or {})
        self.on_error = on_error
        self.imagenet_indices = None if imagenet_indices is None else torch.as_tensor(imagenet_indices).long()
        self.skipped: list[str] = []
        bad = [y for _, y in self.samples if not 0 <= y < len(self.classnames)]
        if bad:
            raise ValueError(f"{name}: label {bad[0]} outside [0, {len(self.classnames)}) classes")
        if verify:
            self.verify()

    # ---- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        for k in range(len(self.samples)):
            path, label = self.samples[(i + k) % len(self.samples)]
            try:
                img = load_rgb(path)
            except ImageReadError as err:
                if self.on_error == "raise":
                    raise
                if path not in self.skipped:
                    self.skipped.append(path)
                    log.warning("skipping unreadable image (%s); returning the next one", err)
                continue
            return (self.transform(img) if self.transform is not None else img), label
        raise ImageReadError(f"{self.name}: none of the {len(self.samples)} images could be read")

    def __repr__(self) -> str:
        return (f"ImageDataset({self.key!r}, classes={len(self.classnames)}, root={self.root!r}, "
                f"transform={'yes' if self.transform else 'none'}, skipped={self.n_skipped})")

    # ---- derived views ------------------------------------------------------------------
    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def labels(self) -> Tensor:
        """(N,) int64 labels."""
        return torch.tensor([y for _, y in self.samples], dtype=torch.long)

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.samples]

    @property
    def key(self) -> str:
        """Stable id for cache keys: name, split, meta, size and a digest of (relative path, label)."""
        h = hashlib.sha1()
        for p, y in self.samples:
            rel = Path(p).relative_to(self.root).as_posix() if self.root and Path(p).is_relative_to(self.root) else p
            h.update(f"{rel}\t{y}\n".encode())
        h.update("\n".join(self.classnames).encode())
        parts = [self.name, self.split] + [f"{k}={self.meta[k]}" for k in sorted(self.meta)]
        return ":".join(str(p) for p in parts) + f":n={len(self)}:{h.hexdigest()[:12]}"

    def _clone(self, samples: list[tuple[str, int]], **changes) -> "ImageDataset":
        new = object.__new__(ImageDataset)
        new.__dict__.update(self.__dict__)
        new.samples, new.skipped = samples, []
        new.meta = dict(self.meta)
        new.__dict__.update(changes)
        return new

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> "ImageDataset":
        """A dataset of the samples at ``indices`` (same classes, transform and policy)."""
        idx = torch.as_tensor(indices).long().tolist() if not isinstance(indices, list) else indices
        return self._clone([self.samples[i] for i in idx])

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        """Same samples, another transform (the original is left as it was)."""
        return self._clone(list(self.samples), transform=transform, skipped=list(self.skipped))

    def limit(self, n: int | None = None, max_per_class: int | None = None, seed: int = 0) -> "ImageDataset":
        """Seeded subset: at most ``max_per_class`` per class, then at most ``n`` in all.

        The picks keep the original order, so the same (n, max_per_class, seed) gives the same key.
        """
        if n is None and max_per_class is None:
            return self
        rng = np.random.default_rng(seed)
        labels = np.array([y for _, y in self.samples], dtype=np.int64)
        keep = np.arange(len(labels))
        if max_per_class is not None:
            keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class]
                                   for c in range(len(self.classnames))] + [np.zeros(0, np.int64)])
        if n is not None and n < len(keep):
            keep = rng.choice(keep, size=n, replace=False)
        return self.subset(np.sort(keep).tolist())

    def verify(self) -> "ImageDataset":
        """Decode every file now; a bad one raises (``on_error="raise"``) or is dropped (``"skip"``)."""
        good = []
        for path, label in self.samples:
            try:
                load_rgb(path)
            except ImageReadError as err:
                if self.on_error == "raise":
                    raise
                log.warning("dropping unreadable image (%s)", err)
                self.skipped.append(path)
                continue
            good.append((path, label))
        self.samples = good
        return self
