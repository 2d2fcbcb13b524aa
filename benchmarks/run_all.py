"""Run every script of ``benchmarks/`` at its documented setting: one CSV each and a summary of ratios.

    python benchmarks/run_all.py                              # = make bench -> results/bench/
    python benchmarks/run_all.py --only bench_coop_grid bench_world --out /tmp/bench

Each benchmark runs in its own process with ``VLMLAB_CACHE`` in a fresh temporary folder (cold means
cold) and writes ``<out>/<name>.csv``; its log goes to ``<out>/<name>.log``. ``summary.md`` gathers
the ratios (cached vs exact CoOp, batched vs sequential CoOp, warm vs cold feature cache, images per
second of rendering, corrupting and encoding, ms per image of the TTA methods, exact-mode CoOp's decode and
crop by threads, the batching ceiling of CoOp's text step) and each script's wall time. The two sweeps run ``--quick`` (their full grids fit
UniInfo's and notebook 04's constants and take hours on 2 cores). A failed script is listed in the
summary and the exit status is 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger("vlmlab.bench")
HERE = Path(__file__).resolve().parent
EMBEDDED_COOP = ["--n-views", "16", "--crop-scale", "0.5", "1", "--precision", "bf16"]  # the embedded profile's
# name -> (script, arguments, output flag)
BENCHES = {
    "bench_features": ("bench_features.py", [], "--csv"),
    "bench_world": ("bench_world.py", [], "--csv"),
    "bench_tta": ("bench_tta.py", ["--devices", "cpu"], "--csv"),
    "bench_coop": ("bench_coop.py", EMBEDDED_COOP + ["--batched"], "--csv"),                # 16 shots x 3 seeds
    "bench_coop_grid": ("bench_coop.py", EMBEDDED_COOP + ["--shots", "1", "2", "4", "8", "16", "--batched",
                                                          "--no-exact"], "--csv"),         # notebook 03's group
    "bench_blind_finetune": ("bench_blind_finetune.py", ["--tasks", "depth", "correspondence", "odd_one_out", "style",
                                                         "--steps", "100"], "--csv"),             # notebook 05's setting
    "sweep_uniinfo": ("sweep_uniinfo.py", ["--quick"], "--out"),
    "sweep_visual_prompt": ("sweep_visual_prompt.py", ["--quick"], "--out"),
    "estimate_coop_gpu_hours": ("estimate_coop_gpu_hours.py", [], "--csv"),                  # FLOPs, no timing
    "bench_crops": ("bench_crops.py", [], "--csv"),                    # exact-mode CoOp's decode + crop, by threads
    "bench_coop_roofline": ("bench_coop_roofline.py", ["--variant", "M16_end", "M16_end_csc", "--grid"], "--csv"),
    "bench_coop_roofline_bf16": ("bench_coop_roofline.py", ["--variant", "M16_end", "M16_end_csc", "--grid",
                                                            "--precision", "bf16"], "--csv"),      # notebook 03's
}


def run_one(name: str, out: Path) -> dict:
    """Run benchmark ``name`` into ``out/<name>.csv``; returns name, seconds, return code."""
    script, args, flag = BENCHES[name]
    cmd = [sys.executable, str(HERE / script), *args, flag, str(out / f"{name}.csv")]
    env = {**os.environ, "VLMLAB_CACHE": tempfile.mkdtemp(prefix=f"vlmlab-{name}-"), "VLMLAB_BATCH": "1",
           "HF_HUB_OFFLINE": "1"}
    log.info("%s: %s", name, " ".join(cmd[1:]))
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent).returncode
    seconds = time.perf_counter() - t0
    log.info("%s: %s in %.0f s", name, "ok" if rc == 0 else f"FAILED (exit {rc}, see {name}.log)", seconds)
    return {"benchmark": name, "seconds": round(seconds, 1), "exit": rc}


def _read(out: Path, name: str) -> pd.DataFrame | None:
    path = out / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def coop_ratios(coop: pd.DataFrame | None, grid: pd.DataFrame | None) -> list[tuple[str, str]]:
    """Cached vs exact (16 shots, mean over seeds), batched vs sequential (the grid, summed wall times)."""
    rows = []
    if coop is not None and {"cached", "exact"} <= set(coop["mode"]):
        by = {m: t.set_index("seed").sort_index() for m, t in coop.groupby("mode")}
        c, e = by["cached"], by["exact"]
        rows.append(("CoOp cached vs exact, wall incl. views (16 shots, mean of seeds)",
                     f"{(e['total_s'] / c['total_s']).mean():.1f}x; accuracy {c['accuracy'].mean():.2f} vs "
                     f"{e['accuracy'].mean():.2f} %"))
        if "batched" in by:
            b = by["batched"]
            rows.append(("CoOp cached+batched vs exact, wall incl. views (16 shots, 3 seeds in one group)",
                         f"{e['total_s'].sum() / (b['views_s'].sum() + b['group_s'].iloc[0]):.1f}x; accuracy "
                         f"{b['accuracy'].mean():.2f} vs {e['accuracy'].mean():.2f} %"))
    if grid is not None and "batched" in set(grid["mode"]):
        c, b = grid[grid["mode"] == "cached"], grid[grid["mode"] == "batched"]
        diff = (b.set_index(["shots", "seed"])["accuracy"] - c.set_index(["shots", "seed"])["accuracy"]).abs().max()
        rows.append((f"CoOp batched vs sequential, training wall ({len(c)} cached runs: shots x seeds)",
                     f"{c['train_s'].sum() / b['group_s'].iloc[0]:.1f}x ({c['train_s'].sum():.0f} s -> "
                     f"{b['group_s'].iloc[0]:.0f} s); largest accuracy difference {diff:.2f} points"))
    return rows


def other_ratios(out: Path) -> list[tuple[str, str]]:
    rows = []
    if (f := _read(out, "bench_features")) is not None:
        s = f.set_index("path")["seconds"]
        rows.append(("feature cache warm vs cold (extract_arrays)", f"{s['cold'] / s['warm']:.0f}x"))
    if (w := _read(out, "bench_world")) is not None:
        for r in w.itertuples():
            rows.append((f"{r.stage} images/s ({r.name})", f"{r.images_per_s:.0f}"))
        pooled = w[w["stage"] == "corrupt_pooled"].set_index("name")["images_per_s"]
        if {"warmed", "unwarmed"} <= set(pooled.index):
            rows.append(("corrupting as the notebooks do (a pooled call per corruption, new process): warmed "
                         "before forking vs not", f"{pooled['warmed'] / pooled['unwarmed']:.1f}x"))
    if (t := _read(out, "bench_tta")) is not None and "ms_per_image" in t:
        rows.append(("TTA ms per image (CPU)", ", ".join(f"{r.method} {r.ms_per_image:.1f}" for r in t.itertuples())))
    if (b := _read(out, "bench_blind_finetune")) is not None:
        rows.append(("notebook 05 fine-tuning, 2 workers vs 1", f"{b['speedup'].iloc[-1]:.2f}x"))
    if (c := _read(out, "bench_crops")) is not None:
        rows.append((f"exact-mode CoOp's decode + crop of a batch of {c['batch'].iloc[0]} ({c['files'].iloc[0]} files), "
                     "ms by decoding threads", ", ".join(f"{r.workers}: {r.ms_per_batch:.0f} ({r.speedup:.1f}x)"
                                                         for r in c.itertuples())))
    if (e := _read(out, "estimate_coop_gpu_hours")) is not None:
        official, ours = e["text_official_pflop"].sum(), e["text_ours_pflop"].sum()
        rows.append(("CoOp paper grid, text-tower FLOPs: CoOp's code vs vlmlab (counted, RN50)",
                     f"{official / ours:.1f}x ({official / 1e3:.1f} -> {ours / 1e3:.1f} EFLOP)"))
    for name in ("bench_coop_roofline", "bench_coop_roofline_bf16"):
        if (r := _read(out, name)) is None:
            continue
        prec = r["precision"].iloc[0] if "precision" in r else "fp32"
        for v, t in r.groupby("variant", sort=False):
            big = t.loc[t["runs"].idxmax()]
            rows.append((f"CoOp {v} text step ({t['dataset'].iloc[0]}, {t['threads'].iloc[0]} thread, {prec}): batching "
                         f"ceiling (counted FLOPs at the {prec} GEMM rate) vs measured, R = {int(big['runs'])} runs",
                         f"{t['ceiling_vs_1'].max():.1f}x vs {big['speedup_vs_1']:.1f}x "
                         f"({big['gflop_per_run_step']:.3f} GFLOP per run-step; {big['achieved_gflops']:.0f} of "
                         f"{big['gemm_gflops']:.0f} GFLOP/s; {big['ms_per_run_step']:.2f} ms per run-step)"))
            if "fixed_ms" in t and t["fixed_ms"].notna().all():
                fixed, per_run = t["fixed_ms"].iloc[0], t["per_run_ms"].iloc[0]
                rows.append((f"CoOp {v} batched step ({prec}): fixed cost per step + cost per stacked run "
                             f"(a line through R = {', '.join(map(str, t['runs']))})",
                             f"{fixed:.2f} ms + {per_run:.2f} ms x R" if fixed >= 0 else
                             f"not split this run: the line's intercept is {fixed:.2f} ms, and no step costs less "
                             f"than nothing (timings too noisy; rerun), slope {per_run:.2f} ms x R"))
        if (g := _read(out, f"{name}_grid")) is not None:
            rows.append((f"notebook 03's CoOp grid (embedded): counted text FLOPs, and their time at the {prec} GEMM "
                         f"rate on {g['cores'].iloc[0]} cores (a lower bound of its training)",
                         f"{g['run_steps'].sum() / 1e3:.1f} k run-steps, {g['tflop'].sum():.1f} TFLOP, >= "
                         f"{g['seconds_at_gemm_rate'].sum():.0f} s"
                         + (f"; {g['run_steps'].sum() / g['group_steps'].sum():.1f} runs per batched step on average"
                            if "group_steps" in g else "")
                         + (f" ({g['run_steps'].sum() / g['dataset_group_steps'].sum():.1f} in a group per dataset)"
                            if "dataset_group_steps" in g else "")
                         + (f"; the fixed cost of its {g['group_steps'].sum() / 1e3:.1f} k batched steps alone "
                            f"about {g['fixed_seconds'].sum():.0f} s"
                            if "fixed_seconds" in g and g["fixed_seconds"].notna().any() else "")))
    return rows


def summary(out: Path, runs: list[dict]) -> str:
    ratios = coop_ratios(_read(out, "bench_coop"), _read(out, "bench_coop_grid")) + other_ratios(out)
    lines = ["# make bench", "", f"{os.cpu_count()} CPU cores; each script in its own process, cold cache.", "",
             "| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in ratios]
    lines += ["", "| benchmark | seconds | status |", "|---|---|---|"]
    lines += [f"| {r['benchmark']} | {r['seconds']:.0f} | {'ok' if r['exit'] == 0 else 'FAILED (exit %d)' % r['exit']} |"
              for r in runs]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_one(name, out) for name in args.only]
    text = summary(out, runs)
    (out / "summary.md").write_text(text)
    log.info("wrote %s\n%s", out / "summary.md", text)
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
