"""Batched CoOp (``vlmlab.coop.batched``) against one-run-at-a-time ``train_coop``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vlmlab.coop import CoOpConfig, TrainSet, coop_logits, parse_variant, run_sweep, train_coop, train_coop_batched
from vlmlab.coop.batched import _sgd
from vlmlab.coop.data import Splits
from vlmlab.coop.jobs import BatchJob, Job, ProbeJob, batch_jobs, probe_key
from vlmlab.coop.text_batch import (prefix_length, prompt_parts, stacked_text_features, supports_prefix_groups,
                                    text_features)
from vlmlab.coop.train import build_learner
from vlmlab.metrics import accuracy

NAMES = ["cat", "dog", "sports car", "tree", "boat"]


@pytest.fixture(scope="module")
def bundle(make_tiny_clip):
    """Two text layers: the shared-prefix path runs a full block and then the readout-only last block."""
    return make_tiny_clip("vlmlab-test-coop-batched", context_length=24, text_layers=2)


def _train(bundle, shots: int, seed: int, n_views: int = 3) -> TrainSet:
    g = torch.Generator().manual_seed(100 + seed)
    y = torch.arange(len(NAMES)).repeat(shots)
    return TrainSet(y, view_feats=F.normalize(torch.randn(len(y), n_views, bundle.embed_dim, generator=g), dim=-1))


def _world_split(name: str = "digits", n_train: int = 40, n_test: int = 30) -> Splits:
    """A small world dataset as the sweep loads it (32 px, world seed 0; 40 validation images)."""
    from vlmlab import world
    load = lambda split, n: world.load(name, split, n=n, seed=0, size=32)  # noqa: E731
    test = load("test", n_test)
    return Splits(name, f"world:{name}", load("train", n_train), load("val", 40), test, list(test.classnames),
                  test.template)


def _stop_at(monkeypatch, cls, k: int):
    """``cls.run`` raises KeyboardInterrupt at its ``k``-th call (an interrupted sweep); returns the real ``run``."""
    real, calls = cls.run, []

    def run(self, b):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return real(self, b)

    monkeypatch.setattr(cls, "run", run)
    return real


VARIANTS = {"UC end": {}, "UC middle": {"position": "middle"}, "CSC end": {"csc": True},
            "UC front": {"position": "front"}, "UC phrase": {"ctx_init": "a photo of a"}}


@pytest.mark.parametrize("variant", ["UC end", "UC middle", "CSC end"])
def test_batched_group_equals_sequential_runs(bundle, variant):
    # 3 runs: different seeds, shots 1 / 2 / 4 -> 1, 1, 2 steps per epoch and 3, 4, 4 epochs (8 steps at most)
    cfg = CoOpConfig(n_ctx=4, n_views=3, batch_size=8, epochs={1: 3, 2: 4}, **VARIANTS[variant])
    shots, seeds = [1, 2, 4], [1, 2, 3]
    trains = [_train(bundle, k, s) for k, s in zip(shots, seeds)]
    seq = [train_coop(bundle, NAMES, t, cfg, seed=s, shots=k) for t, s, k in zip(trains, seeds, shots)]
    bat = train_coop_batched(bundle, NAMES, trains, cfg, seeds, shots)
    test = F.normalize(torch.randn(60, bundle.embed_dim, generator=torch.Generator().manual_seed(7)), dim=-1)
    labels = torch.arange(60) % len(NAMES)
    assert [r.steps for r in bat] == [r.steps for r in seq] == [3, 4, 8]
    for a, b in zip(seq, bat):
        assert (a.learner.ctx - a.learner.ctx_initial).abs().max() > 1e-3            # trained, not the init
        torch.testing.assert_close(b.learner.ctx, a.learner.ctx, rtol=1e-4, atol=1e-5)
        assert [h["epoch"] for h in b.history] == [h["epoch"] for h in a.history]
        assert [h["lr"] for h in b.history] == [h["lr"] for h in a.history]
        assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history], rel=1e-4)
        assert accuracy(coop_logits(b.learner, test), labels) == accuracy(coop_logits(a.learner, test), labels)


def test_a_float16_context_is_stepped_in_float16_and_batched_equals_sequential(bundle):
    # CoOp's PREC fp16 keeps the context in fp16 and SGD steps it there; the batched trainer rounds each
    # SGD update to fp16 as torch.optim.SGD does for an fp16 parameter
    cfg = CoOpConfig(n_ctx=4, n_views=3, batch_size=8, epochs={1: 3, 2: 4}, ctx_dtype="float16")
    shots, seeds = [1, 2], [1, 2]
    trains = [_train(bundle, k, s) for k, s in zip(shots, seeds)]
    seq = [train_coop(bundle, NAMES, t, cfg, seed=s, shots=k) for t, s, k in zip(trains, seeds, shots)]
    bat = train_coop_batched(bundle, NAMES, trains, cfg, seeds, shots)
    fp32 = train_coop(bundle, NAMES, trains[0], cfg.replace(ctx_dtype="float32"), seed=1, shots=1)
    for a, b in zip(seq, bat):
        assert a.learner.ctx.dtype == b.learner.ctx.dtype == a.learner.ctx_initial.dtype == torch.float16
        assert (a.learner.ctx.float() - a.learner.ctx_initial.float()).abs().max() > 1e-3
        torch.testing.assert_close(b.learner.ctx.float(), a.learner.ctx.float(), rtol=2e-3, atol=1e-4)
    torch.testing.assert_close(seq[0].learner.ctx_initial, fp32.learner.ctx_initial.half())   # the init, rounded
    assert not torch.equal(seq[0].learner.ctx.float(), fp32.learner.ctx)                      # steps rounded too
    torch.testing.assert_close(seq[0].learner.ctx.float(), fp32.learner.ctx, rtol=0.05, atol=2e-3)
    with pytest.raises(ValueError, match="ctx_dtype"):
        CoOpConfig(ctx_dtype="bfloat16")


def test_the_auto_context_dtype_is_coops_rule_the_models_dtype(bundle, monkeypatch):
    import vlmlab.coop.train as train
    assert train.context_dtype(bundle, CoOpConfig()) == torch.float32                     # an fp32 bundle
    assert train.context_dtype(bundle, CoOpConfig(ctx_dtype="float16")) == torch.float16
    for run, dtype in (("bf16", torch.float32), ("fp16", torch.float16)):   # bf16 autocast: CoOp's amp; fp16: PREC fp16
        monkeypatch.setattr(train, "effective_precision", lambda device, precision, run=run: run)
        assert train.context_dtype(bundle, CoOpConfig()) == dtype
        assert build_learner(bundle, NAMES, CoOpConfig(n_ctx=4), 0).ctx.dtype == dtype
    assert train.context_dtype(bundle, CoOpConfig(ctx_dtype="float32")) == torch.float32


@pytest.mark.skipif("not __import__('vlmlab.runtime').runtime.cpu_has_bf16()", reason="this CPU has no bf16 kernels")
def test_in_bf16_a_batched_group_matches_sequential_runs_to_bf16_rounding(bundle):
    """bf16 products may round differently with the batch's row count (oneDNN picks kernels by shape), so
    batched and sequential runs agree to bf16's rounding, not fp32's: each run's gap must stay a small
    fraction of how far its context moved. On the embedded model 40 steps leave gaps of 0.5 % of the move
    (fp32: 5e-7) and 2,000 steps up to 0.8 points of test accuracy (``make bench``); this tiny tower
    happens to round alike."""
    import dataclasses
    b16 = dataclasses.replace(bundle, precision="bf16")
    cfg = CoOpConfig(n_ctx=4, n_views=3, batch_size=8, epochs={1: 3, 2: 4})
    shots, seeds = [1, 2, 4], [1, 2, 3]
    trains = [_train(bundle, k, s) for k, s in zip(shots, seeds)]
    seq = [train_coop(b16, NAMES, t, cfg, seed=s, shots=k) for t, s, k in zip(trains, seeds, shots)]
    bat = train_coop_batched(b16, NAMES, trains, cfg, seeds, shots)
    fp32 = train_coop(bundle, NAMES, trains[2], cfg, seed=3, shots=4)
    assert not torch.equal(seq[2].learner.ctx, fp32.learner.ctx)                       # bf16 did run
    for a, b in zip(seq, bat):
        moved = (a.learner.ctx - a.learner.ctx_initial).norm()
        assert moved > 1e-2
        assert (b.learner.ctx - a.learner.ctx).norm() < 0.05 * moved


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_batched_text_features_equal_the_learners_forward(bundle, variant):
    cfg = CoOpConfig(n_ctx=4, **VARIANTS[variant])
    learners = [build_learner(bundle, NAMES, cfg, seed=s) for s in (1, 2)]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for l in learners:                                            # non-identity: far from the init
            l.ctx.add_(torch.randn(l.ctx.shape, generator=g))
    ctx = torch.stack([l.ctx.detach() for l in learners])
    torch.testing.assert_close(learners[0].prompts(ctx), torch.stack([l.prompts() for l in learners]))
    with torch.no_grad():
        ref = torch.stack([l(normalize=True) for l in learners])    # (R, C, D)
        torch.testing.assert_close(text_features(learners[0], ctx), ref, rtol=1e-4, atol=1e-5)
    # every design takes the grouped path on a causal tower; SOS alone is shared by CSC and the front position
    assert supports_prefix_groups(learners[0])
    assert prefix_length(learners[0]) == {"UC end": 5, "UC middle": 3, "UC phrase": 5}.get(variant, 1)


OTHER = ["red light", "big green hexagonal prism", "a"]     # other class count and name lengths (longer suffix)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pieces_of_other_classes_stacked_in_one_pass_equal_each_learners_forward(bundle, variant):
    """Runs of datasets with other classes (other C, other suffix lengths) share one text pass: each row
    attends to its own run's prefix, the padded suffix positions come after every EOS."""
    cfg = CoOpConfig(n_ctx=4, **VARIANTS[variant])
    g = torch.Generator().manual_seed(0)
    learners = {n: [build_learner(bundle, names, cfg, seed=s) for s in seeds]
                for n, names, seeds in (("a", NAMES, (1, 2)), ("b", OTHER, (3, 4, 5)))}
    assert learners["a"][0].tokens.shape[1] != learners["b"][0].tokens.shape[1]
    with torch.no_grad():
        for ls in learners.values():
            for l in ls:
                l.ctx.add_(torch.randn(l.ctx.shape, generator=g))
    ctxs = [torch.stack([l.ctx.detach() for l in ls]) for ls in learners.values()]
    with torch.no_grad():
        out = stacked_text_features([ls[0] for ls in learners.values()], ctxs)
        for z, ls in zip(out, learners.values()):
            torch.testing.assert_close(z, torch.stack([l(normalize=True) for l in ls]), rtol=1e-4, atol=1e-5)
        # one piece alone: the same as stacked with the other, to rounding
        torch.testing.assert_close(stacked_text_features([learners["b"][0]], ctxs[1:])[0], out[1], rtol=1e-5, atol=1e-6)
    leaves = [c.clone().requires_grad_(True) for c in ctxs]
    w = [torch.randn(z.shape, generator=g) for z in out]
    grads = torch.autograd.grad(sum((z * wi).sum() for z, wi in zip(stacked_text_features(
        [ls[0] for ls in learners.values()], leaves), w)), leaves)
    for grad, c, ls, wi in zip(grads, ctxs, learners.values(), w):
        leaf = c.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad((text_features(ls[0], leaf) * wi).sum(), leaf)
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["UC end", "UC middle", "CSC end"])
def test_a_group_of_two_datasets_equals_sequential_runs(bundle, variant):
    cfg = CoOpConfig(n_ctx=4, n_views=3, batch_size=4, epochs={1: 3, 2: 4}, **VARIANTS[variant])
    names = [NAMES, OTHER, NAMES, OTHER]
    shots, seeds = [1, 2, 2, 1], [1, 2, 3, 4]
    trains = []
    for n, k, s in zip(names, shots, seeds):
        g = torch.Generator().manual_seed(100 + s)
        y = torch.arange(len(n)).repeat(k)
        feats = F.normalize(torch.randn(len(y), 3, bundle.embed_dim, generator=g), dim=-1)
        trains.append(TrainSet(y, view_feats=feats))
    seq = [train_coop(bundle, n, t, cfg, seed=s, shots=k) for n, t, s, k in zip(names, trains, seeds, shots)]
    bat = train_coop_batched(bundle, names, trains, cfg, seeds, shots)
    assert [r.steps for r in bat] == [r.steps for r in seq] == [3, 4, 8, 3]   # 5 / 3 classes, batch 4, 3 / 4 epochs
    for n, a, b in zip(names, seq, bat):
        assert b.learner.classnames == a.learner.classnames == n
        assert (a.learner.ctx - a.learner.ctx_initial).abs().max() > 1e-3
        torch.testing.assert_close(b.learner.ctx, a.learner.ctx, rtol=1e-4, atol=1e-5)
        assert [h["loss"] for h in b.history] == pytest.approx([h["loss"] for h in a.history], rel=1e-4)
    with pytest.raises(ValueError, match="one per run"):
        train_coop_batched(bundle, names[:3], trains, cfg, seeds, shots)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_prompt_parts_are_the_prompts_split_bit_for_bit(bundle, variant):
    """The end design's shortcut (constant suffix, no (R, C, L, W) prompt tensor) gives the same prefixes,
    suffixes and context gradient as slicing the full prompts, to the bit; only it drops the suffix's grad."""
    cfg = CoOpConfig(n_ctx=4, **VARIANTS[variant])
    learner = build_learner(bundle, NAMES, cfg, seed=1)
    g = torch.Generator().manual_seed(0)
    ctx = torch.stack([learner.ctx.detach() + torch.randn(learner.ctx.shape, generator=g) for _ in range(3)])
    weights = [torch.randn(3, n, learner.ctx.shape[-1], generator=g) for n in (prefix_length(learner), 1)]
    grads = []
    for split in (True, False):
        leaf = ctx.clone().requires_grad_(True)
        if split:
            pre, suf = prompt_parts(learner, leaf)
        else:
            full = learner.prompts(leaf)
            pre, suf = full[:, 0, :prefix_length(learner)], full[:, :, prefix_length(learner):]
        parts = (pre.detach(), suf.detach())
        grads.append((parts, torch.autograd.grad((pre * weights[0]).sum() + (suf[:, :, :1] * weights[1][:, None]).sum(),
                                                 leaf)[0]))
        if split:
            assert suf.requires_grad == (variant not in ("UC end", "UC phrase"))
    (p1, g1), (p2, g2) = grads
    assert torch.equal(p1[0], p2[0]) and torch.equal(p1[1], p2[1]) and torch.equal(g1, g2)


