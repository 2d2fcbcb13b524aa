"""Pick notebook 04's learning rate and prompt init for the world on validation splits (never test).

    python benchmarks/sweep_visual_prompt.py                    # padding, the embedded profile's 11 datasets
    python benchmarks/sweep_visual_prompt.py --lrs 40 10 --out sweep.csv
    python benchmarks/sweep_visual_prompt.py --quick            # 3 datasets, lr 40 and 10, randn init (make bench)

The paper trains 1,000 epochs on whole training sets with SGD at lr 40 from a Gaussian prompt; the
embedded profile has 16 shots per class and 8 epochs, so those two constants are the ones the world
changes. Every (lr, init) runs the padding prompter on every dataset with the profile's other values
(pad 8, batch 32, warm-up 10, last epoch); the table prints mean validation accuracy per setting,
and the setting with the best mean is the one to put in ``params/embedded/04_visual_prompt_fid.yaml``.
Test accuracy is printed for the record, not for choosing.
"""
from __future__ import annotations

import argparse
import itertools

import pandas as pd
import torch

from vlmlab.metrics import accuracy
from vlmlab.models import load_clip
from vlmlab.visual_prompts.data import load_splits
from vlmlab.visual_prompts.train import VPConfig, clip_head, model_inputs, predict, train_prompt

DATASETS = ["world:objects", "world:colours", "world:textures", "world:counts", "world:positions",
            "world:backgrounds", "world:styles", "world:renditions", "world:thermal", "world:digits", "world:terrain"]


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--lrs", type=float, nargs="+", default=[40.0, 10.0, 4.0, 1.0])
    ap.add_argument("--inits", nargs="+", default=["randn", "zeros"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--quick", action="store_true", help="objects, digits, terrain; lr 40 and 10; randn init")
    args = ap.parse_args(argv)
    if args.quick:
        args.datasets, args.lrs, args.inits = ["world:objects", "world:digits", "world:terrain"], [40.0, 10.0], ["randn"]
    torch.set_num_threads(args.threads)
    bundle = load_clip("embedded")
    rows = []
    for spec in args.datasets:
        sp = load_splits(spec, shots=args.shots, n_val=4, n_test=200, seed=0)
        head = clip_head(bundle, sp.classnames, sp.template)
        train, val, test = (model_inputs(bundle, d) for d in (sp.train, sp.val, sp.test))
        zs_val, zs_test = accuracy(*predict(bundle, head, val)), accuracy(*predict(bundle, head, test))
        for lr, init in itertools.product(args.lrs, args.inits):
            cfg = VPConfig(method="padding", prompt_size=8, epochs=args.epochs, batch_size=32, lr=lr, warmup=10,
                           init=init, select="last")
            res = train_prompt(bundle, head, train, cfg, val=val, desc=f"{sp.name} lr {lr} {init}")
            rows.append({"dataset": sp.name, "lr": lr, "init": init, "val_acc": res.history[-1]["val_acc"],
                         "zero_shot_val": zs_val, "test_acc": accuracy(*predict(bundle, head, test, res.prompter)),
                         "zero_shot_test": zs_test})
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    summary = table.groupby(["lr", "init"])[["val_acc", "zero_shot_val", "test_acc", "zero_shot_test"]].mean()
    print(table.pivot_table(index="dataset", columns=["lr", "init"], values="val_acc").round(1).to_string())
    print("\nmean over datasets (choose on val_acc):")
    print(summary.sort_values("val_acc", ascending=False).round(2).to_string())
    return table


if __name__ == "__main__":
    main()
