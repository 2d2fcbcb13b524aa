"""CoOp's training augmentation and the image features both training modes see.

Train transform (Dassl ``random_resized_crop`` + ``random_flip``, CoOp configs after the 09.10.2021
change, ``coop.md`` §6): ``vlmlab.data.augment`` (a crop of area fraction U(0.08, 1) and aspect ratio
3/4-4/3 of the *original* image, bicubic to S x S, a flip with probability 1/2, CLIP's normalisation), drawn
so that view ``v`` of image ``i`` is a pure function of ``(seed, i, v)``. That is what makes the two training
modes comparable:

    exact   epoch e encodes view v = e of every image in the batch (a fresh crop per epoch)
    cached  the features of views 0..V-1 are computed once and a view is sampled per step

With V >= epochs and ``view_sampling="cycle"`` (v = e mod V) the cached mode sees exactly the
features the exact mode computes (``tests/test_coop.py`` checks it). Test images use the model's
evaluation transform (resize shorter side + centre crop), i.e. ``vlmlab.features``.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from vlmlab.data.augment import SCALE, augmented_inputs
from vlmlab.features import FeatureCache, Features, extract, extract_arrays
from vlmlab.models.bundle import ClipBundle
from vlmlab.runtime import get_logger, progress

log = get_logger("vlmlab.coop")

AUG_ID = "coop-rrc(0.08-1,3/4-4/3,bicubic)+hflip:v1"


@torch.no_grad()
def encode_augmented(bundle: ClipBundle, data, indices: Sequence[int], views: Sequence[int], seed: int,
                     scale=SCALE) -> Tensor:
    """Unit image features of the given (item, view) pairs: (B, D) float32 on the bundle's device."""
    x = augmented_inputs(bundle, data, indices, views, seed, scale).to(bundle.device)
    with bundle.autocast():
        return bundle.encode_images(x).float()


def _digest(indices: Tensor) -> str:
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def view_features(bundle: ClipBundle, data, indices: Tensor, n_views: int, seed: int,
                  cache: FeatureCache | None = None, batch_size: int = 256, scale=SCALE) -> Tensor:
    """Features of views 0..V-1 of every item in ``indices``, computed once (the cached mode).

    Args:
        bundle: the model. data: a world dataset or an ``ImageDataset`` without transform.
        indices: (N,) items of ``data``. n_views: V. seed: the view seed. scale: crop area range.
        cache: a ``FeatureCache`` (keyed by model, data, indices, V, seed and the augmentation id).
    Returns:
        (N, V, D) float32 unit features on CPU.
    """
    idx = torch.as_tensor(indices).long().cpu()
    spec = {"model": bundle.identity, "dataset": getattr(data, "key", None), "indices": _digest(idx),
            "n": len(idx), "views": int(n_views), "seed": int(seed),
            "transform": f"{AUG_ID}:{bundle.image_size}:scale={tuple(float(x) for x in scale)}"}
    if cache is not None and spec["dataset"] is not None and (hit := cache.get(spec)) is not None:
        return hit["feats"]
    pairs_i = idx.repeat_interleave(n_views)                             # item-major: (N*V,)
    pairs_v = torch.arange(n_views).repeat(len(idx))
    chunks = []
    starts = range(0, len(pairs_i), batch_size)
    for s in progress(starts, desc=f"CoOp views x{n_views}", total=len(starts)):
        chunks.append(encode_augmented(bundle, data, pairs_i[s:s + batch_size].tolist(),
                                       pairs_v[s:s + batch_size].tolist(), seed, scale).cpu())
    feats = (torch.cat(chunks) if chunks else torch.zeros(0, bundle.embed_dim)).reshape(len(idx), n_views, -1)
    if cache is not None and spec["dataset"] is not None:
        cache.put(spec, {"feats": feats})
    return feats


def eval_features(bundle: ClipBundle, data, cache: FeatureCache | None = None, batch_size: int = 256) -> Features:
    """Evaluation-transform features of a whole dataset (world arrays or files), under the cache keys
    notebooks 01 and 02 use, so the shared cache serves all three."""
    if hasattr(data, "images"):
        return extract_arrays(bundle, data.images, data.labels, data.key, cache=cache, batch_size=batch_size)
    return extract(bundle, data, cache=cache, batch_size=batch_size)