def test_middle_and_front_prompts_are_built_position_by_position(bundle):
    """The gathered layout equals CoOp's per-class concatenation, and each context vector's gradient is the
    sum over classes of the gradient at its position (each source position is used once per class)."""
    for position in ("middle", "front"):
        learner = build_learner(bundle, NAMES, CoOpConfig(n_ctx=4, position=position), seed=1)
        ctx = learner.ctx.detach().clone().requires_grad_(True)
        out = learner.prompts(ctx.unsqueeze(0))[0]                                   # (C, L, W)
        pre, suf = learner.token_prefix, learner.token_suffix
        for c, n in enumerate(learner.name_lens):
            parts = ([pre[c], ctx[:2], suf[c, :n], ctx[2:], suf[c, n:]] if position == "middle"
                     else [pre[c], suf[c, :n], ctx, suf[c, n:]])
            assert torch.equal(out[c], torch.cat(parts).detach())
        w = torch.randn(out.shape)
        (g,) = torch.autograd.grad((out * w).sum(), ctx)
        at = [([1, 2] + [3 + n, 4 + n]) if position == "middle" else list(range(1 + n, 5 + n)) for n in learner.name_lens]
        torch.testing.assert_close(g, sum(w[c, at[c]] for c in range(len(NAMES))))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sgd_rows_follow_torch_sgd_and_others_stay(dtype):
    # float16: CoOp's fp16 context, stepped by torch.optim.SGD in its own dtype
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 2, 4, generator=g).to(dtype)
    grads = [torch.randn(3, 2, 4, generator=g).mul(1e-2).to(dtype) for _ in range(3)]
    lr, mom, wd = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.9, 0.5, 0.0]), torch.tensor([5e-4, 0.0, 1e-2])
    ctx, buf = p0.clone(), torch.zeros_like(p0)
    a = torch.tensor([0, 2])                                          # row 1 is done: never touched
    for gr in grads:
        _sgd(ctx, gr[a], buf, a, lr[a], mom[a], wd[a])
    for r in (0, 2):
        p = torch.nn.Parameter(p0[r].clone())
        opt = torch.optim.SGD([p], lr=float(lr[r]), momentum=float(mom[r]), weight_decay=float(wd[r]))
        for gr in grads:
            p.grad = gr[r].clone()
            opt.step()
        assert ctx.dtype == p.dtype == dtype
        torch.testing.assert_close(ctx[r], p.detach(), rtol=0, atol=0) if dtype == torch.float16 else \
            torch.testing.assert_close(ctx[r], p.detach())
    assert torch.equal(ctx[1], p0[1]) and torch.equal(buf[1], torch.zeros_like(buf[1]))


