"""Train-time augmentation: a random resized crop of the raw image and a horizontal flip, one generator per view.

The transform of CoOp (Dassl ``random_resized_crop`` + ``random_flip``, ``coop.md`` §6) and of Tip-Adapter's cache
(``datasets/imagenet.py`` ``train_preprocess``), which are torchvision's ``RandomResizedCrop(S, scale, ratio
3/4-4/3, bicubic)`` and ``RandomHorizontalFlip``: a crop of area fraction U(scale) and log-uniform aspect ratio
in [3/4, 4/3] taken from the *original* image (no resize first), resized to S x S (bicubic), then a horizontal
flip with probability 1/2, then CLIP's normalisation. The crop-parameter draw is torchvision's
``RandomResizedCrop.get_params`` (10 attempts, then a centre crop clamped to the ratio range), rewritten on a
numpy generator so that view ``v`` of image ``i`` is a pure function of ``(seed, i, v)``
(``view_rng``): the same in any batch, order, thread or training mode.

Users: ``vlmlab.coop.augment`` (CoOp's exact and cached modes) and ``vlmlab.tta.base.ImageSource.crops``
(Tip-Adapter's support keys; TPT, ZERO and MTA's views under ``views_from="raw"``, bilinear).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from vlmlab.runtime import thread_map

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


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


def image_at(data, i: int) -> Tensor | Image.Image:
    """Item ``i`` of ``data`` before any transform: a world array as a (3, H, W) float tensor in [0, 1], a file
    as its PIL image."""
    if hasattr(data, "images"):                                       # world: uint8 (N, H, W, 3)
        return torch.from_numpy(np.ascontiguousarray(data.images[i])).permute(2, 0, 1).float().div_(255.0)
    if getattr(data, "transform", None) is not None:
        raise ValueError(f"{getattr(data, 'key', data)!r} has a transform; the augmentation crops the raw images: "
                         f"pass dataset.with_transform(None)")
    return data[i][0]                                                 # PIL image


def augment_one(image: Tensor | Image.Image, size: int, rng: np.random.Generator, scale=SCALE,
                interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> Tensor:
    """One training view: (3, H, W) float in [0, 1] or a PIL image -> (3, size, size) in [0, 1].

    ``scale``: the crop's area fraction range (CoOp: 0.08-1). ``interpolation``: the resize's (CoOp's and
    Tip-Adapter's bicubic; TPT's test-time views use ``RandomResizedCrop``'s default, bilinear).
    """
    if isinstance(image, Image.Image):
        h, w = image.height, image.width
    else:
        h, w = image.shape[-2:]
    top, left, ch, cw = crop_params(h, w, rng, scale)
    flip = rng.random() < 0.5
    out = TF.resized_crop(image, top, left, ch, cw, [size, size], interpolation=interpolation, antialias=True)
    if flip:
        out = TF.horizontal_flip(out)
    if isinstance(out, Image.Image):
        out = TF.to_dtype(TF.to_image(out), torch.float32, scale=True)
    return out.clamp_(0.0, 1.0)


def augmented_inputs(bundle, data, indices: Sequence[int], views: Sequence[int], seed: int,
                     scale=SCALE, workers: int | None = None,
                     interpolation: InterpolationMode = InterpolationMode.BICUBIC) -> Tensor:
    """Normalised model input of view ``views[b]`` of item ``indices[b]``: (B, 3, S, S); ``bundle``: what has an
    ``image_size`` (S) and ``normalize_pixels`` (a ``vlmlab.models.ClipBundle``). ``data``: world arrays
    (``.images``) or an ``ImageDataset`` without transform.

    Image files are decoded and cropped by up to ``workers`` threads (default: min(8, CPU cores); PIL releases
    the GIL while it decodes and resizes; each view has its own generator, so the result does not depend on
    ``workers``); world arrays, a few small tensor operations each, are cropped in this thread."""
    pairs = [(int(i), int(v)) for i, v in zip(indices, views)]
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)

    def one(pair: tuple[int, int]) -> Tensor:
        return augment_one(image_at(data, pair[0]), bundle.image_size, view_rng(seed, *pair), scale, interpolation)

    xs = thread_map(one, pairs, 1 if hasattr(data, "images") else workers)
    return bundle.normalize_pixels(torch.stack(xs))
