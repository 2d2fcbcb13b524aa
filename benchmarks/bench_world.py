"""Throughput of the embedded world on this machine: images rendered, corrupted and encoded per second.

    python benchmarks/bench_world.py [--n 500] [--corruptions gaussian_noise,glass_blur,zoom_blur] [--csv world.csv]

``corrupt`` rows time one process after a warm-up (the corruption's own speed). ``corrupt_pooled`` rows
time the corruptions the way notebook 01 calls them: a fresh call of ``corrupt_images`` with ``--workers``
forked workers for each corruption and each of ``--severities``, in a new process. ``warmed`` is the
default (``vlmlab.data.corruptions._warm`` runs each corruption once before forking, so the workers
inherit the imports and numba's compiled glass blur); ``unwarmed`` turns that off, as before db44033,
and every worker of every call imports and compiles on its own. Their ratio is the warm-up's gain.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch


def pooled_child(n: int, names: list[str], severities: list[int], workers: int, warm: bool) -> float:
    """Seconds to corrupt ``n`` world images with each of ``names`` at each of ``severities``, a pooled call each."""
    from vlmlab import world
    from vlmlab.data import corruptions
    if not warm:
        corruptions._warm = lambda name: None
    images = world.load("objects", n=n, cache=False).images
    t = time.perf_counter()
    for name in names:
        for severity in severities:
            corruptions.corrupt_images(images, name, severity, cache=False, workers=workers)
    return time.perf_counter() - t


def pooled(n: int, names: list[str], severities: list[int], workers: int, warm: bool) -> float:
    """:func:`pooled_child` in a new process (nothing imported or compiled yet): its seconds."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import bench_world; "
            f"print(bench_world.pooled_child({n}, {names!r}, {severities!r}, {workers}, {warm}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--corruptions", default="gaussian_noise,defocus_blur,glass_blur,zoom_blur,fog,jpeg_compression")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--workers", type=int, default=2, help="corrupt_pooled: forked workers per call (the notebooks': "
                                                          "all cores, at most 8)")
    p.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="corrupt_pooled: severities "
                                                                                       "(notebook 01's)")
    p.add_argument("--csv", default="", help="write stage, name, images_per_s here")
    a = p.parse_args(argv)
    os.environ.setdefault("VLMLAB_CACHE", tempfile.mkdtemp(prefix="vlmlab-bench-"))
    os.environ.setdefault("VLMLAB_PROGRESS", "0")
    torch.set_num_threads(a.threads)
    names = a.corruptions.split(",")
    from vlmlab import world
    from vlmlab.data.corruptions import corrupt_images
    from vlmlab.features import extract_arrays
    from vlmlab.models import load_clip

    t = time.perf_counter()
    ds = world.load("objects", n=a.n, cache=False)
    render = a.n / (time.perf_counter() - t)
    print(f"render   {render:9.0f} images/s  (objects, 64 px, one process)")
    rows = [{"stage": "render", "name": "objects", "images_per_s": render}]
    for name in names:
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
    for warm in (True, False):
        label = "warmed" if warm else "unwarmed"
        seconds = pooled(a.n, names, a.severities, a.workers, warm)
        rows.append({"stage": "corrupt_pooled", "name": label,
                     "images_per_s": a.n * len(names) * len(a.severities) / seconds})
        print(f"corrupt  {rows[-1]['images_per_s']:9.0f} images/s  ({label}, {len(names)} corruptions x "
              f"{len(a.severities)} severities, a pooled call each, {a.workers} workers, a new process)")
    if a.csv:
        pd.DataFrame(rows).assign(n=a.n, threads=a.threads).to_csv(a.csv, index=False)
    return rows


if __name__ == "__main__":
    main()