def test_mixed_prompt_designs_and_exact_mode_are_refused(bundle):
    trains = [_train(bundle, 1, s) for s in (1, 2)]
    with pytest.raises(ValueError, match="n_ctx"):
        train_coop_batched(bundle, NAMES, trains, [CoOpConfig(n_ctx=4), CoOpConfig(n_ctx=2)], [1, 2])
    with pytest.raises(ValueError, match="mode='cached'"):
        train_coop_batched(bundle, NAMES, trains, CoOpConfig(n_ctx=4, mode="exact"), [1, 2])


def _job(dataset, n_ctx, seed, mode="cached", names=NAMES):
    cfg = CoOpConfig(n_ctx=n_ctx, mode=mode)
    return Job(dataset, None, 1, seed, list(names), TrainSet(torch.zeros(1)), torch.zeros(1), torch.zeros(1), cfg, 1)


def test_batch_jobs_groups_by_dataset_and_design_and_caps_rows():
    probe = ProbeJob("a", 1, 0, 5, (torch.zeros(1), torch.zeros(1)), (torch.zeros(1), torch.zeros(1)),
                     torch.zeros(1), torch.zeros(1))
    jobs = [_job("a", 4, 1), _job("a", 8, 1), probe, _job("a", 4, 2), _job("b", 4, 1), _job("a", 4, 3, "exact"),
            _job("a", 4, 3)]
    units = batch_jobs(jobs, stack="dataset")
    assert [pos for pos, _ in units] == [[0, 3, 6], [1], [2], [4], [5]]
    assert [type(u).__name__ for _, u in units] == ["BatchJob", "BatchJob", "ProbeJob", "BatchJob", "Job"]
    capped = batch_jobs(jobs, max_rows=2 * len(NAMES), stack="dataset")   # 2 runs of 5 classes per step at most
    assert [pos for pos, _ in capped] == [[0, 3], [6], [1], [2], [4], [5]]
    assert all(isinstance(u, BatchJob) for pos, u in capped if len(pos) > 1)
    with pytest.raises(ValueError, match="stack"):
        batch_jobs(jobs, stack="seed")


