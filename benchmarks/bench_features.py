"""Throughput of feature extraction: ``extract_arrays`` cold cache vs warm cache (and the PIL path).

    python benchmarks/bench_features.py                       # small random-init model, CPU, < 1 min
    python benchmarks/bench_features.py --model ViT-B-16 --n 2048 --batch-size 256 --device cuda
    python benchmarks/bench_features.py --csv features.csv    # also write the table (path, seconds, images/s)

``--model`` is an open_clip architecture (random init, nothing downloaded) or ``bench-small``,
a built-in small config (embed 128, ViT 4x128 on 64 px with patch 8, text 4x128).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlmlab.features import FeatureCache, extract, extract_arrays
from vlmlab.models.openclip import load_openclip, register_config
from vlmlab.runtime import resolve_device

SMALL = {"embed_dim": 128, "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "patch_size": 8},
         "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4}}


class _PIL(Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), 0


def _timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bench-small", help="open_clip architecture or 'bench-small'")
    ap.add_argument("--n", type=int, default=512, help="number of images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=96, help="side of the uint8 input images (resized to the model's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-pil", action="store_true", help="skip the PIL-per-image reference path")
    ap.add_argument("--csv", default="", help="write path, seconds, images_per_s here")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vlmlab-bench-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    if args.model == "bench-small":
        (tmp / "bench-small.json").write_text(json.dumps(SMALL))
        register_config(tmp / "bench-small.json")
    torch.manual_seed(0)
    bundle = load_openclip(args.model, None, device=resolve_device(args.device))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, args.image_size, args.image_size, 3), dtype=np.uint8)
    labels = np.zeros(args.n, dtype=np.int64)
    cache = FeatureCache(tmp / "features")
    kw = dict(batch_size=args.batch_size, cache=cache, key="bench")

    extract_arrays(bundle, images[: args.batch_size], labels[: args.batch_size], key="warmup", batch_size=args.batch_size)
    cold, t_cold = _timed(lambda: extract_arrays(bundle, images, labels, **kw))
    warm, t_warm = _timed(lambda: extract_arrays(bundle, images, labels, **kw))
    assert torch.equal(cold.feats, warm.feats)
    print(f"model={args.model} device={bundle.device} params={sum(p.numel() for p in bundle.model.parameters()) / 1e6:.1f}M "
          f"n={args.n} input={args.image_size}px -> {bundle.image_size}px batch={args.batch_size} "
          f"threads={torch.get_num_threads()}")
    print(f"extract_arrays cold cache: {t_cold:8.3f} s  {args.n / t_cold:10.1f} images/s")
    print(f"extract_arrays warm cache: {t_warm:8.3f} s  {args.n / t_warm:10.1f} images/s")
    print(f"warm / cold speed-up:      {t_cold / t_warm:8.1f}x")
    rows = [("cold", t_cold), ("warm", t_warm)]
    if not args.no_pil:
        _, t_pil = _timed(lambda: extract(bundle, _PIL(images), batch_size=args.batch_size, key="bench-pil"))
        print(f"extract (PIL per image):   {t_pil:8.3f} s  {args.n / t_pil:10.1f} images/s  "
              f"(fast path {t_pil / t_cold:.2f}x)")
        rows.append(("pil", t_pil))
    if args.csv:
        pd.DataFrame([{"path": k, "model": args.model, "n": args.n, "seconds": t, "images_per_s": args.n / t}
                      for k, t in rows]).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
