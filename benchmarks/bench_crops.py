"""The CPU part of an exact-mode CoOp step on real files: decode, crop, flip a batch of 32, by thread count.

    python benchmarks/bench_crops.py --csv results/bench/bench_crops.csv
    python benchmarks/bench_crops.py --workers 1 8 --size 500 375 --image-size 224

The paper profile trains CoOp in the exact mode (CoOp's protocol): every step decodes its batch's image files
and takes a fresh random resized crop of each (``vlmlab.data.augment.augmented_inputs``, the same function
Tip-Adapter's support keys use). The images here are synthetic JPEGs of ImageNet's typical size (500 x 375,
quality 90, smooth noise so that they compress like photographs) in a temporary folder, read through an
``ImageDataset`` without transform, as the paper profile's are. Each row is the median of ``--reps`` batches
(other views each time, so nothing is reused) at ``workers`` decoding threads; ``speedup`` is against one
thread. No model is run: ``bundle`` is a stand-in with CLIP's normalisation at ``--image-size``.

On a 2-core CPU the threads can give at most 2x, and more threads than cores lose again; ``augmented_inputs``
uses min(8, cores) by default, 8 on the 16-core GPU machine this project is lent.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from vlmlab.data.augment import augmented_inputs
from vlmlab.data.base import ImageDataset
from vlmlab.models.bundle import ClipBundle

BATCH = 32


def stand_in(image_size: int) -> ClipBundle:
    """What ``augmented_inputs`` reads of a bundle, without a model: the input side and CLIP's pixel normalisation
    (``ClipBundle.normalize_pixels`` with OpenAI's mean and std)."""
    return ClipBundle(None, None, None, "stand-in", None, image_size, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD,
                      "stand-in")


def jpeg_tree(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> ImageDataset:
    """``n`` synthetic photographs-like JPEGs (``size`` = width, height) under ``root``."""
    rng = np.random.default_rng(seed)
    w, h = size
    samples = []
    for i in range(n):
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        noise = rng.normal(0, 8, (h, w, 3))
        arr = np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8)
        path = root / f"{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        samples.append((path, i % 10))
    return ImageDataset(samples, [str(c) for c in range(10)], "synthetic_jpeg", root=root)


def measure(data, bundle, workers: list[int], reps: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for k in workers:
        augmented_inputs(bundle, data, [i % n for i in range(BATCH)], [0] * BATCH, 0, workers=k)  # warm-up
        times = []
        for r in range(reps):
            idx = rng.choice(n, BATCH, replace=n < BATCH).tolist()
            t0 = time.perf_counter()
            augmented_inputs(bundle, data, idx, [r + 1] * BATCH, 0, workers=k)          # CoOp's crop scale
            times.append(time.perf_counter() - t0)
        rows.append({"workers": k, "ms_per_batch": 1e3 * statistics.median(times), "batch": BATCH, "reps": reps})
    out = pd.DataFrame(rows)
    one = out.loc[out["workers"] == min(workers), "ms_per_batch"].iloc[0]
    out["speedup"] = one / out["ms_per_batch"]
    return out


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--size", type=int, nargs=2, default=[500, 375], help="the files' width and height")
    ap.add_argument("--image-size", type=int, default=224, help="the model's input side")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--csv", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="vlmlab-crops-") as tmp:
        data = jpeg_tree(Path(tmp), args.images, tuple(args.size))
        out = measure(data, stand_in(args.image_size), sorted(set(args.workers)), args.reps, args.images)
    out["files"] = f"{args.size[0]}x{args.size[1]} JPEG"
    out["image_size"] = args.image_size
    print(out.to_string(index=False))
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.csv, index=False)
    return out


if __name__ == "__main__":
    main()
