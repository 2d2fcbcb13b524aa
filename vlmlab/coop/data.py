"""Datasets of the CoOp sweep: splits, hand-written zero-shot templates, domain-generalization targets.

Sources are ``vlmlab.data.load_source`` names. World sets (embedded profile) are generated per
split: train ``n_train_per_class`` x C images (the pool the K shots are drawn from), val
4 x C (CoOp's val subset has min(K, 4) per class), test ``n_test``. CoOp's sets (paper profile)
use their split files, all images (``n_test`` subsamples the test split when set).

Zero-shot templates (CoOp ``trainers/zsclip.py`` CUSTOM_TEMPLATES, ``coop.md`` §7) for CoOp's sets;
world sets use their task's hand-written template.

Domain-generalization targets (``coop.md`` Table 1 protocol: train on the source, test on shifted
sets sharing its classes):
    "world:<task>"                    a world task with the source's class names (renditions, thermal)
    "world:<task>@<corruption>:<s>"   the world test set under an ImageNet-C corruption
    "imagenet_a" / "imagenet_r"       200-class subsets, read through ``imagenet_indices``
    "imagenet_v2" / "imagenet_sketch" all 1000 classes, in the source ImageNet's order
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlmlab.data.sources import corrupted, load_source

CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "Flowers102": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
}


@dataclass
class Splits:
    """One dataset of the sweep: its train pool, val pool and test set (datasets with ``.labels``)."""

    name: str
    source: str
    train: Any
    val: Any
    test: Any
    classnames: list[str]
    template: str

    @property
    def n_classes(self) -> int:
        return len(self.classnames)


def dataset_name(source: str) -> str:
    """Display name: the part after ``world:`` / ``coop:`` ("world:objects" -> "objects")."""
    return source.split(":", 1)[-1] if ":" in source else source


def template_for(source: str, dataset) -> str:
    name = dataset_name(source)
    if source.startswith("coop:"):
        return CUSTOM_TEMPLATES.get(name, "a photo of a {}.")
    return getattr(dataset, "template", None) or "a photo of a {}."


def load_splits(source: str, *, root=None, n_train_per_class: int = 32, n_test: int | None = 1000,
                seed: int = 0) -> Splits:
    """Train/val/test of ``source`` (see the module docstring)."""
    if source.startswith("world:"):
        from vlmlab import world
        task = dataset_name(source)
        if task not in world.TASKS:
            raise KeyError(f"unknown world dataset {source!r}; known: {sorted(world.TASKS)}")
        c = len(world.TASKS[task].classnames)
        train = load_source(source, split="train", n=c * n_train_per_class, seed=seed)
        val = load_source(source, split="val", n=c * 4, seed=seed)
        test = load_source(source, split="test", n=n_test, seed=seed)
    else:
        train = load_source(source, root=root, split="train", seed=seed)
        val = load_source(source, root=root, split="val", seed=seed)
        test = load_source(source, root=root, split="test", n=n_test, seed=seed)
    return Splits(dataset_name(source), source, train, val, test, list(test.classnames), template_for(source, test))


def dg_target(spec: str, source: Splits, *, root=None, n_test: int | None = 1000, seed: int = 0):
    """A domain-generalization target test set and the class map into the source's classes.

    Returns:
        ``(dataset, class_index)``: ``class_index`` (C_t,) selects the target's classes among the
        source's logits (``None`` when they are the same classes in the same order).
    """
    if spec.startswith("world:"):
        base, _, corruption = spec.partition("@")
        ds = load_source(base, split="test", n=n_test, seed=seed)
        if corruption:
            name, _, severity = corruption.partition(":")
            ds = corrupted(base, ds, name, int(severity or 5), corruption_seed=seed)
        if list(ds.classnames) != list(source.classnames):
            raise ValueError(f"DG target {spec!r} has classes {list(ds.classnames)[:5]}... but the source "
                             f"{source.source!r} has {source.classnames[:5]}...; targets must share the classes")
        return ds, None
    ds = load_source(spec, root=root, split="test", n=n_test, seed=seed)
    index = getattr(ds, "imagenet_indices", None)
    if index is None and list(ds.classnames) != list(source.classnames):
        raise ValueError(f"DG target {spec!r} has neither the source's classes nor imagenet_indices")
    return ds, None if index is None else torch.as_tensor(index).long()


def find_split(splits, source: str) -> Splits:
    """The split loaded from ``source`` (e.g. the domain-generalization source), or a KeyError naming the choices."""
    for s in splits:
        if s.source == source or s.name == source:
            return s
    raise KeyError(f"dg_source {source!r} is not among the sweep's datasets {[s.source for s in splits]}; "
                   f"add it to `datasets` (its contexts are trained there)")
