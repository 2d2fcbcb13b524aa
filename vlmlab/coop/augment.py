"""CoOp's training augmentation and the image features both training modes see.

Train transform (Dassl ``random_resized_crop`` + ``random_flip``, CoOp configs after the 09.10.2021
change, ``coop.md`` §6): a crop of area fraction U(0.08, 1) and log-uniform aspect ratio in
[3/4, 4/3] taken from the *original* image (no resize first), resized to S x S (bicubic), then a
horizontal flip with probability 1/2, then CLIP's normalisation. The crop-parameter draw is
torchvision's ``RandomResizedCrop.get_params`` (10 attempts, then a centre crop clamped to the ratio
range), rewritten on a numpy generator so that view ``v`` of image ``i`` is a pure function of
``(seed, i, v)``. That is what makes the two training modes comparable:

    exact   epoch e encodes view v = e of every image in the batch (a fresh crop per epoch)
    cached  the features of views 0..V-1 are computed once and a view is sampled per step

With V >= epochs and ``view_sampling="cycle"`` (v = e mod V) the cached mode sees exactly the
features the exact mode computes (``tests/test_coop.py`` checks it). Test images use the model's
evaluation transform (resize shorter side + centre crop), i.e. ``vlmlab.features``.
"""
from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from vlmlab.features import FeatureCache, Features, extract, extract_arrays
from vlmlab.models.bundle import ClipBundle
from vlmlab.runtime import get_logger, progress

log = get_logger("vlmlab.coop")

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
AUG_ID = "coop-rrc(0.08-1,3/4-4/3,bicubic)+hflip:v1"


def crop_params(height: int, width: int, rng: np.random.Generator, scale=SCALE, ratio=RATIO) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` on ``rng``: (top, left, h, w) of the crop."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height                                         # fallback: whole image, ratio clamped
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    """The generator of view ``view`` of item ``index`` (independent of batch, order and mode)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), int(view)])


def _image(data, i: int) -> Tensor | Image.Image:
    if hasattr(data, "images"):                                       # world: uint8 (N, H, W, 3)
        return torch.from_numpy(np.ascontiguousarray(data.images[i])).permute(2, 0, 1).float().div_(255.0)
    if getattr(data, "transform", None) is not None:
        raise ValueError(f"{getattr(data, 'key', data)!r} has a transform; CoOp augments the raw images: "
                         f"pass dataset.with_transform(None)")
    return data[i][0]                                                 # PIL image


def augment_one(image: Tensor | Image.Image, size: int, rng: np.random.Generator, scale=SCALE) -> Tensor:
    """One CoOp training view: (3, H, W) float in [0, 1] or a PIL image -> (3, size, size) in [0, 1].

    ``scale``: the crop's area fraction range (CoOp: 0.08-1).
    """
    if isinstance(image, Image.Image):
        h, w = image.height, image.width
    else:
        h, w = image.shape[-2:]
    top, left, ch, cw = crop_params(h, w, rng, scale)
    flip = rng.random() < 0.5
    out = TF.resized_crop(image, top, left, ch, cw, [size, size], interpolation=InterpolationMode.BICUBIC,
                          antialias=True)
    if flip:
        out = TF.horizontal_flip(out)
    if isinstance(out, Image.Image):
        out = TF.to_dtype(TF.to_image(out), torch.float32, scale=True)
    return out.clamp_(0.0, 1.0)


def augmented_inputs(bundle: ClipBundle, data, indices: Sequence[int], views: Sequence[int], seed: int,
                     scale=SCALE, workers: int | None = None) -> Tensor:
    """Normalised model input of view ``views[b]`` of item ``indices[b]``: (B, 3, S, S).

    Image files are decoded and cropped by up to ``workers`` threads (default: min(8, CPU cores); PIL releases
    the GIL while it decodes and resizes; each view has its own generator, so the result does not depend on
    ``workers``); world arrays, a few small tensor operations each, are cropped in this thread."""
    pairs = [(int(i), int(v)) for i, v in zip(indices, views)]
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)

    def one(pair: tuple[int, int]) -> Tensor:
        return augment_one(_image(data, pair[0]), bundle.image_size, view_rng(seed, *pair), scale)

    if workers > 1 and len(pairs) > 1 and not hasattr(data, "images"):
        with ThreadPoolExecutor(min(workers, len(pairs))) as pool:
            xs = list(pool.map(one, pairs))
    else:
        xs = [one(pair) for pair in pairs]
    return bundle.normalize_pixels(torch.stack(xs))


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
