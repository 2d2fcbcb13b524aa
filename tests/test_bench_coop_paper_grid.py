"""benchmarks/bench_coop_paper_grid.py: the paper grid's schedule and the sum of measured step times over it."""
from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch

from vlmlab.coop import CoOpConfig, TrainSet
from vlmlab.coop.jobs import MAX_ROWS, Job, batch_jobs
from vlmlab.coop.train import run_plan
from vlmlab.runtime import REPO_ROOT

from script_loader import load_script


@pytest.fixture(scope="module")
def B():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    yield load_script("benchmarks/bench_coop_paper_grid.py")
    sys.path.remove(str(REPO_ROOT / "benchmarks"))


@pytest.mark.parametrize("c,k,epochs", [(10, 1, 50), (37, 1, 50), (100, 16, 200), (1000, 4, 50), (3, 2, 7)])
def test_run_steps_equal_run_plan(B, c, k, epochs):
    y = torch.arange(c).repeat(k)
    _, total, n_steps, *_ = run_plan(TrainSet(y), c, CoOpConfig(), seed=0, epochs=epochs)
    assert B.run_steps(c, k, epochs) == total * n_steps


def _job(dataset: str, c: int, k: int, seed: int, variant: str) -> Job:
    from vlmlab.coop import parse_variant
    cfg = parse_variant(variant).config(CoOpConfig(mode="cached"))
    return Job(dataset, variant, k, seed, [f"c{i}" for i in range(c)], TrainSet(torch.zeros(1)), torch.zeros(1, 2),
               torch.zeros(1), cfg, 1)


