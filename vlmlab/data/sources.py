"""Named data sources: the one place where a profile's dataset name becomes a Dataset.

Notebooks name their data with a string, and this module turns it into a dataset with
``classnames``, ``labels`` and a cache ``key``:

    "world:objects"       the procedural world (embedded profile), any task of vlmlab.world.TASKS
    "imagenet_val"        ImageNet validation under the data root (paper profile)
    "imagenet_a" / "imagenet_r"   the 200-class ImageNet variants
    "imagenet_v2" / "imagenet_sketch"   the 1000-class ImageNet variants (CoOp's other two DG targets)
    "coop:<Name>"         one of CoOp's 11 split-file datasets

``corrupted(...)`` gives the same images under an ImageNet-C corruption: generated for world
sets (cached), read from the released ImageNet-C folders for ImageNet.
"""
from __future__ import annotations

from vlmlab.data import real
from vlmlab.data.corruptions import corrupt_dataset

WORLD_DEFAULT_N = 1000   # world images generated when a count is None


def count_or_default(n: int | None, default: int | None, name: str = "n") -> int | None:
    """``default`` when ``n`` is None, else ``n``, which must be >= 1.

    A 0 used to fall through ``n or 1000`` and silently become the default; it is an error now.

    Raises:
        ValueError: ``n`` is below 1 or not an int, naming ``name``.
    """
    if n is None:
        return default
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}={n!r}: a count must be an int >= 1 (None: the default, {default})")
    return n


def _check_classnames(spec: str, classnames) -> None:
    if classnames and not spec.startswith("imagenet"):
        raise ValueError(f"classnames={classnames!r} applies to the ImageNet sources; {spec!r} names its own classes "
                         "(leave classnames empty)")


def load_source(spec: str, *, root=None, split: str = "test", n: int | None = None, seed: int = 0,
                size: int = 64, on_error: str = "raise", classnames: str | None = None):
    """Dataset for ``spec`` (see the module docstring).

    Args:
        spec: source name.
        root: data root for real datasets (default ``$VLMLAB_DATA``).
        split: world / CoOp split.
        n: number of images (world: generated; real: a seeded class-balanced subset, None = all).
        seed: world seed, or subset seed for real data.
        size: world image side.
        classnames: ImageNet sources only: None / "" (``classnames.txt``, CoOp's curated names), ``"synsets"``
            (every WordNet synonym joined by ", ", UniInfo's) or a file (``vlmlab.data.real``).
    """
    n = count_or_default(n, None, f"n (images of {spec!r})")
    _check_classnames(spec, classnames)
    kind, _, name = spec.partition(":")
    if kind == "world":
        from vlmlab import world
        return world.load(name, split, n=count_or_default(n, WORLD_DEFAULT_N), seed=seed, size=size)
    kw = {"on_error": on_error, "n": n, "seed": seed}
    if kind.startswith("imagenet"):
        kw["classnames"] = classnames
    if kind == "imagenet_val":
        return real.imagenet_val(root, **kw)
    if kind == "imagenet_a":
        return real.imagenet_a(root, **kw)
    if kind == "imagenet_r":
        return real.imagenet_r(root, **kw)
    if kind == "imagenet_v2":
        return real.imagenet_v2(root, **kw)
    if kind == "imagenet_sketch":
        return real.imagenet_sketch(root, **kw)
    if kind == "coop":
        return real.coop_dataset(root, name, split, **kw)
    raise KeyError(f"unknown data source {spec!r}; use 'world:<task>', 'imagenet_val', 'imagenet_a', "
                   f"'imagenet_r', 'imagenet_v2', 'imagenet_sketch' or 'coop:<Name>'")


def corrupted(spec: str, clean, corruption: str, severity: int, *, root=None, n: int | None = None,
              seed: int = 0, corruption_seed: int = 0, on_error: str = "raise", classnames: str | None = None):
    """``clean`` under ImageNet-C ``corruption`` at ``severity`` (0 or "clean" returns ``clean``).

    World sets are corrupted in memory (``corruption_seed``); ImageNet reads the released
    ImageNet-C folders, taking the same seeded subset (``n``, ``seed``) as ``load_source`` did,
    so clean and corrupted rows are the same images (and, with the same ``classnames``, the same names).
    """
    _check_classnames(spec, classnames)
    if corruption == "clean" or severity == 0:
        return clean
    if spec.startswith("world:"):
        return corrupt_dataset(clean, corruption, severity, seed=corruption_seed)
    if spec == "imagenet_val":
        return real.imagenet_c(root, corruption, severity, on_error=on_error, n=n, seed=seed,
                               classnames=classnames)
    raise KeyError(f"no corrupted version of {spec!r}: corruptions exist for world sets and imagenet_val")
