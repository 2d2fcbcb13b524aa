"""CoOp's two training modes on the same shots and seeds: wall time and test accuracy.

    python benchmarks/bench_coop.py                                   # embedded model, world objects, 16 shots, CPU
    python benchmarks/bench_coop.py --n-views 16 --crop-scale 0.5 1 --precision bf16   # the embedded profile's
    python benchmarks/bench_coop.py --model RN50 --device cuda --n-test 200   # random-init RN50: speed only
    python benchmarks/bench_coop.py --n-views 16 --crop-scale 0.5 1 --batched --shots 1 2 4 8 16
                                                          # + batched vs sequential cached on the same 15 runs

``exact`` encodes CoOp's random-resized-crop + flip of every batch at every step; ``cached`` encodes
``--n-views`` views per image once (timed, included) and samples one per step. Both use the same
shots, context init, sample order and optimiser (``vlmlab.coop.train_coop``), so the accuracy
difference is the effect of reusing V views instead of fresh crops. Target: cached >= 10x faster,
accuracy within 1 point. ``--model`` is "embedded" (shipped weights) or an open_clip architecture
with random weights (nothing is downloaded; its accuracy means nothing).

``--batched`` also trains all the cached runs (every ``--shots`` x ``--seeds``, the same views) as one
batched group (``vlmlab.coop.train_coop_batched``, notebook 03's grouping of one variant) and reports
its wall time against the sequential cached runs and the accuracy difference (float rounding only).
``--no-exact`` skips the exact mode; ``--quick`` = 10 epochs, 1 seed, 200 test images. ``--csv``
writes the per-run table (mode ``batched`` rows carry the group's time shared by steps).
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from vlmlab.coop import CoOpConfig, TrainSet, coop_logits, load_splits, parse_variant, train_coop, train_coop_batched
from vlmlab.coop.augment import eval_features, view_features
from vlmlab.data.fewshot import sample_few_shot
from vlmlab.metrics import accuracy
from vlmlab.models import load_clip
from vlmlab.runtime import PRECISIONS, effective_precision


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _cfg(args) -> CoOpConfig:
    return parse_variant(args.variant).config(CoOpConfig(n_views=args.n_views, crop_scale=tuple(args.crop_scale)))


def bench_seed(bundle, split, test, args, shots: int, seed: int, trains: dict) -> list[dict]:
    """Cached (and exact) runs of one (shots, seed); the cached TrainSet goes into ``trains``."""
    y = torch.as_tensor(split.train.labels).long()
    idx = sample_few_shot(y, shots, seed, split.n_classes)
    cfg = _cfg(args)
    epochs = args.epochs or cfg.epochs_for(shots)
    rows = []
    for mode in ("cached",) if args.no_exact else ("cached", "exact"):
        _sync(bundle.device)
        t0 = time.perf_counter()
        views = (view_features(bundle, split.train, idx, args.n_views, seed, scale=cfg.crop_scale)
                 if mode == "cached" else None)
        t_views = time.perf_counter() - t0
        train = TrainSet(y[idx], view_feats=views, data=split.train, indices=idx, view_seed=seed)
        res = train_coop(bundle, split.classnames, train, cfg.replace(mode=mode), seed=seed, shots=shots,
                         epochs=epochs)
        _sync(bundle.device)
        if mode == "cached":
            trains[(shots, seed)] = (train, epochs, t_views)
        rows.append({"mode": mode, "shots": shots, "seed": seed, "epochs": epochs, "steps": res.steps, "views_s": t_views,
                     "train_s": res.seconds, "total_s": time.perf_counter() - t0,
                     "accuracy": accuracy(coop_logits(res.learner, test.feats), test.labels)})
    return rows


def bench_batched(bundle, split, test, args, trains: dict) -> list[dict]:
    """All cached runs of ``trains`` as one batched group: rows with the group's wall time shared by steps."""
    keys = sorted(trains)
    _sync(bundle.device)
    t0 = time.perf_counter()
    res = train_coop_batched(bundle, split.classnames, [trains[k][0] for k in keys], _cfg(args), [k[1] for k in keys],
                             [k[0] for k in keys], [trains[k][1] for k in keys])
    _sync(bundle.device)
    wall = time.perf_counter() - t0
    return [{"mode": "batched", "shots": k[0], "seed": k[1], "epochs": trains[k][1], "steps": r.steps,
             "views_s": trains[k][2], "train_s": r.seconds, "total_s": trains[k][2] + r.seconds, "group_s": wall,
             "accuracy": accuracy(coop_logits(r.learner, test.feats), test.labels)} for k, r in zip(keys, res)]


