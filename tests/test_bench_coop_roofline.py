"""benchmarks/bench_coop_roofline.py: the FLOP count behind its batching ceiling."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmlab.coop import CoOpConfig, parse_variant
from vlmlab.coop.text_batch import prefix_length, text_features
from vlmlab.coop.train import build_learner

from script_loader import load_script

R = load_script("benchmarks/bench_coop_roofline.py")
RUN_ALL = load_script("benchmarks/run_all.py")

CLASSES = ["red circle", "blue square", "green triangle made of glass", "star", "yellow hexagon"]


@pytest.fixture(scope="module")
def bundle(make_tiny_clip):
    return make_tiny_clip("vlmlab-test-roofline", context_length=24, text_layers=2)


def _learner(bundle, variant):
    return build_learner(bundle, CLASSES, parse_variant(variant).config(CoOpConfig()), seed=1)


def _forward_flops_by_hand(learner) -> int:
    """Matrix-product FLOPs of ``text_features`` for one run, position by position (2 FLOP per MAC).

    Each layer: the prefix's q/k/v projection, once. Each layer but the last: the prefix's own causal
    attention (P x P scores and values), output and MLP; every class row's S suffix positions:
    projection, scores and values against P + S keys, output, MLP. The last layer: the suffix
    projections, then attention, output and MLP at the EOS row only. Then the text projection of the C
    EOS rows. Not here because torch's counter does not see it: with a class-specific context (P = 1),
    the scores against the lone SOS key (an elementwise product).
    """
    tower = learner.tower
    blk = tower.transformer.resblocks[0]
    w, f = blk.mlp.c_fc.in_features, blk.mlp.c_fc.out_features
    d = tower.text_projection.shape[1]
    c, p = learner.n_cls, prefix_length(learner)
    s = learner.tokens.shape[1] - p
    layers = len(tower.transformer.resblocks)
    qkv, out, mlp = 3 * w * w, w * w, 2 * w * f                    # MACs per position
    total = 0
    for layer in range(layers):
        total += p * qkv + c * s * qkv                               # prefix q/k/v (once); suffix q/k/v
        if layer < layers - 1:
            total += 2 * p * p * w + p * (out + mlp)                 # the prefix's own attention and block
            total += c * s * (2 * (p + s) * w + out + mlp)           # suffix attention, output, MLP
        else:
            total += c * (2 * (p + s) * w + out + mlp)               # the EOS rows only
    total += c * w * d
    return 2 * total


@pytest.mark.parametrize("variant", ["M4_end", "M4_middle", "M8_end"])
def test_counted_forward_flops_equal_a_position_by_position_count(bundle, variant):
    learner = _learner(bundle, variant)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        text_features(learner, learner.ctx.detach().unsqueeze(0))
    assert counter.get_total_flops() == _forward_flops_by_hand(learner)


def test_flops_per_run_do_not_depend_on_how_many_runs_are_stacked(bundle):
    learner = _learner(bundle, "M4_end")
    one = R.flops_per_run_step(learner, 1, 10.0)
    assert one > _forward_flops_by_hand(learner)                    # the step includes a backward pass
    assert R.flops_per_run_step(learner, 3, 10.0) == one


def test_the_step_gives_each_run_its_own_gradient(bundle):
    """The timed step is a real training step: stacked runs get different, finite context gradients."""
    learner = _learner(bundle, "M4_end")
    grad = R.step_fn(learner, 2, 10.0)()
    assert grad.shape == (2, *learner.ctx.shape) and torch.isfinite(grad).all()
    assert not torch.allclose(grad[0], grad[1])


def test_measure_reports_the_ceiling_from_flops_and_the_gemm_rate(bundle, tmp_path):
    t = R.measure(bundle, CLASSES, "M4_end", [1, 2], min_seconds=0.05, dataset="shapes")
    assert list(t["runs"]) == [1, 2] and (t["gemm_gflops"] > 0).all()
    base = t["ms_per_run_step"].iloc[0]
    expected = base / (1e3 * t["gflop_per_run_step"] / t["gemm_gflops"])
    assert t["ceiling_vs_1"].tolist() == pytest.approx(expected.tolist())
    assert t["speedup_vs_1"].iloc[0] == pytest.approx(1.0)

    # two R: the line of fixed + per-run cost passes through both measured steps
    fixed, per_run = t["fixed_ms"].iloc[0], t["per_run_ms"].iloc[0]
    assert (fixed + per_run * t["runs"]).tolist() == pytest.approx((t["ms_per_run_step"] * t["runs"]).tolist())

    t.to_csv(tmp_path / "bench_coop_roofline.csv", index=False)                   # what make bench summarises
    row, fit = RUN_ALL.other_ratios(tmp_path)
    assert row[0].startswith("CoOp M4_end text step (shapes, ") and f"{t['ceiling_vs_1'].max():.1f}x vs" in row[1]
    assert fit[1] == f"{fixed:.2f} ms + {per_run:.2f} ms x R"


def test_step_cost_fit_recovers_a_line_and_needs_two_run_counts():
    runs = [1, 3, 9, 15]
    assert R.step_cost_fit(runs, [5.0 + 1.5 * r for r in runs]) == pytest.approx((5.0, 1.5))
    noisy = R.step_cost_fit(runs, [5.0 + 1.5 * r + e for r, e in zip(runs, (0.1, -0.1, -0.1, 0.1))])
    assert noisy[1] == pytest.approx(1.5, abs=0.02) and noisy[0] == pytest.approx(5.0, abs=0.2)
    assert all(map(math.isnan, R.step_cost_fit([4, 4], [1.0, 2.0])))


def test_the_grids_fixed_seconds_are_its_batched_steps_at_the_smallest_fixed_cost(bundle, tmp_path):
    g = pd.DataFrame({"run_steps": [4000, 1000], "group_steps": [1000, 500], "tflop": [1.0, 0.5],
                      "seconds_at_gemm_rate": [5.0, 2.5], "cores": [2, 2]})
    assert R.with_fixed_seconds(g, pd.DataFrame({"fixed_ms": [6.0, 4.0]}))["fixed_seconds"].tolist() == \
        pytest.approx([2.0, 1.0])                                                     # 4 ms x steps / 2 cores
    t = R.measure(bundle, CLASSES, "M4_end", [1, 2], min_seconds=0.05, dataset="shapes")
    t.to_csv(tmp_path / "bench_coop_roofline.csv", index=False)
    R.with_fixed_seconds(g, t).to_csv(tmp_path / "bench_coop_roofline_grid.csv", index=False)
    row = RUN_ALL.other_ratios(tmp_path)[-1]
    expected = t["fixed_ms"].min() * 1500 / 1e3 / 2                                   # 1,500 steps on 2 cores, s
    assert "3.3 runs per batched step" in row[1]
    assert f"1.5 k batched steps alone about {expected:.0f} s" in row[1]


def test_a_negative_fitted_fixed_cost_is_reported_as_noise_not_as_a_cost(tmp_path):
    """A line through noisy step times can cross zero: that intercept is no cost, so the summary says the fit
    did not split, and the grid's fixed seconds come from the variants whose intercept is a cost."""
    g = pd.DataFrame({"run_steps": [4000], "group_steps": [1000], "tflop": [1.0], "seconds_at_gemm_rate": [5.0],
                      "cores": [2]})
    assert R.with_fixed_seconds(g, pd.DataFrame({"fixed_ms": [-2.6, 4.0]}))["fixed_seconds"].tolist() == [2.0]
    assert math.isnan(R.with_fixed_seconds(g, pd.DataFrame({"fixed_ms": [-2.6]}))["fixed_seconds"].iloc[0])
    runs = [1, 3, 9, 15]
    ms = [14.2, 11.5, 10.2, 12.3]                                   # per run-step: R = 15 ran in a slow moment
    fixed, per_run = R.step_cost_fit(runs, [m * r for m, r in zip(ms, runs)])
    assert fixed < 0
    pd.DataFrame({"dataset": "shapes", "threads": 1, "variant": "M16_end_csc", "precision": "fp32", "runs": runs,
                  "ms_per_run_step": ms, "gflop_per_run_step": 0.8, "achieved_gflops": 60.0, "gemm_gflops": 170.0,
                  "speedup_vs_1": [14.2 / m for m in ms], "ceiling_vs_1": 3.0, "fixed_ms": fixed,
                  "per_run_ms": per_run}).to_csv(tmp_path / "bench_coop_roofline.csv", index=False)
    R.with_fixed_seconds(g, pd.read_csv(tmp_path / "bench_coop_roofline.csv")).to_csv(
        tmp_path / "bench_coop_roofline_grid.csv", index=False)
    rows = dict(RUN_ALL.other_ratios(tmp_path))
    fit = next(v for k, v in rows.items() if "fixed cost per step" in k)
    assert fit.startswith(f"not split this run: the line's intercept is {fixed:.2f} ms")
    grid = next(v for k, v in rows.items() if k.startswith("notebook 03's CoOp grid"))
    assert "alone about" not in grid                                 # no fixed seconds from a negative intercept


