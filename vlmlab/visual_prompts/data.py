"""Datasets of notebook 04: train (k shots) / val / test splits per named source.

    "world:<task>"          the procedural world (embedded profile); its own splits, class-balanced
    "coop:<Name>"           CoOp's split-file datasets (Flowers102, Food101, EuroSAT, SUN397, DTD,
                            OxfordPets, StanfordCars, UCF101) via ``vlmlab.data.load_source``
    "torchvision:<Name>"    CIFAR10, CIFAR100, SVHN, CLEVR (count) through torchvision with
                            ``download=False`` under ``<data_root>/<folder>``; val = a seeded
                            per-class slice of the train split, disjoint from the shots
                            (shots None: train is the rest of the split)
    "folder:<Name>"         ``<data_root>/<name>/<class>/<image>`` (e.g. RESISC45); train/val/test
                            = seeded per-class 60/20/20 % split
A bare name of the paper's datasets ("CIFAR100", "EuroSAT", "RESISC45" ...) stands for its source
in ``PAPER_DATASETS``. Reference set for the gap: "world:pool" (the first n images of the embedded CLIP's training pool)
or "imagenet_val" (ImageNet validation, the paper's proxy for CLIP's pretraining data).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vlmlab import world
from vlmlab.data import DatasetNotFound, ImageDataset, load_source, sample_few_shot
from vlmlab.data.base import IMAGE_EXTENSIONS
from vlmlab.data.sources import WORLD_DEFAULT_N, count_or_default
from vlmlab.runtime import FETCH_HINT, data_root

__all__ = ["Splits", "load_splits", "load_reference", "resolve_spec", "TORCHVISION", "PAPER_DATASETS"]

# name -> (torchvision class, folder under the data root, train split arg, test split arg)
TORCHVISION = {"CIFAR10": ("CIFAR10", "cifar10", True, False), "CIFAR100": ("CIFAR100", "cifar100", True, False),
               "SVHN": ("SVHN", "svhn", "train", "test"), "CLEVR": ("CLEVRClassification", "clevr", "train", "val")}
# The paper's datasets (visual_prompting.md §5 and the issue) by bare name -> source spec.
PAPER_DATASETS = {"CIFAR10": "torchvision:CIFAR10", "CIFAR100": "torchvision:CIFAR100", "SVHN": "torchvision:SVHN",
                  "CLEVR": "torchvision:CLEVR", "RESISC45": "folder:RESISC45", "Flowers102": "coop:Flowers102",
                  "Food101": "coop:Food101", "EuroSAT": "coop:EuroSAT", "SUN397": "coop:SUN397", "DTD": "coop:DTD",
                  "UCF101": "coop:UCF101", "OxfordPets": "coop:OxfordPets", "StanfordCars": "coop:StanfordCars"}
_CLASSNAMES = {"SVHN": [str(d) for d in range(10)], "CLEVR": [str(k) for k in range(3, 11)]}
# torchvision's CLEVRClassification labels are the object counts (3-10); class c of _CLASSNAMES is count c + 3.
_LABEL_OFFSET = {"CLEVR": 3}


@dataclass
class Splits:
    """One downstream dataset: splits with ``labels``, class names and its default prompt template."""

    name: str
    spec: str
    train: Dataset
    val: Dataset
    test: Dataset
    classnames: list[str]
    template: str


class _Wrapped(Dataset):
    """A torchvision dataset as ``(PIL, label)`` items with ``labels`` and ``subset``."""

    def __init__(self, base, labels: np.ndarray, classnames: list[str], idx: np.ndarray | None = None,
                 name: str | None = None):
        self.base, self.all_labels, self.classnames, self.name = base, np.asarray(labels), classnames, name
        self.idx = np.arange(len(self.all_labels)) if idx is None else np.asarray(idx)

    @property
    def key(self) -> str | None:
        """Stable id for cache keys: the torchvision set and split (``name``), and a digest of the items and
        their labels; None without a name."""
        if self.name is None:
            return None
        items = np.stack([self.idx.astype(np.int64), self.all_labels[self.idx].astype(np.int64)])
        return f"{self.name}:n={len(self.idx)}:{hashlib.sha1(items.tobytes()).hexdigest()[:16]}"

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.all_labels[self.idx]).long()

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i):
        img, _ = self.base[int(self.idx[i])]
        return img.convert("RGB"), int(self.all_labels[self.idx[i]])

    def subset(self, indices) -> "_Wrapped":
        return _Wrapped(self.base, self.all_labels, self.classnames, self.idx[np.asarray(indices)], self.name)


def _per_class_slices(labels, fractions_or_counts, seed: int) -> list[np.ndarray]:
    """Seeded per-class permutation cut into consecutive slices (counts per class, None = the rest)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = [[] for _ in fractions_or_counts]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, take in enumerate(fractions_or_counts):
            n = len(members) - start if take is None else (int(round(take * len(members))) if isinstance(take, float) else take)
            out[k].append(members[start:start + n])
            start += n
    return [np.sort(np.concatenate(parts)) if parts else np.zeros(0, int) for parts in out]


