"""AugMix views (Hendrycks et al., ICLR 2020, Alg. 1) as TPT and TDA draw them at test time.

One view of a raw image x (TPT's ``data/datautils.py augmix``, the same function in TDA's ``datasets/utils.py``):

    x0  = flip(RandomResizedCrop(S)(x))           scale 0.08-1, ratio 3/4-4/3, bilinear; flip with p = 1/2
    w   ~ Dirichlet(1, 1, 1),  m ~ Beta(1, 1)
    x_i = op_{i,d} o ... o op_{i,1}(x0),           i = 1..3, depth d ~ U{1, 2, 3}, each op uniform from OPS
    view = m x0 + (1 - m) sum_i w_i x_i            (in pixel space; the references mix after CLIP's
                                                    normalisation, which is affine, and the weights sum to 1)

``OPS`` are AugMix's nine operations that do not overlap ImageNet-C (autocontrast, equalize, posterize, rotate,
solarize, shear x/y, translate x/y) at ``severity`` 1, the references' setting: each op's level is drawn from
U(0.1, severity) and scaled to its maximum / 10 (so at severity 1: rotations of 0-2 degrees, shears up to 0.03,
translations up to S/30 pixels, posterize to 4 bits, solarize above 231-253). The references fix the image
side at 224 (``augmix_ops.IMAGE_SIZE``) for the affine ops' output size and translation range; here it is the
crop size S, which is 224 in the paper profile.

Every draw comes from ``vlmlab.data.augment.view_rng(seed, item, view)`` (the references use the global numpy
and torch generators), so view ``v`` of item ``i`` is the same in any batch or order.
Checked against azshue/TPT 63ecbac and kdiAAA/TDA e697fb0 (``datasets/augmix_ops.py``, ``datasets/utils.py``).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import InterpolationMode

from vlmlab.data.augment import SCALE, crop_params, image_at, view_rng
from vlmlab.runtime import thread_map


def _level(rng: np.random.Generator, severity: float) -> float:
    return float(rng.uniform(0.1, severity))


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.uniform() > 0.5 else value


def autocontrast(img: Image.Image, rng, severity) -> Image.Image:
    return ImageOps.autocontrast(img)


def equalize(img: Image.Image, rng, severity) -> Image.Image:
    return ImageOps.equalize(img)


def posterize(img: Image.Image, rng, severity) -> Image.Image:
    return ImageOps.posterize(img, 4 - int(_level(rng, severity) * 4 / 10))


def rotate(img: Image.Image, rng, severity) -> Image.Image:
    degrees = int(_level(rng, severity) * 30 / 10)
    return img.rotate(_signed(degrees, rng), resample=Image.BILINEAR)


def solarize(img: Image.Image, rng, severity) -> Image.Image:
    return ImageOps.solarize(img, 256 - int(_level(rng, severity) * 256 / 10))


def _affine(img: Image.Image, coeffs: tuple) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR)


def shear_x(img: Image.Image, rng, severity) -> Image.Image:
    return _affine(img, (1, _signed(_level(rng, severity) * 0.3 / 10, rng), 0, 0, 1, 0))


def shear_y(img: Image.Image, rng, severity) -> Image.Image:
    return _affine(img, (1, 0, 0, _signed(_level(rng, severity) * 0.3 / 10, rng), 1, 0))


def translate_x(img: Image.Image, rng, severity) -> Image.Image:
    return _affine(img, (1, 0, _signed(int(_level(rng, severity) * img.width / 3 / 10), rng), 0, 1, 0))


def translate_y(img: Image.Image, rng, severity) -> Image.Image:
    return _affine(img, (1, 0, 0, 0, 1, _signed(int(_level(rng, severity) * img.height / 3 / 10), rng)))


OPS = (autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y, translate_x, translate_y)


def _pixels(img: Image.Image) -> Tensor:
    return TF.to_dtype(TF.to_image(img), torch.float32, scale=True)                # (3, S, S) in [0, 1]


def mix(x0: Tensor, chains: Sequence[Tensor], w: Sequence[float], m: float) -> Tensor:
    """m x0 + (1 - m) sum_i w_i chains[i]: AugMix's combination (Alg. 1, lines 8-10)."""
    out = torch.zeros_like(x0)
    for wi, xi in zip(w, chains):
        out += float(wi) * xi
    return float(m) * x0 + (1.0 - float(m)) * out


def augmix_one(image: Image.Image, size: int, rng: np.random.Generator, severity: float = 1.0,
               width: int = 3, scale=SCALE) -> Tensor:
    """One AugMix view of a PIL image: (3, size, size) in [0, 1]."""
    top, left, h, w = crop_params(image.height, image.width, rng, scale)
    x0 = TF.resized_crop(image, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR,
                         antialias=True)
    if rng.random() < 0.5:
        x0 = TF.horizontal_flip(x0)
    weights = np.float32(rng.dirichlet([1.0] * width))
    m = np.float32(rng.beta(1.0, 1.0))
    chains = []
    for _ in range(width):
        x = x0
        for _ in range(int(rng.integers(1, 4))):
            x = OPS[int(rng.integers(len(OPS)))](x, rng, severity)
        chains.append(_pixels(x))
    return mix(_pixels(x0), chains, weights, m).clamp_(0.0, 1.0)


def raw_image(data, i: int) -> Image.Image:
    """Item ``i`` of ``data`` before any transform, as an RGB PIL image: a world array (uint8 (N, H, W, 3))
    as it is, a file as ``vlmlab.data.augment.image_at`` decodes it (which refuses a dataset with a transform)."""
    if hasattr(data, "images"):
        return Image.fromarray(np.ascontiguousarray(data.images[i]))
    return image_at(data, i).convert("RGB")


def augmix_inputs(bundle, data, indices: Sequence[int], views: Sequence[int], seed: int, severity: float = 1.0,
                  workers: int | None = None) -> Tensor:
    """Normalised model input of AugMix view ``views[b]`` of item ``indices[b]``: (B, 3, S, S).

    ``bundle``: what has ``image_size`` (S) and ``normalize_pixels``; ``data``: world arrays (``.images``) or an
    ``ImageDataset`` without transform. Views are made by up to ``workers`` threads (PIL releases the GIL); each
    has its own generator, so the result does not depend on ``workers``."""
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)

    def one(pair: tuple[int, int]) -> Tensor:
        i, v = pair
        return augmix_one(raw_image(data, i), bundle.image_size, view_rng(seed, i, v), severity)

    xs = thread_map(one, [(int(i), int(v)) for i, v in zip(indices, views)], workers)
    return bundle.normalize_pixels(torch.stack(xs))
