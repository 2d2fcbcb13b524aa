"""Frozen-encoder image features, batched, with an atomic on-disk cache.

    feats = extract(bundle, dataset, cache=FeatureCache())      # Features: feats (N, D), labels (N,)

Cache key = sha1 of canonical JSON {model: bundle.identity, dataset: dataset key,
transform: transform id, seed, extra}. A file ``<sha1>.safetensors`` holds ``feats``, ``labels`` and
``norms`` (the encoder output's norms, so ``Features.raw`` gives the unnormalised output; plus anything
passed to ``put``) and the key's canonical JSON in its metadata
(``vlmlab_key``); ``<sha1>.json`` beside it shows the key to humans. A file that cannot be read,
or whose stored key is not the one asked for (copied or renamed under another key), is a miss; so,
for ``extract`` and ``extract_arrays``, is a file without ``norms`` (written before they were kept).
Both are written to a temporary file in the same folder (``results.atomic_path``) and moved into
place, so a killed run leaves either the whole file or none (at worst a stray ``.*.tmp*`` file,
which is never read), with the umask's permissions, so a shared cache reads like other files.

Returned tensors are ordinary CPU tensors (cloned out of ``inference_mode``), so methods may
use them in autograd graphs (linear probes, Tip-Adapter-F).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vlmlab.models.bundle import ClipBundle
from vlmlab.results import atomic_path
from vlmlab.runtime import cache_root, get_logger, progress

log = get_logger("vlmlab.features")

KEY_FIELD = "vlmlab_key"  # safetensors metadata entry holding the canonical key


@dataclass
class Features:
    """Image features of one dataset under one model.

    Attributes:
        feats: (N, D) float32, rows L2-normalised.
        labels: (N,) int64.
        key: sha1 of the cache key (``FeatureCache.digest(spec)``).
        spec: the key itself (model, dataset, transform, seed, extra).
        norms: (N,) float32 L2 norms of the image encoder's output before normalisation, or None (features
            built by hand); ``raw`` is ``feats * norms``.
    """

    feats: Tensor
    labels: Tensor
    key: str
    spec: dict = field(default_factory=dict)
    norms: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def raw(self) -> Tensor:
        """(N, D) the image encoder's output before normalisation (up to float rounding): what lpclip's linear
        probe fits (``clip_model.visual(x)``)."""
        if self.norms is None:
            raise ValueError("these features carry no norms (built without extract / extract_arrays); "
                             "the unnormalised encoder output is unknown")
        return self.feats * self.norms[:, None]


def transform_id(transform: Any) -> str:
    """A stable string for a transform: its ``transform_id`` attribute, a string as is, else its repr
    without memory addresses (two lambdas then look alike: pass an explicit id for those)."""
    if transform is None:
        return "none"
    if isinstance(transform, str):
        return transform
    explicit = getattr(transform, "transform_id", None)
    if isinstance(explicit, str):
        return explicit
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


class FeatureCache:
    """Tensors on disk, one safetensors file per key dict.

    Args:
        root: folder (default ``runtime.cache_root()/"features"``).
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_root() / "features"
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def canonical(key: dict) -> str:
        """The canonical JSON of ``key`` (sorted keys, no spaces): what is hashed and stored in the file."""
        return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)

    @classmethod
    def digest(cls, key: dict) -> str:
        """sha1 of the canonical JSON of ``key``."""
        return hashlib.sha1(cls.canonical(key).encode()).hexdigest()

    def path(self, key: dict) -> Path:
        return self.root / f"{self.digest(key)}.safetensors"

    def __contains__(self, key: dict) -> bool:
        return self.path(key).is_file()

    def get(self, key: dict) -> dict[str, Tensor] | None:
        """The tensors stored under ``key``, or ``None`` (also for an unreadable file, with a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                stored = (f.metadata() or {}).get(KEY_FIELD)
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # a damaged file is a miss, never a crash
            log.warning("ignoring unreadable cache file %s (%s); it will be recomputed", path, err)
            return None
        if stored != self.canonical(key):
            log.warning("ignoring cache file %s: it holds the features of another key (%s), not of %s; "
                        "it will be recomputed", path, stored, self.canonical(key))
            return None
        return tensors

    def put(self, key: dict, tensors: dict[str, Tensor]) -> Path:
        """Store ``tensors`` under ``key`` atomically, the key inside the file; returns the file's path."""
        path = self.path(key)
        meta = json.dumps(key, sort_keys=True, indent=1, default=str)
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(meta)
        data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}  # no shared storage
        with atomic_path(path) as tmp:
            save_file(data, str(tmp), metadata={KEY_FIELD: self.canonical(key)})
        return path


def _collate(transform: Callable) -> Callable:
    """Stack items into (B, 3, S, S); PIL images go through ``transform`` first."""
    def collate(batch):
        xs = [transform(x) if isinstance(x, Image.Image) else torch.as_tensor(x) for x, _ in batch]
        return torch.stack(xs), torch.as_tensor([int(y) for _, y in batch], dtype=torch.long)
    return collate


def _lookup(cache, spec: dict, desc: str) -> Features | None:
    if cache is None:
        return None
    hit = cache.get(spec)
    if hit is not None and "norms" not in hit:  # written before 2026-12-04, when the norms were not kept
        log.info("feature cache file %s holds no norms; recomputing it", FeatureCache.digest(spec)[:12])
        hit = None
    if hit is None:
        log.info("feature cache miss: %s (%s)", desc, FeatureCache.digest(spec)[:12])
        return None
    log.info("feature cache hit: %s (%s, %d items)", desc, FeatureCache.digest(spec)[:12], len(hit["labels"]))
    return Features(hit["feats"], hit["labels"], FeatureCache.digest(spec), spec, hit["norms"])


