"""GPU hours of notebook 03's paper grid, from step times measured on the device (issue 24).

    python benchmarks/bench_coop_paper_grid.py --device cuda --csv steps.csv --json grid.json   # on a GPU (~3 min)
    python benchmarks/bench_coop_paper_grid.py --device cpu --quick                              # a smoke test only

The paper grid is ``estimate_coop_gpu_hours``'s: CoOp's 11 datasets, shots 1/2/4/8/16 with CoOp's epochs
(ImageNet 50 at every K), batch 32, 3 seeds, the notebook's 8 variants, open_clip RN50 at the paper
profile's precision (fp16 autocast). It is costed three ways:

    exact, one run at a time      the paper profile (CoOp's protocol: fresh crops every step)
    cached, one run at a time     V = 32 views of every shot encoded once, then one run after another
    cached, batched               the notebook's groups (``vlmlab.coop.jobs.batch_jobs``: a dataset's runs of
                                  one prompt design, in job order, at most ``MAX_ROWS`` prompts a step),
                                  trained by ``train_coop_batched``; a run leaves its group when done.
                                  These are ``stack_runs: dataset``'s groups: the notebook's default,
                                  "datasets", stacks a design's runs of every dataset into fewer, larger
                                  steps, which this script does not cost (its step times are per C)

Measured: seconds per optimiser step of random-initialised RN50 with C classes, through the real
trainers (``train_coop`` and ``train_coop_batched``), as the difference of an S2-step and an S1-step
run after a warm-up (setup cancels), for A = 1, 3 and the largest group A_max(C) runs stacked; and
the image tower's throughput on the cached mode's augmented views. Summed over the grid's schedule:

    sequential hours = sum over runs of steps_r * t_mode(C, variant)
    batched hours    = sum over groups of sum over batched steps s of t_batch(C, variant, A(s))

where A(s) is the number of the group's runs still training at step s, and t_batch is linear in A
between the measured A. C between measured class counts is interpolated linearly. Not counted:
JPEG decoding of the real files (the exact mode's loader), evaluation, the linear probe and zero-shot.
Step counts follow ``vlmlab.coop.train.run_plan`` (K * C // 32 steps an epoch, 1 when K * C < 32).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_coop import _sync  # noqa: E402  (CUDA synchronisation around timed parts)
from estimate_coop_gpu_hours import CLASSES, EPOCHS, SHOTS  # noqa: E402  (the grid, one definition)

from vlmlab.coop.jobs import MAX_ROWS  # noqa: E402

SEEDS, BATCH, VIEWS = (1, 2, 3), 32, 32
IMAGENET_EPOCHS = 50
# the notebook's variants (notebooks/src/03_coop_shots.py): name, the shots it runs at
GRID_VARIANTS = [("M16_end", SHOTS), ("M16_middle", SHOTS), ("M16_end_csc", SHOTS), ("M16_middle_csc", SHOTS),
                 ("M4_end", [16]), ("M8_end", [16]), ("M4_middle", [16]), ("M4_end_photo", [16])]


# ---- the grid's schedule (pure; tests/test_bench_coop_paper_grid.py) -------------------------------------

def run_steps(c: int, shots: int, epochs: int, batch: int = BATCH) -> int:
    """Optimiser steps of one run: ``run_plan``'s steps an epoch (drop_last iff K*C >= batch) x epochs."""
    n = shots * c
    return epochs * (n // batch if n >= batch else 1)


def epochs_of(dataset: str, shots: int) -> int:
    return IMAGENET_EPOCHS if dataset == "ImageNet" else EPOCHS[shots]


def group_size(c: int, max_rows: int = MAX_ROWS) -> int:
    """Runs a batched step holds at most: ``batch_jobs``' max(1, max_rows // C)."""
    return max(1, max_rows // c)


def grid_groups(classes: dict[str, int] = CLASSES, variants=GRID_VARIANTS, seeds=SEEDS,
                max_rows: int = MAX_ROWS) -> list[dict]:
    """The notebook's batched units under ``stack_runs: dataset``: per dataset and variant, its runs in job
    order (seed, then shots; as ``run_sweep`` lists them) cut into chunks of ``group_size(C)`` runs. Each
    unit: dataset, C, variant, steps (one entry per run)."""
    out = []
    for ds, c in classes.items():
        for name, shots in variants:
            steps = [run_steps(c, k, epochs_of(ds, k)) for _ in seeds for k in shots]
            size = group_size(c, max_rows)
            out += [{"dataset": ds, "C": c, "variant": name, "steps": steps[s:s + size]}
                    for s in range(0, len(steps), size)]
    return out


def active_profile(steps: list[int]) -> list[tuple[int, int]]:
    """(number of batched steps, runs active during them) of one group: all runs until the shortest is
    done, then one fewer, and so on. Sums to max(steps) steps."""
    out, prev = [], 0
    left = len(steps)
    for t in sorted(steps):
        if t > prev:
            out.append((t - prev, left))
            prev = t
        left -= 1
    return out


def interp(x: float, xs, ys) -> float:
    """Piecewise-linear ys(x) through the measured points (sorted by x); constant beyond the ends."""
    order = np.argsort(xs)
    return float(np.interp(x, np.asarray(xs, float)[order], np.asarray(ys, float)[order]))


def step_time(table: pd.DataFrame, c: int, variant: str, mode: str, runs: int = 1) -> float:
    """Seconds of one step with ``runs`` stacked (batched) at C classes: linear in runs, then in C."""
    rows = table[(table.variant == variant) & (table["mode"] == mode)]
    if rows.empty:
        raise KeyError(f"no measured step of {variant} in mode {mode}")
    measured = sorted(rows.C.unique())
    below, above = [x for x in measured if x <= c], [x for x in measured if x >= c]
    near = sorted({below[-1] if below else above[0], above[0] if above else below[-1]})   # the C it reads
    per_c = []
    for cc in near:
        g = rows[rows.C == cc]
        if mode == "batched" and runs > g.runs.max():
            raise ValueError(f"{variant} at C={cc}: {runs} runs stacked, measured up to {g.runs.max()} only")
        per_c.append((cc, interp(runs, g.runs, g.s_per_step) if mode == "batched" else float(g.s_per_step.mean())))
    cs, ts = zip(*per_c)
    return interp(c, cs, ts)


def grid_hours(table: pd.DataFrame, images_per_s: float | None = None, classes: dict[str, int] = CLASSES,
               variants=GRID_VARIANTS, seeds=SEEDS, max_rows: int = MAX_ROWS) -> pd.DataFrame:
    """Per dataset: hours of the exact, cached sequential and cached batched grid (module docstring).

    ``table``: measured steps (columns variant, mode in {exact, cached, batched}, C, runs, s_per_step); the
    batched rows need runs = 1 too (or the cached rows stand in for A = 1). ``images_per_s``: the image
    tower on the cached mode's views (V x K x C per seed and K, shared by the variants), None = left out.
    """
    t = table
    if not ((t["mode"] == "batched") & (t.runs == 1)).any():
        one = t[t["mode"] == "cached"].assign(mode="batched", runs=1)
        t = pd.concat([t, one], ignore_index=True)
    rows = []
    for ds, c in classes.items():
        seq = {"exact": 0.0, "cached": 0.0}
        for name, shots in variants:
            n = sum(run_steps(c, k, epochs_of(ds, k)) for k in shots) * len(seeds)
            for mode in seq:
                seq[mode] += n * step_time(t, c, name, mode)
        batched = sum(n * step_time(t, g["C"], g["variant"], "batched", a)
                      for g in grid_groups({ds: c}, variants, seeds, max_rows) for n, a in active_profile(g["steps"]))
        views = len(seeds) * sum(VIEWS * k * c for k in SHOTS) / images_per_s if images_per_s else 0.0
        rows.append({"dataset": ds, "C": c, "exact_h": seq["exact"] / 3600, "cached_h": (seq["cached"] + views) / 3600,
                     "batched_h": (batched + views) / 3600, "views_h": views / 3600})
    out = pd.DataFrame(rows)
    total = out.drop(columns=["dataset", "C"]).sum()
    return pd.concat([out, pd.DataFrame([{"dataset": "all", "C": None, **total}])], ignore_index=True)


# ---- measuring on the device --------------------------------------------------------------------------

def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def per_step(fn, s1: int, s2: int, device) -> float:
    """Seconds per step: (time of an s2-step run - time of an s1-step run) / (s2 - s1), after an s1 warm-up.
    Clamped at a microsecond (timer noise on tiny steps)."""
    fn(s1)
    t1 = _timed(lambda: fn(s1), device)
    t2 = _timed(lambda: fn(s2), device)
    return max((t2 - t1) / (s2 - s1), 1e-6)


def measure(bundle, cs, variant_names, s1: int, s2: int, image_size: int, log=print, csv: str = "") -> pd.DataFrame:
    """Step times of every (C, variant, mode, runs) the grid needs (see the module docstring); with ``csv``,
    the rows so far are written after each C (an interrupted run keeps them)."""
    from vlmlab.coop import CoOpConfig, TrainSet, parse_variant, train_coop, train_coop_batched

    dev, d = bundle.device, bundle.embed_dim
    n_max = BATCH * s2
    rng = np.random.default_rng(0)
    data = SimpleNamespace(images=rng.integers(0, 256, (n_max, image_size, image_size, 3), dtype=np.uint8))
    feats = torch.nn.functional.normalize(torch.randn(n_max, VIEWS, d), dim=-1)
    rows = []
    for c in cs:
        names = [f"class {i}" for i in range(c)]
        labels = torch.arange(n_max) % c
        a_max = min(group_size(c), 3 * len(SHOTS))
        for vname in variant_names:
            sweep = dict(GRID_VARIANTS)[vname] == SHOTS
            base = parse_variant(vname).config(CoOpConfig(batch_size=BATCH))
            exact, cached = base.replace(mode="exact"), base.replace(mode="cached", n_views=VIEWS)

            def one(mode_cfg, steps):
                n = BATCH * steps
                tr = (TrainSet(labels[:n], data=data, indices=torch.arange(n)) if mode_cfg.mode == "exact"
                      else TrainSet(labels[:n], view_feats=feats[:n]))
                return train_coop(bundle, names, tr, mode_cfg, seed=0, epochs=1)

            def stacked(a, steps):
                n = BATCH * steps
                trs = [TrainSet(labels[:n], view_feats=feats[:n]) for _ in range(a)]
                return train_coop_batched(bundle, names, trs, cached, list(range(a)), epochs=[1] * a)

            jobs = [("exact", 1, lambda s: one(exact, s)), ("cached", 1, lambda s: one(cached, s))]
            jobs += [("batched", a, (lambda a: lambda s: stacked(a, s))(a))
                     for a in sorted({3, a_max if sweep else 3})]
            for mode, a, fn in jobs:
                t0 = time.perf_counter()
                try:
                    sec = per_step(fn, s1, s2, dev)
                except torch.OutOfMemoryError as err:              # a row says so; the others go on
                    log(f"C={c} {vname} {mode} x{a}: out of memory ({err})")
                    continue
                rows.append({"C": c, "variant": vname, "mode": mode, "runs": a, "s_per_step": sec,
                             "run_step_per_s": a / sec, "wall_s": time.perf_counter() - t0})
                log(f"C={c:<5} {vname:<15} {mode:<8} x{a:<3} {1e3 * sec:8.2f} ms/step "
                    f"({a / sec:7.1f} run-steps/s)")
        if csv:
            pd.DataFrame(rows).to_csv(csv, index=False)
    return pd.DataFrame(rows)


def view_throughput(bundle, n: int, image_size: int) -> float:
    """Images per second of the cached mode's view encoding (``view_features``: crop, flip, encode)."""
    from vlmlab.coop.augment import view_features

    data = SimpleNamespace(images=np.random.default_rng(1).integers(0, 256, (n, image_size, image_size, 3),
                                                                     dtype=np.uint8))
    idx = torch.arange(n)
    view_features(bundle, data, idx[:8], 1, seed=0)                       # warm-up
    sec = _timed(lambda: view_features(bundle, data, idx, 4, seed=0), bundle.device)
    return 4 * n / sec


def crop_seconds(bundle, image_size: int, reps: int = 5) -> float:
    """Seconds of one exact-mode step's CPU part: CoOp's crop + flip of a batch of 32 (``augmented_inputs``)."""
    from vlmlab.data.augment import augmented_inputs

    data = SimpleNamespace(images=np.random.default_rng(2).integers(0, 256, (BATCH, image_size, image_size, 3),
                                                                     dtype=np.uint8))
    augmented_inputs(bundle, data, range(BATCH), [0] * BATCH, 0)
    t0 = time.perf_counter()
    for r in range(reps):
        augmented_inputs(bundle, data, range(BATCH), [r + 1] * BATCH, 0)
    return (time.perf_counter() - t0) / reps


def _compiled(fn, mode: str):
    """``torch.compile(fn, mode=mode)``; under "reduce-overhead" (CUDA graphs) each call starts a new graph
    step (``torch.compiler.cudagraph_mark_step_begin``), as a training loop must."""
    compiled = torch.compile(fn, mode=mode, dynamic=False)
    if mode != "reduce-overhead":
        return compiled

    def call(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args, **kwargs)
    return call


def overhead(bundle, c: int = 100, variant: str = "M16_end", runs=(1, 15), compile_modes=("default",),
             min_seconds: float = 1.0, log=print, csv: str = "") -> pd.DataFrame:
    """``--overhead``: where a cached step's time goes. Per R stacked runs, the text step of
    ``bench_coop_roofline.step_fn`` (synchronised each step, as the trainer's ``loss.item()`` is): wall ms,
    the device's kernel ms (``torch.profiler``, the sum of kernel self times) and kernels launched per step;
    then the same step with ``torch.compile(text_features, mode=...)`` for each of ``compile_modes``
    (``bench_coop_roofline.measure_compiled``: compile seconds, speed-up, gradient difference from eager).
    With ``csv``, the rows so far are written after each part."""
    from torch.profiler import ProfilerActivity, profile

    from bench_coop_roofline import measure_compiled, ms_per_step, step_fn, variant_learner

    dev = bundle.device
    names = [f"class {i}" for i in range(c)]
    learner, scale = variant_learner(bundle, names, variant)
    rows = []
    for r in runs:
        fn = step_fn(learner, r, scale)
        synced = lambda: (fn(), _sync(dev))  # noqa: E731
        wall = ms_per_step(synced, min_seconds)
        kernel_ms, launches = float("nan"), float("nan")
        if dev.type == "cuda":
            n = 5
            try:
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(n):
                        synced()
                ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
                kernel_ms = sum(e.self_device_time_total for e in ev) / 1e3 / n
                launches = len(ev) / n
            except Exception as err:  # noqa: BLE001
                log(f"profiler: {type(err).__name__}: {str(err)[:300]}")
        rows.append({"C": c, "variant": variant, "runs": r, "compile": "eager", "ms_per_step": wall,
                     "kernel_ms_per_step": kernel_ms, "kernels_per_step": launches})
        log(f"eager C={c} {variant} x{r}: {wall:.1f} ms a step, device busy {kernel_ms:.1f} ms, {launches:.0f} kernels")
    if csv:
        pd.DataFrame(rows).to_csv(csv, index=False)
    for mode in compile_modes:
        try:
            t = measure_compiled(bundle, names, variant, list(runs), min_seconds,
                                 compiler=lambda fn, m=mode: _compiled(fn, m), sync=lambda: _sync(dev))
        except Exception as err:  # noqa: BLE001  (a report of what failed, the rest goes on)
            log(f"compile mode {mode}: {type(err).__name__}: {str(err)[:300]}")
            continue
        for row in t.to_dict("records"):
            rows.append({"C": c, "variant": variant, "runs": row["runs"], "compile": mode,
                         "ms_per_step": row["ms_per_run_step_compiled"] * row["runs"],
                         "speedup_vs_eager": row["speedup_compiled"], "compile_s": row["compile_s"],
                         "grad_max_rel_diff": row["grad_max_rel_diff"]})
            log(f"compiled ({mode}) x{row['runs']}: {row['speedup_compiled']:.2f}x eager, "
                f"compile {row['compile_s']:.0f} s, gradient {row['grad_max_rel_diff']:.1e} from eager")
        if csv:
            pd.DataFrame(rows).to_csv(csv, index=False)
    return pd.DataFrame(rows)


def summary_text(hours: pd.DataFrame, n_variants: int = len(GRID_VARIANTS)) -> str:
    tot = hours[hours.dataset == "all"].iloc[0]
    lines = [hours.round(3).to_markdown(index=False), "",
             f"paper grid (11 datasets x 5 shots x 3 seeds x {n_variants} variants): exact one at a time {tot.exact_h:.2f} GPU-h, "
             f"cached one at a time {tot.cached_h:.2f} GPU-h, cached batched {tot.batched_h:.2f} GPU-h "
             f"(views {tot.views_h:.2f} GPU-h in both cached rows); batched vs sequential cached "
             f"{tot.cached_h / tot.batched_h:.2f}x, batched vs exact {tot.exact_h / tot.batched_h:.2f}x"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="RN50", help="open_clip architecture, random weights (nothing downloaded)")
    ap.add_argument("--precision", default="fp16", help="the paper profile's (params/paper/03_coop_shots.yaml)")
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 37, 100, 196, 397, 1000],
                    help="C values measured; the grid's others are interpolated")
    ap.add_argument("--variants", nargs="+", default=[v for v, _ in GRID_VARIANTS])
    ap.add_argument("--steps", type=int, nargs=2, default=[3, 11], help="S1 S2 of the step-time difference")
    ap.add_argument("--csv", default="", help="write the measured step times here")
    ap.add_argument("--json", default="", help="write the grid's hours here")
    ap.add_argument("--quick", action="store_true", help="64-px images, C = 3 and 10, two variants: a smoke test")
    ap.add_argument("--steps-csv", default="", help="read the step times from this --csv instead of measuring")
    ap.add_argument("--views-per-s", type=float, default=None,
                    help="the views' rate instead of timing it (with --steps-csv: no model is loaded)")
    ap.add_argument("--overhead", default="", help="also write overhead()'s table (profile, torch.compile) here")
    ap.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead"])
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    offline = bool(args.steps_csv and args.views_per_s and not args.overhead)      # the sum only
    if device.type == "cuda" and not torch.cuda.is_available() and not offline:
        print("bench_coop_paper_grid: no CUDA here; use --device cpu --quick to test the script")
        return 0
    size = 64 if args.quick else 224
    if args.quick:
        args.classes, args.variants, args.steps = [3, 10], ["M16_end", "M4_end"], [1, 2]
    bundle, t0 = None, time.perf_counter()
    if not offline:
        from vlmlab.models import load_clip
        torch.manual_seed(0)
        extra = {} if size == 224 else {"force_image_size": size}
        bundle = load_clip(args.model, None, device, precision=args.precision, **extra)
    steps = (pd.read_csv(args.steps_csv) if args.steps_csv else
             measure(bundle, args.classes, args.variants, *args.steps, image_size=size, csv=args.csv))
    ips = args.views_per_s or view_throughput(bundle, 16 if args.quick else 512, size)
    crops = crop_seconds(bundle, size) if bundle is not None else None
    variants = [(v, s) for v, s in GRID_VARIANTS if v in args.variants]
    hours = grid_hours(steps, ips, variants=variants)
    where = "a step table" if offline else (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    crop_text = "" if crops is None else f"; exact-mode crops {1e3 * crops:.1f} ms a step on the CPU"
    print(f"bench_coop_paper_grid on {where}, {args.model} {args.precision}, torch {torch.__version__}; views {ips:.0f} "
          f"images/s{crop_text}; {time.perf_counter() - t0:.0f} s")
    print(summary_text(hours, len(variants)))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "model": args.model, "precision": args.precision,
                                               "torch": torch.__version__, "views_images_per_s": ips, "crop_s_per_step": crops,
                                               "hours": hours.to_dict("records"),
                                               "steps": steps.to_dict("records")}, indent=2, default=str))
    if args.overhead:
        overhead(bundle, 10 if args.quick else 100, runs=(1, 3) if args.quick else (1, 15),
                 compile_modes=args.compile_modes, csv=args.overhead)
    return 0


if __name__ == "__main__":
    sys.exit(main())
