"""How much batching can speed up cached-mode CoOp on this machine: a roofline of the text step.

    python benchmarks/bench_coop_roofline.py                        # world objects, M16_end, R = 1 3 9 15, 1 thread
    python benchmarks/bench_coop_roofline.py --variant M16_end_csc --runs 1 15 --csv /tmp/roofline.csv
    python benchmarks/bench_coop_roofline.py --precision bf16 --grid   # notebook 03's precision and grid
    python benchmarks/bench_coop_roofline.py --precision bf16 --compile   # + torch.compile'd text pass vs eager
    python benchmarks/bench_coop_roofline.py --precision bf16 --pure-bf16 # + the tower cast to bf16 vs autocast

A cached-mode CoOp step costs one forward and backward of the frozen text tower to the context
(``vlmlab.coop.text_batch.text_features``; the image side is a lookup of cached views) and a 32 x C
classifier. Batching R runs (``vlmlab.coop.batched``) stacks their rows into one pass: it removes
per-operation overhead but not arithmetic, since every run's rows still have to be computed. This
script measures the three numbers that bound the gain:

1. FLOPs per run-step, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one step of R stacked
   runs, divided by R: the matrix products (``tests/test_bench_coop_roofline.py`` checks the count
   position by position). Elementwise work (layer norms, GELU, softmax) is left out, so the ceiling
   below is optimistic;
2. ms per run-step at each R (the step of ``train_coop_batched``: text features, per-run cross-entropy,
   gradient to the contexts; random unit image features stand in for the cached views);
3. the machine's GEMM rate at the step's largest matrix product (``--threads`` threads), in the step's
   precision (``--precision bf16`` autocasts the step and times a bf16 GEMM, where the CPU has bf16 kernels).

``ceiling_vs_1`` = (ms per step at R = 1) / (FLOPs per run-step / GEMM rate): the speed-up batching would
give if the batched step ran every counted FLOP at the GEMM rate and spent nothing else. It is the most
any batching of these runs can give on this machine; ``speedup_vs_1`` is what the code gets at R.

``fixed_ms`` and ``per_run_ms`` split a batched step's time into a part paid once per step and a part
per stacked run (a line through the measured R): batching shares only the first.

``--grid`` also counts notebook 03's whole CoOp grid in its embedded profile (``params/embedded/
03_coop_shots.yaml``: datasets, shots, seeds, variants, CoOp's epochs; steps per run as ``run_plan``
draws them): FLOPs per run-step of every (dataset, variant) times its run-steps, and the seconds
that takes at the measured GEMM rate on ``--cores`` cores (the notebook's 2 workers): a lower bound of
the notebook's cold training time on this machine, and ``fixed_seconds``, the time its batched steps
spend on the fixed cost alone (``with_fixed_seconds``). With ``--csv X.csv`` it goes to ``X_grid.csv``.

``--compile`` times the same step with ``torch.compile(text_features)`` (inductor's fused C++ kernels)
against eager at each R, the compilation's seconds and the gradient's difference (``X_compiled.csv``).
Measured on the embedded model (objects, bf16, one thread, 2026-12-04): 1.04-1.72x at R = 1-3, 0.96-1.18x
at R = 15, 18-35 s to compile each (variant, R) shape, gradients 0.6-1.7 % from eager's; notebook 03's
48 (dataset, variant) groups would spend more compiling than the compiled steps save, and their numbers
would move by the rounding, so the trainer stays eager. On a GPU the picture differs: there the step is
nearly all dispatch (``bench_coop_paper_grid.py --overhead``, RN50 fp16 on an H200: 1.5-1.8x compiled, 3.9-5.4x
with CUDA graphs; docs/gpu/).

``--pure-bf16`` times the step with the text tower and every tensor of the learner cast to bf16 and no
autocast (as CoOp's code casts CLIP to fp16, ``clip.model.convert_weights``), against autocast, the
trainer's (``X_pure_bf16.csv``): it would remove autocast's casts (``aten::_to_copy``, 11 % of a CSC
step's CPU time in ``torch.profiler``). Measured on the AVX-512/AMX Xeon (objects, one thread,
2026-12-05): at R = 1 and 15, 1.11x and 1.00x for M16 end, 0.98x and 1.07x for CSC, gradients 1.5-2.1 % from
autocast's (autocast's are about 1 % from fp32's). What the casts cost, bf16's layer norms, GELU and softmax
give back on this CPU, so it is no lever here.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vlmlab.coop import CoOpConfig, load_splits, parse_variant
from vlmlab.coop.text_batch import prefix_length, text_features
from vlmlab.coop.train import TrainSet, build_learner, run_plan
from vlmlab.models import load_clip
from vlmlab.prompts import PromptLearner
from vlmlab.runtime import PRECISIONS, effective_precision

BATCH = 32                                   # CoOp's batch size: image features per step and run


def step_fn(learner: PromptLearner, runs: int, scale: float, seed: int = 0, features=text_features):
    """One cached-mode training step of ``runs`` stacked contexts (no optimiser update): a callable.

    ``features``: the text pass, ``text_features`` or a wrapper of it (``--compile``: ``torch.compile``'d).
    """
    g = torch.Generator().manual_seed(seed)
    ctx = learner.ctx.detach().unsqueeze(0).repeat(runs, *([1] * learner.ctx.dim()))              # a copy
    dev = ctx.device
    ctx += 0.01 * torch.randn(ctx.shape, generator=g).to(dev)                         # distinct contexts
    dim = learner.bundle.embed_dim
    feats = F.normalize(torch.randn(runs, BATCH, dim, generator=g), dim=-1).to(dev)
    labels = torch.randint(0, learner.n_cls, (runs, BATCH), generator=g).to(dev)

    def step() -> torch.Tensor:
        leaf = ctx.detach().requires_grad_(True)
        with learner.bundle.autocast():
            text = features(learner, leaf)                                            # (R, C, D)
            losses = torch.stack([F.cross_entropy(scale * feats[r].to(text.dtype) @ text[r].T, labels[r])
                                  for r in range(runs)])
        (grad,) = torch.autograd.grad(losses.sum(), leaf)
        return grad.clone()            # a copy: a CUDA-graphed step's outputs are overwritten by the next
    return step


def counted_flops(fn) -> int:
    """FLOPs of one call of ``fn`` as ``FlopCounterMode`` counts them (matrix products)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def flops_per_run_step(learner: PromptLearner, runs: int, scale: float) -> float:
    """Counted FLOPs of one step of ``runs`` stacked runs, per run."""
    return counted_flops(step_fn(learner, runs, scale)) / runs


def ms_per_step(fn, min_seconds: float = 2.0, warmup: int = 5) -> float:
    """Mean wall ms of ``fn``: warm up, then repeat until ``min_seconds`` have passed (3 calls at least)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < min_seconds or n < 3:
        fn()
        n += 1
    return 1000 * elapsed / n


def gemm_gflops(rows: int, width: int, hidden: int, min_seconds: float = 2.0,
                dtype: torch.dtype = torch.float32) -> float:
    """Attainable rate of (rows x width) @ (width x hidden) in ``dtype``, the step's largest product (MLP in)."""
    a, b = torch.randn(rows, width, dtype=dtype), torch.randn(width, hidden, dtype=dtype)
    ms = ms_per_step(lambda: a @ b, min_seconds)
    return 2 * rows * width * hidden / ms / 1e6


def step_cost_fit(runs: list[int], ms_per_step: list[float]) -> tuple[float, float]:
    """Least-squares line through (R, ms per batched step): (fixed ms per step, ms per stacked run).

    The fixed part is what a step costs whatever it holds (operator dispatch, autograd, small kernels);
    it is paid once per batched step, so it is what batching shares. NaN with fewer than two R.
    """
    if len(set(runs)) < 2:
        return float("nan"), float("nan")
    per_run, fixed = np.polyfit(np.asarray(runs, dtype=float), np.asarray(ms_per_step, dtype=float), 1)
    return float(fixed), float(per_run)


def suffix_rows(learner: PromptLearner) -> int:
    """Rows per run of the tower's class part: C classes x the positions after the shared prefix."""
    return learner.n_cls * (learner.tokens.shape[1] - prefix_length(learner))


def variant_learner(bundle, classnames, variant: str) -> tuple[PromptLearner, float]:
    """The learner a variant trains (CoOp's config, seed 1) and the logit scale of its step."""
    cfg = parse_variant(variant).config(CoOpConfig())
    return build_learner(bundle, classnames, cfg, seed=1), cfg.logit_scale or bundle.logit_scale


def measure(bundle, classnames, variant: str, runs: list[int], min_seconds: float, dataset: str = "") -> pd.DataFrame:
    """One row per R: ms and counted GFLOP per run-step, the GEMM rate, the speed-up and ceiling vs the first R."""
    learner, scale = variant_learner(bundle, classnames, variant)
    block = learner.tower.transformer.resblocks[0]
    width, hidden = block.mlp.c_fc.in_features, block.mlp.c_fc.out_features
    precision = effective_precision(bundle.device, bundle.precision)
    rate = gemm_gflops(max(runs) * suffix_rows(learner), width, hidden, min_seconds,
                       PRECISIONS[precision] or torch.float32)
    rows = []
    for r in runs:
        step = step_fn(learner, r, scale)
        flops, ms = counted_flops(step) / r, ms_per_step(step, min_seconds) / r
        rows.append({"dataset": dataset, "threads": torch.get_num_threads(), "variant": variant,
                     "precision": precision,
                     "classes": learner.n_cls, "runs": r, "ms_per_run_step": ms, "gflop_per_run_step": flops / 1e9,
                     "achieved_gflops": flops / ms / 1e6, "gemm_gflops": rate,
                     "fraction_of_gemm": flops / ms / 1e6 / rate})
    t = pd.DataFrame(rows)
    t["fixed_ms"], t["per_run_ms"] = step_cost_fit(t["runs"].tolist(), (t["ms_per_run_step"] * t["runs"]).tolist())
    base = t.loc[t["runs"] == min(runs), "ms_per_run_step"].iloc[0]
    t["speedup_vs_1"] = base / t["ms_per_run_step"]
    t["ceiling_vs_1"] = base / (1e3 * t["gflop_per_run_step"] / t["gemm_gflops"])
    return t


def measure_compiled(bundle, classnames, variant: str, runs: list[int], min_seconds: float,
                     compiler=None, sync=None) -> pd.DataFrame:
    """``--compile``: the step with ``torch.compile(text_features)`` against eager, one row per R.

    A fresh compilation per R (``dynamic=False``, dynamo reset first): ``compile_s`` is the first compiled
    step's wall time less an eager step's; ``grad_max_rel_diff``, the largest gradient difference from eager
    over the largest eager gradient (the compiled kernels round differently, so it is not 0).
    ``compiler`` (tests): what wraps ``text_features`` instead of ``torch.compile``. ``sync``: called after
    every step, timed with it (a GPU's ``torch.cuda.synchronize``: otherwise the timer reads the launches).
    """
    timed = (lambda fn: fn) if sync is None else (lambda fn: lambda: (fn(), sync())[0])
    compiler = compiler or (lambda fn: torch.compile(fn, dynamic=False))
    learner, scale = variant_learner(bundle, classnames, variant)
    rows = []
    for r in runs:
        eager = timed(step_fn(learner, r, scale))
        ms_eager = ms_per_step(eager, min_seconds)
        g_eager = eager()
        torch._dynamo.reset()
        compiled = timed(step_fn(learner, r, scale, features=compiler(text_features)))
        t0 = time.perf_counter()
        g = compiled()
        compile_s = time.perf_counter() - t0 - ms_eager / 1e3
        ms = ms_per_step(compiled, min_seconds)
        rows.append({"variant": variant, "runs": r, "ms_per_run_step_eager": ms_eager / r,
                     "ms_per_run_step_compiled": ms / r, "speedup_compiled": ms_eager / ms, "compile_s": compile_s,
                     "grad_max_rel_diff": float((g - g_eager).abs().max() / g_eager.abs().max())})
    torch._dynamo.reset()
    return pd.DataFrame(rows)


def notebook_grid(bundle, gemm: float, cores: int, profile: str = "embedded",
                  overrides: dict | None = None) -> pd.DataFrame:
    """Notebook 03's CoOp runs per (dataset, variant): run-steps, counted TFLOP, seconds at ``gemm`` GFLOP/s x cores.

    ``dataset_group_steps``: the steps of the (dataset, variant)'s shots x seeds, its longest run's.
    ``group_steps``: the batched steps under the profile's ``stack_runs`` (the notebook trains a variant's
    runs as one group while runs x classes <= 4096 prompts, as in the embedded profile): "dataset", a
    group per (dataset, variant), its ``dataset_group_steps``; "datasets", a group per variant across the
    datasets, whose steps are its longest run's, counted on that dataset's row (0 on the others). Summed
    over the grid, ``run_steps / group_steps`` is the mean number of runs a batched step holds: the most
    batching could give even if a step of R runs cost what one run's does.

    ``overrides``: notebook parameters over the profile's, as ``vlmlab.params.load`` takes them.
    """
    from vlmlab import params

    p = params.load("03_coop_shots", profile, overrides)
    base = CoOpConfig(epochs=p["epochs"]).replace(**p["coop"])
    rows = []
    for source in p["datasets"]:
        split = load_splits(source, n_train_per_class=1, n_test=1)
        classnames, ds = split.classnames, split.name              # run_sweep keys epochs_by_dataset by name
        c, epochs = len(classnames), (p["epochs_by_dataset"] or {}).get(ds, base.epochs)
        for v in map(parse_variant, p["variants"]):
            cfg = v.config(base.replace(epochs=epochs))
            learner = build_learner(bundle, classnames, cfg, seed=1)
            steps, longest = 0, 0
            for k in v.shots_or(p["shots"]):
                _, total, n_steps, _, _ = run_plan(TrainSet(labels=torch.zeros(k * c, dtype=torch.long)), c, cfg, 0, k)
                steps += total * n_steps * len(p["seeds"])
                longest = max(longest, total * n_steps)
            flops = flops_per_run_step(learner, 1, cfg.logit_scale or bundle.logit_scale)
            rows.append({"dataset": ds, "variant": v.name, "classes": c, "run_steps": steps,
                         "dataset_group_steps": longest, "gflop_per_run_step": flops / 1e9,
                         "tflop": steps * flops / 1e12})
    t = pd.DataFrame(rows)
    t["group_steps"] = t["dataset_group_steps"]
    if p.get("stack_runs", "datasets") == "datasets":                  # one group per variant: its longest run
        longest = t.groupby("variant", sort=False)["dataset_group_steps"].idxmax()
        t["group_steps"] = 0
        t.loc[longest.values, "group_steps"] = t.loc[longest.values, "dataset_group_steps"]
    t["seconds_at_gemm_rate"] = t["tflop"] * 1e3 / (gemm * cores)
    t["cores"], t["gemm_gflops"] = cores, gemm
    return t


def with_fixed_seconds(g: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
    """``g`` with ``fixed_seconds``: each group's batched steps x the smallest fitted ``fixed_ms`` of the
    measured variants (``t``) / cores, the time its steps spend on the fixed cost alone. Batching these
    groups cannot remove it; only fewer, larger groups or a cheaper step would. A negative fitted
    ``fixed_ms`` (timings too noisy to split: no step costs less than nothing) is skipped; NaN if every
    fit is negative."""
    fixed = t["fixed_ms"][t["fixed_ms"] >= 0].min()
    return g.assign(fixed_seconds=fixed * g["group_steps"] / 1e3 / g["cores"])


def pure_bf16(learner: PromptLearner) -> PromptLearner:
    """A copy of ``learner`` whose tower and tensors are bf16 and whose bundle does not autocast."""
    out = copy.deepcopy(learner)                                       # the tower too: a copy of its own
    out.to(torch.bfloat16)                                             # the learner's parameters and buffers
    cast = {}                                                          # the tower: a frozen holder of pieces
    for field in dataclasses.fields(out.tower):
        value = getattr(out.tower, field.name)
        if isinstance(value, torch.nn.Module):
            value.to(torch.bfloat16)
        elif torch.is_tensor(value) and value.is_floating_point():
            cast[field.name] = value.detach().to(torch.bfloat16)
    out.tower = dataclasses.replace(out.tower, **cast)
    out.bundle.autocast = contextlib.nullcontext                       # the copy's bundle: the learner's is untouched
    return out


def measure_pure_bf16(bundle, classnames, variant: str, runs: list[int], min_seconds: float) -> pd.DataFrame:
    """``--pure-bf16``: the step of :func:`pure_bf16`'s learner against the autocast one, one row per R, with
    ``grad_rel_diff``, the relative norm of the gradients' difference."""
    learner, scale = variant_learner(bundle, classnames, variant)
    pure = pure_bf16(learner)
    rows = []
    for r in runs:
        auto_step, pure_step = step_fn(learner, r, scale), step_fn(pure, r, scale)
        g_auto, g_pure = auto_step().float(), pure_step().float()
        ms_auto, ms_pure = ms_per_step(auto_step, min_seconds), ms_per_step(pure_step, min_seconds)
        rows.append({"variant": variant, "runs": r, "ms_per_run_step_autocast": ms_auto / r,
                     "ms_per_run_step_pure_bf16": ms_pure / r, "speedup_pure_bf16": ms_auto / ms_pure,
                     "grad_rel_diff": float((g_pure - g_auto).norm() / g_auto.norm())})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--dataset", default="world:objects")
    ap.add_argument("--variant", nargs="+", default=["M16_end"])
    ap.add_argument("--runs", type=int, nargs="+", default=[1, 3, 9, 15],
                    help="stacked runs R (the smallest is the base)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS),
                    help="the bundle's precision: bf16 autocasts the step on the CPU, and the GEMM rate is bf16's")
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timing window per measurement")
    ap.add_argument("--csv", default="")
    ap.add_argument("--grid", action="store_true", help="also count notebook 03's embedded grid (X_grid.csv)")
    ap.add_argument("--cores", type=int, default=2, help="--grid: cores the notebook trains on (its workers)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the step with torch.compile(text_features) against eager (X_compiled.csv)")
    ap.add_argument("--pure-bf16", action="store_true",
                    help="also time the step with the tower cast to bf16, no autocast (X_pure_bf16.csv)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_clip(args.model, None, device="cpu", precision=args.precision)
    split = load_splits(args.dataset, n_train_per_class=1, n_test=1)
    runs = sorted(set(args.runs))
    t = pd.concat([measure(bundle, split.classnames, v, runs, args.seconds, args.dataset) for v in args.variant],
                  ignore_index=True)
    if args.csv:
        t.to_csv(args.csv, index=False)
    print(t.round(3).to_string(index=False))
    out = {"ceiling_vs_1": float(t["ceiling_vs_1"].max()), "speedup_vs_1": float(t["speedup_vs_1"].max())}
    extras = ([("compiled", measure_compiled, "speedup_compiled")] if args.compile else []) + \
        ([("pure_bf16", measure_pure_bf16, "speedup_pure_bf16")] if args.pure_bf16 else [])
    for suffix, measure_extra, speedup in extras:                     # X_compiled.csv, X_pure_bf16.csv
        e = pd.concat([measure_extra(bundle, split.classnames, v, runs, args.seconds) for v in args.variant],
                      ignore_index=True)
        if args.csv:
            e.to_csv(Path(args.csv).with_name(f"{Path(args.csv).stem}_{suffix}.csv"), index=False)
        print(e.round(3).to_string(index=False))
        out.update({f"{suffix}_speedup_min": float(e[speedup].min()), f"{suffix}_speedup_max": float(e[speedup].max())})
    if args.grid:
        g = with_fixed_seconds(notebook_grid(bundle, float(t["gemm_gflops"].max()), args.cores), t)
        if args.csv:
            g.to_csv(Path(args.csv).with_name(Path(args.csv).stem + "_grid.csv"), index=False)
        print(g.round(3).to_string(index=False))
        out.update(grid_run_steps=int(g["run_steps"].sum()), grid_group_steps=int(g["group_steps"].sum()),
                   grid_tflop=float(g["tflop"].sum()),
                   grid_seconds_at_gemm_rate=float(g["seconds_at_gemm_rate"].sum()),
                   grid_fixed_seconds=float(g["fixed_seconds"].sum()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