def test_batch_jobs_stacks_a_designs_runs_across_datasets_and_caps_their_summed_classes():
    few = NAMES[:2]
    jobs = [_job("a", 4, 1), _job("a", 8, 1), _job("b", 4, 1, names=few), _job("c", 4, 1, "exact"),
            _job("b", 4, 2, names=few), _job("a", 4, 2)]
    units = batch_jobs(jobs)                                          # stack="datasets", the default
    assert [pos for pos, _ in units] == [[0, 2, 4, 5], [1], [3]]
    assert [type(u).__name__ for _, u in units] == ["BatchJob", "BatchJob", "Job"]
    # 5 + 2 + 2 classes fit in 9 rows; the fourth run (5 classes) starts the next batch
    assert [pos for pos, _ in batch_jobs(jobs, max_rows=9)] == [[0, 2, 4], [5], [1], [3]]
    assert [pos for pos, _ in batch_jobs(jobs, max_rows=4)] == [[0], [2, 4], [5], [1], [3]]   # one run at least


def test_job_costs_follow_the_rows_tokens_and_a_group_pays_a_fixed_cost_per_step():
    from vlmlab.coop.jobs import STEP_COST, row_tokens

    def job(shots, **kw):
        cfg = CoOpConfig(n_ctx=16, batch_size=4, **kw)
        y = torch.arange(len(NAMES)).repeat(shots)
        return Job("a", None, shots, 1, NAMES, TrainSet(y), torch.zeros(1), torch.zeros(1), cfg, 3)

    # a class row runs its own positions: a unified end context shares all 16, the middle 8, CSC none
    assert [row_tokens(job(1, **kw).cfg) for kw in ({}, {"position": "middle"}, {"csc": True})] == [6, 14, 22]
    end, csc = job(4), job(4, csc=True)
    assert end.steps() == 3 * (20 // 4) and end.cost() == 15 * 5 * 6 and csc.cost() == 15 * 5 * 22
    group = BatchJob([job(1), job(4)])                                # 3 and 15 steps: 15 batched steps
    assert group.cost() == STEP_COST * 15 + job(1).cost() + job(4).cost()
    assert BatchJob([job(4, csc=True)]).cost() > BatchJob([job(4, position="middle")]).cost() > BatchJob([end]).cost()


def test_sweep_tables_equal_with_and_without_batching(bundle):
    splits = [_world_split(name) for name in ("digits", "colours")]     # 10 and other class names: two pieces
    cfg = CoOpConfig(n_views=2, epochs={1: 2, 2: 3})
    kw = dict(shots=[1, 2], seeds=[1, 2], variants=["M4_end", "M2_middle_csc@2"], cfg=cfg,
              methods=("zero_shot", "coop"))
    one = run_sweep(bundle, splits, batch_runs=False, **kw)
    for stack in ("datasets", "dataset"):
        many = run_sweep(bundle, splits, batch_runs=True, stack_runs=stack, **kw)
        assert many.timing["stack_runs"] == stack
        assert list(many.table.columns) == list(one.table.columns) and list(many.runs.columns) == list(one.runs.columns)
        keys = ["dataset", "variant", "shots", "seed", "epochs", "steps"]
        pd.testing.assert_frame_equal(many.runs[keys], one.runs[keys])
        assert many.table["accuracy"].tolist() == pytest.approx(one.table["accuracy"].tolist(), abs=1e-9)
        assert many.runs["final_loss"].tolist() == pytest.approx(one.runs["final_loss"].tolist(), rel=1e-4)
        assert sorted(many.contexts) == sorted(one.contexts)
        for k, ctx in one.contexts.items():
            torch.testing.assert_close(many.contexts[k], ctx, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stack"):
        run_sweep(bundle, splits, stack_runs="seeds", **kw)


def test_trained_runs_are_kept_in_the_cache_and_a_changed_input_retrains(bundle, tmp_path, monkeypatch):
    from vlmlab.coop import jobs as coop_jobs
    from vlmlab.features import FeatureCache
    split = _world_split()
    cache = FeatureCache(tmp_path)
    kw = dict(shots=[1, 2], seeds=[1, 2], variants=["M4_end", "M2_middle_csc@2"], methods=("zero_shot", "coop"),
              cache=cache)
    cfg = CoOpConfig(n_views=2, epochs={1: 2, 2: 3})
    first = run_sweep(bundle, [split], cfg=cfg, **kw)
    assert first.timing["runs_from_cache"] == 0
    again = run_sweep(bundle, [split], cfg=cfg, **kw)
    assert again.timing["runs_from_cache"] == len(first.runs) == 6
    pd.testing.assert_frame_equal(again.table, first.table)
    pd.testing.assert_frame_equal(again.runs, first.runs)
    for k, ctx in first.contexts.items():
        assert torch.equal(again.contexts[k], ctx)
    # another learning rate, the single-run trainer, no run cache, other training code: all train afresh
    assert run_sweep(bundle, [split], cfg=cfg.replace(lr=0.01), **kw).timing["runs_from_cache"] == 0
    assert run_sweep(bundle, [split], cfg=cfg, batch_runs=False, **kw).timing["runs_from_cache"] == 0
    assert run_sweep(bundle, [split], cfg=cfg, stack_runs="dataset", **kw).timing["runs_from_cache"] == 0
    assert run_sweep(bundle, [split], cfg=cfg, cache_runs=False, **kw).timing["runs_from_cache"] == 0
    monkeypatch.setattr(coop_jobs, "_code_fingerprint", lambda: "edited")
    assert run_sweep(bundle, [split], cfg=cfg, **kw).timing["runs_from_cache"] == 0


def test_an_interrupted_sweep_keeps_the_runs_that_finished(bundle, tmp_path, monkeypatch):
    from vlmlab.features import FeatureCache
    split = _world_split()
    kw = dict(shots=[1, 2], seeds=[1], variants=["M4_end", "M2_middle_csc"], methods=("coop",),
              cache=FeatureCache(tmp_path), cfg=CoOpConfig(n_views=2, epochs={1: 2, 2: 3}))
    real = _stop_at(monkeypatch, BatchJob, 2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(bundle, [split], **kw)
    monkeypatch.setattr(BatchJob, "run", real)
    assert run_sweep(bundle, [split], **kw).timing["runs_from_cache"] == 2    # the first group's 2 runs


def test_exact_mode_runs_are_kept_in_the_cache_and_an_interrupted_sweep_resumes(bundle, tmp_path, monkeypatch):
    """The paper profile's mode: each run is stored as it finishes, so a stopped sweep loses only the run it was
    in, and a rerun loads every run it finished with the contexts and accuracies of a sweep without a cache."""
    from vlmlab.features import FeatureCache
    split = _world_split()
    cfg = CoOpConfig(mode="exact", epochs={1: 2, 2: 2}, crop_scale=(0.5, 1.0))
    kw = dict(shots=[1, 2], seeds=[1], variants=["M4_end", "M2_middle_csc"], methods=("coop",), cfg=cfg)
    plain = run_sweep(bundle, [split], cache_runs=False, **kw)
    cache = FeatureCache(tmp_path)
    real = _stop_at(monkeypatch, Job, 3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(bundle, [split], cache=cache, **kw)
    monkeypatch.setattr(Job, "run", real)
    resumed = run_sweep(bundle, [split], cache=cache, **kw)
    assert resumed.timing["runs_from_cache"] == 2 and len(resumed.runs) == 4           # the 2 runs that finished
    trained = []
    monkeypatch.setattr(Job, "run", lambda self, b: trained.append(self) or real(self, b))
    again = run_sweep(bundle, [split], cache=cache, **kw)
    assert again.timing["runs_from_cache"] == 4 and trained == []
    for got in (resumed, again):
        pd.testing.assert_frame_equal(got.table, plain.table)
        for k, ctx in plain.contexts.items():
            assert torch.equal(got.contexts[k], ctx)
    # another crop scale: trained again
    assert run_sweep(bundle, [split], cache=cache, **{**kw, "cfg": cfg.replace(crop_scale=(0.08, 1.0))}
                     ).timing["runs_from_cache"] == 0


def test_an_exact_mode_run_is_keyed_by_its_images_shots_and_view_seed(bundle):
    from vlmlab.coop.jobs import run_key

    class Images:
        key = "fake/train/n10/sha1:abc"

    def job(data=Images(), indices=(0, 3), labels=(0, 1), view_seed=1, mode="exact", **cfg):
        train = TrainSet(torch.tensor(labels), data=data, indices=torch.tensor(indices), view_seed=view_seed)
        return Job("a", None, 1, 1, NAMES[:2], train, torch.zeros(1), torch.zeros(1),
                   CoOpConfig(n_ctx=4, mode=mode, **cfg), 2)

    base = run_key(bundle, job(), "datasets", code="c")
    assert base["batched"] is False                           # an exact-mode run is always trained alone
    assert base["train"] == {"images": Images.key, "view_seed": 1,
                             "shots": base["train"]["shots"]} and len(base["train"]["shots"]) == 40
    assert run_key(bundle, job(), False, code="c") == base
    other = type("Other", (), {"key": "fake/train/n10/sha1:def"})()
    for changed in (job(data=other), job(indices=(0, 4)), job(labels=(1, 0)), job(view_seed=2),
                    job(crop_scale=(0.5, 1.0))):
        assert run_key(bundle, changed, False, code="c") != base
    assert run_key(bundle, job(), False, code="edited") != base
    assert run_key(bundle, job(data=object()), False, code="c") is None       # images without a key: not kept
    assert run_key(bundle, job(mode="cached"), False, code="c") is None       # cached mode without view features


def test_linear_probe_search_is_kept_in_the_cache_and_the_refit_is_the_same_probe(bundle, tmp_path, monkeypatch):
    from vlmlab.coop import jobs as coop_jobs
    from vlmlab.features import FeatureCache
    split = _world_split()
    kw = dict(shots=[1, 2], seeds=[1, 2], variants=["M4_end"], methods=("linear_probe",), cache=FeatureCache(tmp_path),
              cfg=CoOpConfig(n_views=2, epochs={1: 2}), lp_refine=3)
    first = run_sweep(bundle, [split], **kw)
    assert first.timing["probes_from_cache"] == 0
    searches = []
    real = coop_jobs.fit_linear_probe
    monkeypatch.setattr(coop_jobs, "fit_linear_probe", lambda *a, **k: searches.append(k.get("C")) or real(*a, **k))
    again = run_sweep(bundle, [split], **kw)
    assert again.timing["probes_from_cache"] == 4 and again.timing["runs_from_cache"] == 0
    assert len(searches) == 4 and None not in searches                       # one fit each, at a stored C
    pd.testing.assert_frame_equal(again.table, first.table)
    from vlmlab.probe import COARSE_C
    assert any(p.C not in COARSE_C for p in first.linear_probes.values())     # a refined C is among them
    for key, probe in first.linear_probes.items():
        got = again.linear_probes[key]
        assert (got.C, got.val_acc) == (probe.C, probe.val_acc)
        np.testing.assert_array_equal(got.clf.coef_, probe.clf.coef_)
    # other rounds of the search, or edited probe code: searched afresh
    assert run_sweep(bundle, [split], **{**kw, "lp_refine": 2}).timing["probes_from_cache"] == 0
    monkeypatch.setattr(coop_jobs, "_probe_code", lambda: "edited")
    assert run_sweep(bundle, [split], **kw).timing["probes_from_cache"] == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_restored_probe_equals_the_searched_one_on_an_ill_conditioned_problem(dtype):
    """Large C: with float32 features the fit depends on whether C reaches scikit-learn as a numpy or a Python
    float, so the restore must pass it as the search did; float64 (lpclip's) must restore equal too."""
    g = torch.Generator().manual_seed(0)
    n_cls, d = 20, 128
    centres = torch.randn(n_cls, d, generator=g)
    def draw(n):  # noqa: E306
        y = torch.arange(n_cls).repeat(n)
        return F.normalize(centres[y] + 4.0 * torch.randn(len(y), d, generator=g), dim=-1), y
    job = ProbeJob("toy", 16, 1, n_cls, draw(16), draw(4), *draw(20), dtype=dtype)
    searched = job.run()
    assert searched["probe"].clf.coef_.dtype == np.dtype(dtype)
    assert isinstance(searched["probe"].clf.C, np.floating)                 # a refined C (3162.3 here)
    restored = job.restore(job.stored(searched))
    assert restored["from_cache"] and restored["probe"].C == searched["probe"].C
    np.testing.assert_array_equal(restored["probe"].clf.coef_, searched["probe"].clf.coef_)
    assert restored["accuracy"] == searched["accuracy"]


def test_the_probe_cache_key_holds_the_fit_dtype():
    draw = lambda n: (torch.zeros(n, 4), torch.arange(n) % 2)  # noqa: E731
    a, b = (ProbeJob("toy", 1, 0, 2, draw(2), draw(2), *draw(4), dtype=t) for t in ("float64", "float32"))
    assert probe_key(a, "code")["dtype"] == "float64" and probe_key(a, "code") != probe_key(b, "code")


@pytest.mark.parametrize("nested", [False, True])
def test_each_shot_count_trains_on_its_own_draw_and_its_own_views(bundle, nested):
    """Independent draws (CoOp's) or nested ones: every job holds sample_few_shot's draw for its K, with the views
    and labels of exactly those items (views computed once for the union of the draws); the probes too, with
    ``lp_draws="coop"``."""
    from vlmlab.coop.augment import eval_features, view_features
    from vlmlab.coop.sweep import _jobs_for_seed
    from vlmlab.data.fewshot import sample_few_shot
    split = _world_split(n_train=60, n_test=10)
    test = split.test
    cfg = CoOpConfig(n_views=2, epochs={1: 1})
    jobs = _jobs_for_seed(bundle, split, eval_features(bundle, test), [1, 2, 4], 3, [parse_variant("M4_end")], cfg,
                          cfg.epochs, ("linear_probe", "coop"), 0, None, nested=nested, lp_draws="coop")
    y = torch.as_tensor(split.train.labels).long()
    seen = {}
    for job in jobs:
        idx = sample_few_shot(y, job.shots, 3, split.n_classes, nested=nested)
        if isinstance(job, ProbeJob):
            assert torch.equal(job.train[1], y[idx])
            continue
        seen[job.shots] = set(idx.tolist())
        assert torch.equal(job.train.indices, idx) and torch.equal(job.train.labels, y[idx])
        views = view_features(bundle, split.train, idx, 2, 3, scale=cfg.crop_scale)
        torch.testing.assert_close(job.train.view_feats, views, rtol=1e-5, atol=1e-6)
    assert sorted(seen) == [1, 2, 4]
    assert (seen[1] <= seen[2] <= seen[4]) == nested


def test_prefix_rows_copy_each_runs_prefix_to_its_class_rows():
    """Pieces (2 runs x 3 classes) and (1 run x 2 classes): rows run-major take runs 0,0,0,1,1,1,2,2."""
    from vlmlab.coop.text_batch import _row_runs

    y = torch.arange(3.0)[:, None, None] * torch.ones(3, 2, 4)
    rows = y.index_select(0, _row_runs([(2, 3), (1, 2)]))
    assert rows.shape == (8, 2, 4)
    assert rows[:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