def _torchvision(name: str, root: Path, train: bool) -> _Wrapped:
    import torchvision.datasets as tvd

    cls_name, folder, train_arg, test_arg = TORCHVISION[name]
    path, arg = root / folder, (train_arg if train else test_arg)
    kw = {"train": arg} if isinstance(arg, bool) else {"split": arg}
    try:
        ds = getattr(tvd, cls_name)(str(path), download=False, **kw)
    except (RuntimeError, FileNotFoundError) as err:
        raise DatasetNotFound(f"{name} not found under {str(path)!r} ({err}). vlmlab never downloads: run "
                              f"torchvision.datasets.{cls_name}({str(path)!r}, download=True) once elsewhere and "
                              f"copy the folder there; {FETCH_HINT}") from err
    labels = next(v for v in (getattr(ds, a, None) for a in ("targets", "labels", "_labels")) if v is not None)
    classnames = list(getattr(ds, "classes", None) or _CLASSNAMES[name])
    labels = np.asarray(labels) - _LABEL_OFFSET.get(name, 0)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classnames)):
        raise ValueError(f"{name}: labels {labels.min()}..{labels.max()} outside its {len(classnames)} classes")
    return _Wrapped(ds, labels, classnames, name=f"torchvision/{cls_name}/{'train' if train else 'test'}")


def _folder(name: str, root: Path) -> ImageDataset:
    folder = root / name
    if not folder.is_dir():
        raise DatasetNotFound(f"{name} not found: looked in {str(folder)!r}; expected <class>/<image> folders "
                              f"(e.g. NWPU-RESISC45 extracted there)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    samples = [(str(f), c) for c, cls in enumerate(classes) for f in sorted((folder / cls).iterdir())
               if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not samples:
        raise DatasetNotFound(f"no images in class folders under {str(folder)!r}")
    return ImageDataset(samples, [c.replace("_", " ") for c in classes], f"folder/{name}", root=folder)


def resolve_spec(spec: str) -> str:
    """``"CIFAR100"`` -> ``"torchvision:CIFAR100"`` (``PAPER_DATASETS``); a spec with a colon stays."""
    if ":" in spec:
        return spec
    if spec not in PAPER_DATASETS:
        raise KeyError(f"unknown dataset {spec!r}; use a source spec ('world:<task>', 'coop:<Name>', "
                       f"'torchvision:<Name>', 'folder:<Name>') or one of {sorted(PAPER_DATASETS)}")
    return PAPER_DATASETS[spec]


def load_splits(spec: str, *, shots: int | None, n_val: int, n_test: int | None, seed: int = 0,
                root=None, size: int = 64) -> Splits:
    """Train (``shots`` per class; ``None`` = all), val (``n_val`` per class) and test splits of ``spec``.

    Args:
        spec: a source name (module docstring).
        shots: training images per class (``None``: the whole train split, as in the paper).
        n_val: validation images per class (for the probe's C search and ``select="val"``).
        n_test: test images (``None`` = all); world sets are class-balanced by construction.
        seed: world seed / draw seed.
        root: data root for real datasets (``None`` = ``$VLMLAB_DATA``).
        size: world image side.
    """
    spec = resolve_spec(spec)
    kind, _, name = spec.partition(":")
    if kind == "world":
        task = world.TASKS[name] if name in world.TASKS else None
        if task is None:
            raise KeyError(f"unknown world dataset {name!r} in {spec!r}; known: {sorted(world.TASKS)}")
        c = len(task.classnames)
        train = world.load(name, "train", n=count_or_default(shots, 64, "shots") * c, seed=seed, size=size)
        val = world.load(name, "val", n=n_val * c, seed=seed, size=size)
        test = world.load(name, "test", n=count_or_default(n_test, WORLD_DEFAULT_N, "n_test"), seed=seed, size=size)
        return Splits(name, spec, train, val, test, list(task.classnames), task.template)
    root = data_root(root or None)
    if kind == "coop":
        train = load_source(spec, root=root, split="train")
        val = load_source(spec, root=root, split="val")
        test = load_source(spec, root=root, split="test", n=n_test, seed=seed)
        if shots is not None:
            train = train.subset(sample_few_shot(train.labels, shots, seed).numpy())
        val = val.subset(sample_few_shot(val.labels, n_val, seed).numpy())
    elif kind == "torchvision" and name in TORCHVISION:
        full, test = _torchvision(name, root, True), _torchvision(name, root, False)
        if shots is None:   # the whole train split less the validation images (the reference has no val split)
            va, tr = _per_class_slices(full.labels.numpy(), [n_val, None], seed)
        else:
            tr, va = _per_class_slices(full.labels.numpy(), [shots, n_val], seed)
        train, val = full.subset(tr), full.subset(va)
        if n_test is not None and n_test < len(test):
            test = test.subset(np.sort(np.random.default_rng(seed).permutation(len(test))[:n_test]))
    elif kind == "folder":
        full = _folder(name, root)
        tr, va, te = _per_class_slices(full.labels.numpy(), [0.6, 0.2, None], seed)
        train, val, test = full.subset(tr), full.subset(va), full.subset(te)
        if shots is not None:
            train = train.subset(sample_few_shot(train.labels, shots, seed).numpy())
        val = val.subset(sample_few_shot(val.labels, n_val, seed).numpy())
        if n_test is not None and n_test < len(test):
            test = test.subset(np.sort(np.random.default_rng(seed).permutation(len(test))[:n_test]))
    else:
        raise KeyError(f"unknown dataset {spec!r}; use 'world:<task>', 'coop:<Name>', "
                       f"'torchvision:<{'|'.join(TORCHVISION)}>' or 'folder:<Name>'")
    return Splits(name, spec, train, val, test, list(test.classnames), "")


def load_reference(spec: str, n: int, seed: int = 0, root=None, size: int = 64):
    """The gap's reference set: "world:pool" (uint8 (n, S, S, 3)) or "imagenet_val" (a dataset)."""
    if spec == "world:pool":
        return world.training_pool(n, seed=seed, size=size)[0]
    if spec == "imagenet_val":
        return load_source(spec, root=root or None, n=n, seed=seed)
    raise KeyError(f"unknown reference set {spec!r}; use 'world:pool' or 'imagenet_val'")