@pytest.mark.parametrize("c", [10, 397, 1000])
def test_groups_are_batch_jobs_chunks(B, c):
    """The notebook's cut (``batch_jobs`` over jobs in run_sweep's order: seed, shots, variant), run by run."""
    variants = [("M16_end", B.SHOTS), ("M4_end", [16])]
    jobs = [_job("D", c, k, s, v) for s in B.SEEDS for k in B.SHOTS for v, shots in variants if k in shots]
    theirs = sorted((jobs[pos[0]].variant, [B.run_steps(c, jobs[i].shots, B.EPOCHS[jobs[i].shots]) for i in pos])
                    for pos, _ in batch_jobs(jobs))
    ours = sorted((g["variant"], g["steps"]) for g in B.grid_groups({"D": c}, variants))
    assert ours == theirs
    assert max(len(steps) for _, steps in ours) == min(15, max(1, MAX_ROWS // c))


def test_imagenet_groups_and_steps(B):
    groups = [g for g in B.grid_groups() if g["dataset"] == "ImageNet" and g["variant"] == "M16_end"]
    assert [len(g["steps"]) for g in groups] == [4, 4, 4, 3]                  # 4096 // 1000 runs a step
    assert groups[0]["steps"] == [50 * (k * 1000 // 32) for k in (1, 2, 4, 8)]   # 50 epochs at every K


def test_active_profile_covers_every_run_step(B):
    steps = [5, 12, 12, 3, 30]
    prof = B.active_profile(steps)
    assert sum(n for n, _ in prof) == max(steps)
    assert sum(n * a for n, a in prof) == sum(steps)
    assert prof == [(3, 5), (2, 4), (7, 3), (18, 1)]
    assert B.active_profile([7, 7, 7]) == [(7, 3)]


def _table(fixed: float, per_run: float, cs=(10, 1000), variants=("M16_end", "M4_end")) -> pd.DataFrame:
    """Step times of a line t(A) = fixed + per_run * A, at every C, for the given variants."""
    rows = []
    for c in cs:
        for v in variants:
            rows.append({"C": c, "variant": v, "mode": "exact", "runs": 1, "s_per_step": 2 * (fixed + per_run)})
            rows.append({"C": c, "variant": v, "mode": "cached", "runs": 1, "s_per_step": fixed + per_run})
            for a in (3, 15):
                rows.append({"C": c, "variant": v, "mode": "batched", "runs": a, "s_per_step": fixed + per_run * a})
    return pd.DataFrame(rows)


def test_no_fixed_cost_means_batching_saves_nothing(B):
    variants = [("M16_end", B.SHOTS), ("M4_end", [16])]
    h = B.grid_hours(_table(0.0, 0.05), None, variants=variants).set_index("dataset")
    assert h.loc["all", "batched_h"] == pytest.approx(h.loc["all", "cached_h"])
    assert h.loc["all", "exact_h"] == pytest.approx(2 * h.loc["all", "cached_h"])


def test_fixed_cost_only_counts_batched_steps(B):
    """t(A) = const: the batched grid costs one step per step of a group's longest run."""
    variants = [("M16_end", B.SHOTS)]
    h = B.grid_hours(_table(0.1, 0.0), None, classes={"Food": 100}, variants=variants).set_index("dataset")
    longest = sum(max(g["steps"]) for g in B.grid_groups({"Food": 100}, variants))
    assert h.loc["Food", "batched_h"] == pytest.approx(0.1 * longest / 3600)
    runs = len(B.SEEDS) * sum(B.run_steps(100, k, B.EPOCHS[k]) for k in B.SHOTS)
    assert h.loc["Food", "cached_h"] == pytest.approx(0.1 * runs / 3600)


def test_views_are_added_to_both_cached_rows(B):
    variants = [("M16_end", B.SHOTS)]
    base = B.grid_hours(_table(0.1, 0.01), None, classes={"Pets": 37}, variants=variants).set_index("dataset")
    with_views = B.grid_hours(_table(0.1, 0.01), 100.0, classes={"Pets": 37}, variants=variants).set_index("dataset")
    views = 3 * sum(32 * k * 37 for k in B.SHOTS) / 100.0 / 3600
    assert with_views.loc["Pets", "views_h"] == pytest.approx(views)
    for col in ("cached_h", "batched_h"):
        assert with_views.loc["Pets", col] == pytest.approx(base.loc["Pets", col] + views)
    assert with_views.loc["Pets", "exact_h"] == base.loc["Pets", "exact_h"]


def test_step_time_interpolates_and_refuses_to_extrapolate_runs(B):
    t = _table(0.1, 0.01, cs=(10, 100))
    assert B.step_time(t, 55, "M16_end", "cached") == pytest.approx(0.11)
    assert B.step_time(t, 10, "M16_end", "batched", 9) == pytest.approx(0.1 + 0.09)
    assert B.step_time(t, 1000, "M16_end", "batched", 3) == pytest.approx(0.13)     # beyond the last C: its value
    short = t[~((t.C == 100) & (t.runs == 15))]
    with pytest.raises(ValueError, match="measured up to 3"):
        B.step_time(short, 60, "M16_end", "batched", 10)
    assert B.step_time(short, 10, "M16_end", "batched", 10) == pytest.approx(0.2)   # C = 10 alone: measured
    with pytest.raises(KeyError):
        B.step_time(t, 10, "M8_end", "cached")


def test_per_step_cancels_setup(B):
    calls = []

    def fn(steps):
        calls.append(steps)
        import time
        time.sleep(0.02 + 0.01 * steps)          # 20 ms setup + 10 ms a step
    sec = B.per_step(fn, 1, 5, torch.device("cpu"))
    assert calls == [1, 1, 5] and sec == pytest.approx(0.01, abs=0.004)


def test_the_shipped_h200_table_sums_without_a_model(B, capsys):
    """docs/gpu's step table covers every (C, variant, runs) the grid reads; the sum runs offline."""
    csv = REPO_ROOT / "docs" / "gpu" / "h200_coop_steps.csv"
    assert B.main(["--steps-csv", str(csv), "--views-per-s", "626"]) == 0
    out = capsys.readouterr().out
    assert "on a step table" in out and "cached batched" in out
    h = B.grid_hours(pd.read_csv(csv), 626.0).set_index("dataset")
    assert h.loc["all", "batched_h"] < h.loc["all", "cached_h"] < h.loc["all", "exact_h"]


def test_measure_times_every_mode_through_the_real_trainers(B):
    from vlmlab.models import load_clip
    bundle = load_clip("embedded", device="cpu")
    t = B.measure(bundle, [3], ["M4_end", "M16_end"], 1, 2, image_size=bundle.image_size, log=lambda *_: None)
    got = sorted(zip(t.variant, t["mode"], t.runs))
    assert got == sorted([("M4_end", "exact", 1), ("M4_end", "cached", 1), ("M4_end", "batched", 3),
                          ("M16_end", "exact", 1), ("M16_end", "cached", 1), ("M16_end", "batched", 3),
                          ("M16_end", "batched", 15)])
    assert (t.s_per_step > 0).all() and (t.run_step_per_s == t.runs / t.s_per_step).all()


def test_grid_variants_are_the_paper_profiles(B):
    """The notebook's variants under params/paper (the names, and the shots each runs at)."""
    from vlmlab.coop import parse_variant
    from vlmlab.params import load
    P = load("03_coop_shots", "paper")
    ours = {(parse_variant(v), tuple(s)) for v, s in B.GRID_VARIANTS}
    theirs = {(parse_variant(v.split("@")[0]), parse_variant(v).shots_or(P.shots)) for v in P.variants}
    assert ours == theirs and sorted(P.shots) == B.SHOTS and list(P.seeds) == list(B.SEEDS)
    assert dict(P.epochs) == B.EPOCHS
