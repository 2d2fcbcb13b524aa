"""Milliseconds per image of every TTA method, image encoder included, on CPU and (if present) CUDA.

    python benchmarks/bench_tta.py                                  # embedded model, world objects, CPU (+ GPU)
    python benchmarks/bench_tta.py --model ViT-B-16 --n 128 --n-multiview 4 --devices cuda
    python benchmarks/bench_tta.py --methods no_adapt tda uniinfo --json out.json

Each method runs ``vlmlab.tta.measure_cost`` on a fresh stream without cached features, so the
numbers include every forward pass the method needs (64 views for TPT, ZERO and MTA; student,
teacher and the second pass for UniInfo). Few-shot set-up (fitting the probe, building
Tip-Adapter's cache) is not timed. ``--model`` is "embedded" (the shipped weights) or an open_clip
architecture with random weights (nothing is downloaded). Method settings come from notebook 02's
parameters (``--params``): the embedded profile's UniInfo adapts BatchNorm too (a full-tower backward).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import torch

from vlmlab import world
from vlmlab.models import load_clip
from vlmlab.params import load
from vlmlab.prompts import zero_shot_weights
from vlmlab.tta import METHODS, build, measure_cost
from vlmlab.tta.base import ArrayImages, Context, Stream, Support, encode_single


def _bundle(model: str, device: str):
    torch.manual_seed(0)
    return load_clip(model, None, device=device) if model != "embedded" else load_clip("embedded", device=device)


def bench(model: str, device: str, methods: list[str], n: int, n_multi: int, shots: int,
          overrides_by_method: dict[str, dict]) -> pd.DataFrame:
    bundle = _bundle(model, device)
    test = world.load("objects", "test", n=max(n, n_multi))
    train = world.load("objects", "train", n=shots * len(test.classnames))
    names = list(test.classnames)
    text = zero_shot_weights(bundle, names, "a photo of a {}.").cpu()
    src = ArrayImages(bundle, train.images)
    z = encode_single(bundle, src(torch.arange(len(train.labels))), normalize=False).cpu()
    f, norms = torch.nn.functional.normalize(z, dim=-1), z.norm(dim=-1)          # as the feature cache keeps them
    ctx = Context(bundle, names, text, support=Support(f, train.labels, src, f, train.labels, shots, norms=norms,
                                                       val_norms=norms))
    rows = []
    for name in methods:
        overrides = dict(overrides_by_method.get(name, {}))
        if name in ("linear_probe", "tip_adapter"):
            overrides.update(shots=shots, **({"search": False} if name == "tip_adapter" else {"C": 1.0}))
        method = build(name, **overrides)
        method.setup(ctx)
        k = n_multi if "views" in method.inputs else n
        stream = Stream(test.labels[:k], ArrayImages(bundle, test.images[:k]), name="bench")
        rows.append({"method": name, "model": model, "n_images": k, **measure_cost(method, stream)})
        print(f"{name:13s} {rows[-1]['ms_per_image']:10.2f} ms/image  {rows[-1]['peak_mem_mb']:9.1f} MB  "
              f"({k} images, {rows[-1]['device']})", flush=True)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--n", type=int, default=128, help="images per single-view / online method")
    ap.add_argument("--n-multiview", type=int, default=8, help="images per 64-view method")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json", default="", help="also write the table here")
    ap.add_argument("--csv", default="", help="also write the table here, as CSV")
    ap.add_argument("--params", default="auto", help="method settings of notebook 02's profile: embedded | paper | "
                    "none (the papers' defaults); auto = embedded for the embedded model, else paper")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = args.params if args.params != "auto" else ("embedded" if args.model == "embedded" else "paper")
    overrides = {}
    if profile != "none":
        P = load("02_uniinfo_tta", profile)
        overrides = {name: dict(P[name]) for name in METHODS}
    table = pd.concat([bench(args.model, d, args.methods, args.n, args.n_multiview, args.shots, overrides)
                       for d in args.devices])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table.to_dict(orient="records"), fh, indent=1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