def _unit(z: Tensor) -> tuple[Tensor, Tensor]:
    """(B, D) encoder output -> unit rows exactly as ``ClipBundle.encode_images`` normalises them, and the
    (B,) norms, both float32 on the CPU."""
    z = z.float()
    return F.normalize(z, dim=-1).cpu(), z.norm(dim=-1).cpu()


def _finish(cache, spec: dict, chunks: list[tuple[Tensor, Tensor]], labels: list[Tensor], dim: int) -> Features:
    # outside inference_mode: normal tensors
    feats = torch.cat([c[0] for c in chunks]).float() if chunks else torch.zeros(0, dim)
    norms = torch.cat([c[1] for c in chunks]).float() if chunks else torch.zeros(0)
    labels = torch.cat(labels).long() if labels else torch.zeros(0, dtype=torch.long)
    if cache is not None:
        cache.put(spec, {"feats": feats, "labels": labels, "norms": norms})
    return Features(feats, labels, FeatureCache.digest(spec), spec, norms)


def _as_cache(cache) -> FeatureCache | None:
    return FeatureCache() if cache is True else (cache or None)


def extract(bundle: ClipBundle, dataset: Dataset, *, batch_size: int = 256, cache: FeatureCache | bool | None = None,
            num_workers: int = 0, desc: str | None = None, key: str | None = None, transform: str | None = None,
            seed: int | None = None, extra: Any = None) -> Features:
    """Encode every image of ``dataset`` (in order) into unit-norm features and their norms.

    Args:
        bundle: the model.
        dataset: items ``(image, label)``; an image is a PIL image (encoded through
            ``bundle.preprocess``) or an already-normalised (3, S, S) tensor.
        batch_size, num_workers: DataLoader settings.
        cache: a ``FeatureCache`` (``True`` = the default one) or ``None`` for no caching.
        desc: progress-bar label.
        key: dataset id for the cache key (default ``dataset.key``; required with a cache otherwise).
        transform: transform id (default ``transform_id`` of ``dataset.transform`` or ``bundle.preprocess``).
        seed, extra: more key parts (e.g. the seed of a random augmentation).
    Returns:
        ``Features`` with feats (N, D) float32 on CPU and labels (N,).
    """
    cache = _as_cache(cache)
    key = key or getattr(dataset, "key", None)
    if key is None and cache is not None:
        raise ValueError(f"{type(dataset).__name__} has no .key; pass key='...' to extract() to cache its features")
    own = getattr(dataset, "transform", None)
    spec = {"model": bundle.identity, "dataset": key, "seed": seed, "extra": extra,
            "transform": transform or transform_id(own if own is not None else bundle.preprocess)}
    desc = desc or f"features {key}"
    if (hit := _lookup(cache, spec, desc)) is not None:
        return hit
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate(bundle.preprocess), pin_memory=bundle.device.type == "cuda")
    chunks, labels = [], []
    with torch.inference_mode(), bundle.autocast():
        for x, y in progress(loader, desc=desc, total=len(loader)):
            chunks.append(_unit(bundle.encode_images(x.to(bundle.device, non_blocking=True), normalize=False)))
            labels.append(y)
    return _finish(cache, spec, chunks, labels, bundle.embed_dim)


def arrays_to_input(bundle: ClipBundle, x: Tensor) -> Tensor:
    """uint8 (B, H, W, 3) -> normalised model input (B, 3, S, S), float32 on ``x``'s device.

    Centre-crops non-square images to a square, resizes to ``bundle.image_size`` with antialiased
    bicubic interpolation only when the size differs (like ``Resize(S) + CenterCrop(S)``), then
    applies ``bundle.normalize_pixels``.
    """
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top:top + s, left:left + s]
    size = bundle.image_size
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    return bundle.normalize_pixels(x)


def extract_arrays(bundle: ClipBundle, images: np.ndarray | Tensor, labels, key: str, *, batch_size: int = 256,
                   cache: FeatureCache | bool | None = None, desc: str | None = None, seed: int | None = None,
                   extra: Any = None) -> Features:
    """Fast path for in-memory uint8 images (world pools, corrupted arrays): no PIL per image.

    Args:
        images: (N, H, W, 3) uint8, numpy or torch.
        labels: (N,) integer labels.
        key: dataset id for the cache key (the array shape is added to it).
        Other arguments as in ``extract``.
    """
    cache = _as_cache(cache)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8, got shape {tuple(images.shape)}")
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    spec = {"model": bundle.identity, "dataset": f"{key}:shape={tuple(images.shape)}", "seed": seed,
            "extra": extra, "transform": f"arrays:crop-square:bicubic-aa:{bundle.image_size}:mean={bundle.mean}:std={bundle.std}"}
    desc = desc or f"features {key}"
    if (hit := _lookup(cache, spec, desc)) is not None:
        return hit
    dev = bundle.device
    starts = range(0, len(images), batch_size)
    chunks = []
    with torch.inference_mode(), bundle.autocast():
        for i in progress(starts, desc=desc, total=len(starts)):
            batch = images[i:i + batch_size]
            batch = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
            chunks.append(_unit(bundle.encode_images(arrays_to_input(bundle, batch.to(dev, non_blocking=True)),
                                                     normalize=False)))
    return _finish(cache, spec, chunks, list(labels.split(batch_size)), bundle.embed_dim)
