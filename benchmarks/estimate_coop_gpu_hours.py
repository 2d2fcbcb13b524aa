"""GPU hours of notebook 03's paper grid, estimated from FLOP counts.

Measured since (``bench_coop_paper_grid.py`` on one H200, 2026-12-04; docs/gpu/): 127-138 GPU-h exact, 27-30
cached and batched, 14-40x this estimate's. A CoOp step is bound by operator dispatch on a GPU, not by its
FLOPs, so the counts below say how much arithmetic the text path saves, not how long the grid takes.

    python benchmarks/estimate_coop_gpu_hours.py                 # the table for docs/sweeps.md
    python benchmarks/estimate_coop_gpu_hours.py --tflops 100 300 --csv /tmp/coop_gpu_hours.csv

The paper grid: CoOp's 11 datasets (class counts below), shots 1/2/4/8/16 with CoOp's epochs (ImageNet 50
for every K), batch 32, 3 seeds, the notebook's 8 variants (M16 end / middle, UC / CSC at every K; M4 end,
M8 end, M4 middle and M4 "a photo of a" at 16 shots), open_clip RN50: a 12-layer text transformer of width 512 (MLP 2048),
image tower 4.1 GFLOP per 224-px forward.

Text-tower cost per step, multiply-accumulates of the linear layers (12 W^2 per position per layer:
q/k/v 3 W^2, output W^2, MLP 8 W^2; attention scores are < 1 % at these lengths), forward + backward
to the context only (the towers are frozen, so backward costs about one forward), 2 FLOP per MAC:

    official   CoOp's TextEncoder: every class row runs all 77 positions through all 12 layers
    ours       ``vlmlab.coop.text_batch`` (every run, batched or not): sequences cut after the EOS; the
               positions shared by a run's classes (SOS + the context before the name; SOS alone for
               CSC) once per run; the last layer at the EOS only (plus the keys/values it reads)

Image cost: the exact mode (the paper profile's, CoOp's) encodes the batch's 32 fresh crops every step;
the cached mode encodes V = 32 views of every shot once. ``hours = FLOP / effective rate``; the rate
range (default 100-300 TFLOP/s, one A100/H100 in fp16 at 10-30 % of peak) is the uncertainty. Batching
runs (cached mode) does not change the FLOPs: on a GPU it fills the device for small-C datasets, which
this count cannot show (measured: 2.5x fewer GPU-hours than one run at a time).
"""
from __future__ import annotations

import argparse

import pandas as pd

CLASSES = {"ImageNet": 1000, "Caltech101": 100, "OxfordPets": 37, "StanfordCars": 196, "Flowers102": 102,
           "Food101": 101, "FGVCAircraft": 100, "SUN397": 397, "DTD": 47, "EuroSAT": 10, "UCF101": 101}
EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
SHOTS = [1, 2, 4, 8, 16]
# name, M, position, csc, shots it runs at
VARIANTS = [("M16_end", 16, "end", False, SHOTS), ("M16_middle", 16, "middle", False, SHOTS),
            ("M16_end_csc", 16, "end", True, SHOTS), ("M16_middle_csc", 16, "middle", True, SHOTS),
            ("M4_end@16", 4, "end", False, [16]), ("M8_end@16", 8, "end", False, [16]),
            ("M4_middle@16", 4, "middle", False, [16]), ("M4_end_photo@16", 4, "end", False, [16])]
WIDTH, LAYERS, CONTEXT, NAME_TOKENS = 512, 12, 77, 3      # RN50 text tower; a class name of ~3 BPE tokens
IMAGE_GFLOP, BATCH, VIEWS = 4.1, 32, 32


def text_macs_per_step(c: int, m: int, position: str, csc: bool, official: bool) -> float:
    """Forward multiply-accumulates of the text tower for one step of one run (C class prompts)."""
    pos_layer = 12 * WIDTH ** 2
    if official:
        return c * CONTEXT * LAYERS * pos_layer
    length = 1 + m + NAME_TOKENS + 2                                          # SOS, context, name, '.', EOS
    shared = 1 if csc else 1 + (m if position == "end" else m // 2)
    own = length - shared                                                     # positions per class row
    per_row = own * (LAYERS - 1) * pos_layer + own * 2 * WIDTH ** 2 + 10 * WIDTH ** 2  # last: K/V + EOS row
    return shared * LAYERS * pos_layer + c * per_row


def grid(tflops: tuple[float, float]) -> pd.DataFrame:
    rows = []
    for ds, c in CLASSES.items():
        for name, m, position, csc, shots in VARIANTS:
            for k in shots:
                epochs = 50 if ds == "ImageNet" else EPOCHS[k]
                steps = 3 * epochs * max(1, (c * k) // BATCH)                    # 3 seeds
                text = {o: 2 * 2 * steps * text_macs_per_step(c, m, position, csc, o) for o in (True, False)}
                rows.append({"dataset": ds, "variant": name, "shots": k, "steps": steps,
                             "text_official_pflop": text[True] / 1e15, "text_ours_pflop": text[False] / 1e15,
                             "images_exact_pflop": steps * BATCH * IMAGE_GFLOP / 1e6,
                             "images_cached_pflop": 3 * c * k * VIEWS * IMAGE_GFLOP / 1e6})
    return pd.DataFrame(rows)


def summary(t: pd.DataFrame, tflops: tuple[float, float]) -> pd.DataFrame:
    total = {
        "CoOp's code (77 positions per class, exact mode)": t.text_official_pflop.sum() + t.images_exact_pflop.sum(),
        "vlmlab exact mode (the paper profile), one run at a time": t.text_ours_pflop.sum() + t.images_exact_pflop.sum(),
        "vlmlab cached mode, batched (V = 32 views once)": t.text_ours_pflop.sum() + t.images_cached_pflop.sum(),
    }
    lo, hi = tflops
    return pd.DataFrame([{"setting": k, "EFLOP": v / 1e3, "GPU-h": f"{v * 1e15 / (hi * 1e12) / 3600:.1f}-"
                          f"{v * 1e15 / (lo * 1e12) / 3600:.1f}"} for k, v in total.items()])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflops", type=float, nargs=2, default=[100.0, 300.0], help="effective TFLOP/s range")
    ap.add_argument("--csv", default="", help="write the per-(dataset, variant, shots) table here")
    args = ap.parse_args(argv)
    t = grid(tuple(args.tflops))
    if args.csv:
        t.to_csv(args.csv, index=False)
    by = t.groupby("variant", sort=False)[["text_official_pflop", "text_ours_pflop"]].sum()
    print((by.assign(ratio=by.text_official_pflop / by.text_ours_pflop)).round(1).to_markdown())
    print()
    print(summary(t, tuple(args.tflops)).round(2).to_markdown(index=False))


if __name__ == "__main__":
    main()
