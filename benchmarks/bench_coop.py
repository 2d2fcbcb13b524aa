"""CoOp's two training modes on the same shots and seeds: wall time and test accuracy.

    python benchmarks/bench_coop.py                                   # embedded model, world objects, 16 shots, CPU
    python benchmarks/bench_coop.py --epochs 50 --n-views 16 --crop-scale 0.5 1   # the embedded profile's settings
    python benchmarks/bench_coop.py --model RN50 --device cuda --n-test 200   # random-init RN50: speed only

``exact`` encodes CoOp's random-resized-crop + flip of every batch at every step; ``cached`` encodes
``--n-views`` views per image once (timed, included) and samples one per step. Both use the same
shots, context init, sample order and optimiser (``vlmlab.coop.train_coop``), so the accuracy
difference is the effect of reusing V views instead of fresh crops. Target: cached >= 10x faster,
accuracy within 1 point. ``--model`` is "embedded" (shipped weights) or an open_clip architecture
with random weights (nothing is downloaded; its accuracy means nothing).
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from vlmlab.coop import CoOpConfig, TrainSet, coop_logits, load_splits, parse_variant, train_coop
from vlmlab.coop.augment import eval_features, view_features
from vlmlab.data.fewshot import sample_few_shot
from vlmlab.metrics import accuracy
from vlmlab.models import load_clip


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_seed(bundle, split, test, args, seed: int) -> list[dict]:
    y = torch.as_tensor(split.train.labels).long()
    idx = sample_few_shot(y, args.shots, seed, split.n_classes)
    cfg = parse_variant(args.variant).config(CoOpConfig(n_views=args.n_views, crop_scale=tuple(args.crop_scale)))
    epochs = args.epochs or cfg.epochs_for(args.shots)
    rows = []
    for mode in ("cached", "exact"):
        _sync(bundle.device)
        t0 = time.perf_counter()
        views = (view_features(bundle, split.train, idx, args.n_views, seed, scale=cfg.crop_scale)
                 if mode == "cached" else None)
        t_views = time.perf_counter() - t0
        train = TrainSet(y[idx], view_feats=views, data=split.train, indices=idx, view_seed=seed)
        res = train_coop(bundle, split.classnames, train, cfg.replace(mode=mode), seed=seed, shots=args.shots,
                         epochs=epochs)
        _sync(bundle.device)
        rows.append({"mode": mode, "seed": seed, "epochs": epochs, "steps": res.steps, "views_s": t_views,
                     "train_s": res.seconds, "total_s": time.perf_counter() - t0,
                     "accuracy": accuracy(coop_logits(res.learner, test.feats), test.labels)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dataset", default="world:objects")
    ap.add_argument("--variant", default="M16_end")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=None, help="default: CoOp's epochs for --shots")
    ap.add_argument("--n-views", type=int, default=32)
    ap.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], help="CoOp: 0.08 1 (embedded profile: 0.5 1)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_clip(args.model, None, device=args.device)
    split = load_splits(args.dataset, n_train_per_class=max(32, args.shots), n_test=args.n_test)
    test = eval_features(bundle, split.test)
    table = pd.DataFrame([r for s in args.seeds for r in bench_seed(bundle, split, test, args, s)])
    wide = table.pivot(index="seed", columns="mode", values=["total_s", "train_s", "accuracy"])
    summary = {"model": args.model, "device": str(bundle.device), "dataset": args.dataset, "variant": args.variant,
               "shots": args.shots, "n_views": args.n_views, "crop_scale": args.crop_scale, "threads": args.threads,
               "epochs": int(table["epochs"].iloc[0]), "steps_per_run": int(table["steps"].iloc[0]),
               "speedup_total": float((wide["total_s"]["exact"] / wide["total_s"]["cached"]).mean()),
               "speedup_train_only": float((wide["train_s"]["exact"] / wide["train_s"]["cached"]).mean()),
               "ms_per_step_exact": float(1000 * table[table["mode"] == "exact"]["train_s"].sum()
                                          / table[table["mode"] == "exact"]["steps"].sum()),
               "ms_per_step_cached": float(1000 * table[table["mode"] == "cached"]["train_s"].sum()
                                           / table[table["mode"] == "cached"]["steps"].sum()),
               "accuracy_cached": float(wide["accuracy"]["cached"].mean()),
               "accuracy_exact": float(wide["accuracy"]["exact"].mean()),
               "accuracy_diff_cached_minus_exact": float((wide["accuracy"]["cached"] - wide["accuracy"]["exact"]).mean())}
    print(table.round(3).to_string(index=False))
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": table.to_dict(orient="records")}, f, indent=1)


if __name__ == "__main__":
    main()