def _summary(table: pd.DataFrame, args, bundle) -> dict:
    """Speed-ups (mean over runs of exact / cached; sum of sequential / batched wall) and accuracies."""
    by = {m: t.set_index(["shots", "seed"]).sort_index() for m, t in table.groupby("mode")}
    c = by["cached"]
    out = {"model": args.model, "device": str(bundle.device), "dataset": args.dataset, "variant": args.variant,
           "shots": args.shots, "seeds": args.seeds, "n_views": args.n_views, "crop_scale": args.crop_scale,
           "threads": args.threads, "precision": effective_precision(bundle.device, bundle.precision),
           "epochs": sorted(set(table["epochs"].tolist())), "runs": len(c),
           "steps_cached": int(c["steps"].sum()), "accuracy_cached": float(c["accuracy"].mean()),
           "ms_per_step_cached": float(1000 * c["train_s"].sum() / c["steps"].sum())}
    if "exact" in by:
        e = by["exact"]
        out.update({"speedup_total": float((e["total_s"] / c["total_s"]).mean()),
                    "speedup_train_only": float((e["train_s"] / c["train_s"]).mean()),
                    "ms_per_step_exact": float(1000 * e["train_s"].sum() / e["steps"].sum()),
                    "accuracy_exact": float(e["accuracy"].mean()),
                    "accuracy_diff_cached_minus_exact": float((c["accuracy"] - e["accuracy"]).mean())})
    if "batched" in by:
        b = by["batched"]
        out.update({"sequential_train_s": float(c["train_s"].sum()), "batched_train_s": float(b["group_s"].iloc[0]),
                    "speedup_batched_vs_sequential": float(c["train_s"].sum() / b["group_s"].iloc[0]),
                    "accuracy_batched": float(b["accuracy"].mean()),
                    "accuracy_diff_batched_minus_sequential": float((b["accuracy"] - c["accuracy"]).mean()),
                    "max_abs_accuracy_diff_batched": float((b["accuracy"] - c["accuracy"]).abs().max())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dataset", default="world:objects")
    ap.add_argument("--variant", default="M16_end")
    ap.add_argument("--shots", type=int, nargs="+", default=[16])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=None, help="default: CoOp's epochs for --shots")
    ap.add_argument("--n-views", type=int, default=32)
    ap.add_argument("--crop-scale", type=float, nargs=2, default=[0.08, 1.0], help="CoOp: 0.08 1 (embedded profile: 0.5 1)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS),
                    help="the bundle's precision (notebook 03's embedded profile: bf16, which autocasts on the CPU)")
    ap.add_argument("--json", default="")
    ap.add_argument("--csv", default="", help="write the per-run table here")
    ap.add_argument("--batched", action="store_true", help="also train the cached runs as one batched group")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact mode")
    ap.add_argument("--quick", action="store_true", help="10 epochs, the first seed, 200 test images")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.seeds, args.n_test = args.epochs or 10, args.seeds[:1], min(args.n_test, 200)
    torch.set_num_threads(args.threads)
    bundle = load_clip(args.model, None, device=args.device, precision=args.precision)
    split = load_splits(args.dataset, n_train_per_class=max(32, *args.shots), n_test=args.n_test)
    test = eval_features(bundle, split.test)
    trains: dict = {}
    rows = [r for k in args.shots for s in args.seeds for r in bench_seed(bundle, split, test, args, k, s, trains)]
    if args.batched:
        rows += bench_batched(bundle, split, test, args, trains)
    table = pd.DataFrame(rows)
    summary = _summary(table, args, bundle)
    print(table.round(3).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": table.to_dict(orient="records")}, f, indent=1)


if __name__ == "__main__":
    main()
