"""Notebook 05's fine-tuning variants in this process vs in worker processes: wall time, same tables.

    python benchmarks/bench_blind_finetune.py                      # 2 tasks, 50 steps, 1 vs 2 workers
    python benchmarks/bench_blind_finetune.py --tasks depth correspondence odd_one_out style --steps 100

Runs ``vlmlab.blind.experiment.finetune_variants`` on the shipped embedded VLM once per worker count
(``--workers``), with the notebook's variants (prompt 1/5/10, LoRA, projector, vision), and reports
seconds and the speed-up over the first count. Every variant is seeded on its own, so the tables
differ between worker counts only through floating-point summation order (a worker has fewer torch
threads than this process); the script reports the largest accuracy difference.
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch

from vlmlab.blind.experiment import finetune_variants, predictions, prepare_tasks
from vlmlab.blind.finetune import FinetuneConfig
from vlmlab.blind.vlm import load_vlm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["depth", "odd_one_out"])
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    ap.add_argument("--csv", default="", help="write workers, seconds, speedup here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    vlm = load_vlm()
    runs = prepare_tasks(vlm, args.tasks, args.n_train, args.n_test, seed=0)
    preds = {n: predictions(vlm, r.test, r.test_patches) for n, r in runs.items()}
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch)
    rows, tables = [], []
    for w in args.workers:
        t0 = time.perf_counter()
        tables.append(finetune_variants(vlm, runs, "embedded-vlm", preds, config=config, workers=w))
        rows.append({"workers": w, "seconds": round(time.perf_counter() - t0, 1)})
    for r in rows:
        r["speedup"] = round(rows[0]["seconds"] / r["seconds"], 2)
    first = tables[0][0].accuracy.to_numpy()
    diff = max(float(abs(t[0].accuracy.to_numpy() - first).max()) for t in tables)
    print(tables[0][0].to_string(index=False))
    if args.csv:
        pd.DataFrame(rows).assign(steps=args.steps, max_accuracy_difference=diff).to_csv(args.csv, index=False)
    print(json.dumps({"tasks": args.tasks, "steps": args.steps, "threads": args.threads, "runs": rows,
                      "max_accuracy_difference": diff}, indent=1))


if __name__ == "__main__":
    main()
