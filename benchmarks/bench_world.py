"""Throughput of the embedded world on this machine: images rendered, corrupted and encoded per second.

    python benchmarks/bench_world.py [--n 500] [--corruptions gaussian_noise,glass_blur,zoom_blur] [--csv world.csv]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import pandas as pd
import torch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--corruptions", default="gaussian_noise,defocus_blur,glass_blur,zoom_blur,fog,jpeg_compression")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--csv", default="", help="write stage, name, images_per_s here")
    a = p.parse_args(argv)
    os.environ.setdefault("VLMLAB_CACHE", tempfile.mkdtemp(prefix="vlmlab-bench-"))
    os.environ.setdefault("VLMLAB_PROGRESS", "0")
    torch.set_num_threads(a.threads)
    from vlmlab import world
    from vlmlab.data.corruptions import corrupt_images
    from vlmlab.features import extract_arrays
    from vlmlab.models import load_clip

    t = time.perf_counter()
    ds = world.load("objects", n=a.n, cache=False)
    render = a.n / (time.perf_counter() - t)
    print(f"render   {render:9.0f} images/s  (objects, 64 px, one process)")
    rows = [{"stage": "render", "name": "objects", "images_per_s": render}]
    for name in a.corruptions.split(","):
        corrupt_images(ds.images[:8], name, 5, cache=False, workers=1)  # warm-up (numba JIT for glass_blur)
        t = time.perf_counter()
        corrupt_images(ds.images, name, 5, cache=False, workers=1)
        rows.append({"stage": "corrupt", "name": name, "images_per_s": a.n / (time.perf_counter() - t)})
        print(f"corrupt  {rows[-1]['images_per_s']:9.0f} images/s  ({name}, severity 5, one process)")
    t = time.perf_counter()
    bundle = load_clip("embedded", device="cpu")
    print(f"load     {time.perf_counter() - t:9.2f} s         (load_clip('embedded'))")
    extract_arrays(bundle, ds.images[:64], ds.labels[:64], "warm", cache=None)
    t = time.perf_counter()
    extract_arrays(bundle, ds.images, ds.labels, "bench", cache=None)
    rows.append({"stage": "encode", "name": "embedded", "images_per_s": a.n / (time.perf_counter() - t)})
    print(f"encode   {rows[-1]['images_per_s']:9.0f} images/s  (embedded CLIP, {a.threads} threads)")
    if a.csv:
        pd.DataFrame(rows).assign(n=a.n, threads=a.threads).to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