def test_the_notebook_grid_counts_coops_run_steps(bundle):
    """Run-steps by hand: epochs(K) x steps per epoch (K C // 32 with drop_last, 1 below a batch) x seeds;
    epochs(K) is the table's entry at the largest key <= K (the tiny profile gives K = 1 only)."""
    from vlmlab import params

    p = params.load("03_coop_shots", "tiny")
    table = p["epochs"]
    g = R.notebook_grid(bundle, gemm=100.0, cores=2, profile="tiny")
    assert len(g) == len(p["datasets"]) * len(p["variants"])
    for row in g.itertuples():
        v = parse_variant(next(s for s in p["variants"] if parse_variant(s).name == row.variant))
        per_seed = sum(table[max(e for e in table if e <= k)] * max(1, k * row.classes // 32)
                       for k in v.shots_or(p["shots"]))
        steps = per_seed * len(p["seeds"])
        assert row.run_steps == steps
        assert row.dataset_group_steps == max(table[max(e for e in table if e <= k)] * max(1, k * row.classes // 32)
                                              for k in v.shots_or(p["shots"]))      # the group's longest run
    # stack_runs "datasets" (the default): a variant's batched steps are its longest run's over the datasets
    by_variant = g.groupby("variant")
    assert (by_variant["group_steps"].sum() == by_variant["dataset_group_steps"].max()).all()
    assert ((g["group_steps"] == 0) | (g["group_steps"] == g["dataset_group_steps"])).all()
    per_dataset = R.notebook_grid(bundle, gemm=100.0, cores=2, profile="tiny", overrides={"stack_runs": "dataset"})
    assert per_dataset["group_steps"].tolist() == g["dataset_group_steps"].tolist()
    assert g["tflop"].tolist() == pytest.approx((g["run_steps"] * g["gflop_per_run_step"] / 1e3).tolist())
    assert g["seconds_at_gemm_rate"].tolist() == pytest.approx((g["tflop"] * 1e3 / 200.0).tolist())


def test_the_notebook_grid_takes_epochs_by_dataset_under_the_sweeps_dataset_name(bundle):
    """run_sweep looks up ``epochs_by_dataset`` by the split's name ("objects", not "world:objects")."""
    g = R.notebook_grid(bundle, gemm=100.0, cores=2, profile="tiny",
                        overrides={"epochs_by_dataset": {"objects": {1: 7}}})
    base = R.notebook_grid(bundle, gemm=100.0, cores=2, profile="tiny")
    objects, other = g["dataset"] == "objects", g["dataset"] != "objects"
    assert objects.any() and other.any()
    assert (g.loc[objects, "run_steps"].to_numpy() * 2 == base.loc[objects, "run_steps"].to_numpy() * 7).all()
    assert g.loc[other, "run_steps"].tolist() == base.loc[other, "run_steps"].tolist()


@pytest.mark.skipif("not __import__('vlmlab.runtime').runtime.cpu_has_bf16()", reason="this CPU has no bf16 kernels")
def test_bf16_counts_the_same_flops_against_a_bf16_gemm(bundle, tmp_path):
    import dataclasses
    t32 = R.measure(bundle, CLASSES, "M4_end", [1], min_seconds=0.05, dataset="shapes")
    t16 = R.measure(dataclasses.replace(bundle, precision="bf16"), CLASSES, "M4_end", [1], min_seconds=0.05,
                    dataset="shapes")
    assert (t32["precision"].iloc[0], t16["precision"].iloc[0]) == ("fp32", "bf16")
    assert t16["gflop_per_run_step"].iloc[0] == pytest.approx(t32["gflop_per_run_step"].iloc[0])  # the same products
    t16.to_csv(tmp_path / "bench_coop_roofline_bf16.csv", index=False)
    (row,) = RUN_ALL.other_ratios(tmp_path)
    assert "bf16" in row[0] and "bf16 GEMM rate" in row[0]


def test_the_step_takes_its_text_pass_from_features(bundle):
    """``--compile`` swaps the text pass: the step calls the one it is given, with the same arguments."""
    learner = _learner(bundle, "M4_end")
    calls = []

    def spy(lrn, ctx):
        calls.append(ctx.shape)
        return text_features(lrn, ctx)
    assert torch.equal(R.step_fn(learner, 2, 10.0, features=spy)(), R.step_fn(learner, 2, 10.0)())
    assert calls == [(2, *learner.ctx.shape)]


def test_measure_compiled_reports_the_gradient_difference_from_eager(bundle):
    """With the identity as compiler the step is eager's: no difference; a pass scaled by 1 + 1e-3 moves
    the gradient by a known, nonzero amount."""
    same = R.measure_compiled(bundle, CLASSES, "M4_end", [1, 2], 0.05, compiler=lambda fn: fn)
    assert list(same["runs"]) == [1, 2] and (same["grad_max_rel_diff"] == 0).all()
    assert (same["ms_per_run_step_compiled"] > 0).all() and (same["speedup_compiled"] > 0).all()

    learner, scale = R.variant_learner(bundle, CLASSES, "M4_end")
    scaled = lambda fn: (lambda lrn, ctx: fn(lrn, ctx) * (1 + 1e-3))                   # noqa: E731
    eager = R.step_fn(learner, 1, scale)()
    moved = R.step_fn(learner, 1, scale, features=scaled(text_features))()
    expected = float((moved - eager).abs().max() / eager.abs().max())
    assert expected > 0
    got = R.measure_compiled(bundle, CLASSES, "M4_end", [1], 0.05, compiler=scaled)["grad_max_rel_diff"].iloc[0]
    assert got == pytest.approx(expected)


def test_pure_bf16_casts_a_copy_and_its_gradient_stays_near_the_autocast_ones(bundle):
    learner = _learner(bundle, "M4_end")
    pure = R.pure_bf16(learner)
    assert pure.ctx.dtype == torch.bfloat16 and learner.ctx.dtype == torch.float32
    for tower, dtype in ((pure.tower, torch.bfloat16), (learner.tower, torch.float32)):
        assert {q.dtype for q in tower.transformer.parameters()} == {dtype}
        assert tower.positional_embedding.dtype == tower.token_embedding.weight.dtype == dtype
    t = R.measure_pure_bf16(bundle, CLASSES, "M4_end", [1, 2], 0.05)
    assert t["runs"].tolist() == [1, 2] and (t["speedup_pure_bf16"] > 0).all()
    assert ((t["grad_rel_diff"] > 0) & (t["grad_rel_diff"] < 0.05)).all()          # bf16's rounding, not 0
