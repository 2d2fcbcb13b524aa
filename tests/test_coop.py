"""CoOp (vlmlab.coop): schedule, few-shot jobs, training modes, augmentation, nearest words, tables."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vlmlab.coop import (COLUMNS, CoOpConfig, TrainSet, Variant, lr_at, nearest_words, parse_variant, run_sweep,
                         summary_tables, train_coop)
from vlmlab.coop.augment import encode_augmented, view_features
from vlmlab.data.augment import crop_params, view_rng
from vlmlab.coop.data import Splits, dg_target
from vlmlab.coop.report import domain_generalization
from vlmlab.coop.sweep import _jobs_for_seed
from vlmlab.coop.train import build_learner, step_loss
from vlmlab.data.base import DatasetNotFound
from vlmlab.features import Features
from vlmlab.prompts import text_tower, zero_shot_weights

@pytest.fixture(scope="module")
def bundle(make_tiny_clip):
    """Context 24: room for CoOp's 16 context tokens plus a class name."""
    return make_tiny_clip("vlmlab-test-coop", context_length=24)


@pytest.fixture(scope="module")
def splits():
    from vlmlab import world
    load = lambda split, n: world.load("digits", split, n=n, seed=0, size=32)  # noqa: E731
    test = load("test", 40)
    return Splits("digits", "world:digits", load("train", 60), load("val", 40), test, list(test.classnames),
                  test.template)


# ---- schedule and config ------------------------------------------------------------------------

def test_lr_schedule_matches_dassl_warmup_then_torch_cosine():
    cfg, total = CoOpConfig(), 10
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    assert lr_at(0, total, cfg) == cfg.warmup_lr == 1e-5
    for epoch in range(1, total):                       # epoch k >= 1 runs at the cosine's (k - 1)-th value
        assert lr_at(epoch, total, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        cosine.step()
    assert lr_at(1, total, cfg) == pytest.approx(0.002)
    assert lr_at(6, total, cfg) == pytest.approx(0.001 * (1 + math.cos(math.pi * 5 / 10)))


def test_epochs_per_shot_count_follow_the_configs():
    cfg = CoOpConfig()
    assert [cfg.epochs_for(k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert cfg.epochs_for(3) == 100 and cfg.epochs_for(32) == 200
    assert CoOpConfig(epochs={1: 50}).epochs_for(16) == 50          # ImageNet: 50 for every K
    with pytest.raises(KeyError, match="n_ctxx"):
        cfg.replace(n_ctxx=4)
    with pytest.raises(ValueError, match="mode"):
        CoOpConfig(mode="fast")


def test_variant_shorthand():
    v = parse_variant("M16_mid_csc@8,16")
    assert (v.n_ctx, v.position, v.csc, v.init, v.shots) == (16, "middle", True, "random", (8, 16))
    assert parse_variant("M4_end_photo").init == "a photo of a"
    assert parse_variant({"n_ctx": 8, "position": "front"}) == Variant(8, "front")
    assert parse_variant("M16_end").name == "M16 end" and v.name == "M16 middle CSC"
    with pytest.raises(ValueError, match="unknown part"):
        parse_variant("M16_sideways")
    with pytest.raises(KeyError, match="ctx"):
        parse_variant({"ctx": 4})


# ---- few-shot jobs ------------------------------------------------------------------------------

def _jobs(bundle, splits, seed, shots=(1, 2, 4), variants=("M4_end",), nested=False):
    cfg = CoOpConfig(n_views=2, epochs={1: 1})
    test = Features(torch.zeros(0, bundle.embed_dim), torch.zeros(0, dtype=torch.long), "none")
    return _jobs_for_seed(bundle, splits, test, list(shots), seed, [parse_variant(v) for v in variants], cfg,
                          cfg.epochs, ("coop",), 1, None, nested=nested)


def test_nested_few_shot_jobs_are_per_class_nested_and_seed_deterministic(bundle, splits):
    a, b, c = (_jobs(bundle, splits, s, nested=True) for s in (1, 1, 2))
    for job in a:
        counts = torch.bincount(job.train.labels, minlength=splits.n_classes)
        assert torch.all(counts == job.shots)                                    # K per class
        assert torch.equal(job.train.labels, torch.as_tensor(splits.train.labels)[job.train.indices])
    assert all(torch.equal(x.train.indices, y.train.indices) for x, y in zip(a, b))
    assert not torch.equal(a[-1].train.indices, c[-1].train.indices)
    assert set(a[0].train.indices.tolist()) <= set(a[1].train.indices.tolist()) <= set(a[2].train.indices.tolist())
    # cached views are the views of exactly those items
    full = view_features(bundle, splits.train, a[-1].train.indices, 2, seed=1)
    torch.testing.assert_close(a[-1].train.view_feats, full)


# ---- augmentation and the two modes ------------------------------------------------------------

def test_crop_params_respect_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(400):
        top, left, h, w = crop_params(48, 64, rng)
        assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64
        fractions.append(h * w / (48 * 64))
        assert 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
    assert min(fractions) >= 0.08 * 0.9 and max(fractions) <= 1.0
    assert 0.4 < np.mean(fractions) < 0.65                     # E[U(0.08, 1)] = 0.54 (few rejections)
    assert crop_params(32, 32, view_rng(3, 7, 1)) == crop_params(32, 32, view_rng(3, 7, 1))


def test_file_crops_do_not_depend_on_the_decoding_threads(bundle, tmp_path):
    """augmented_inputs decodes and crops files in threads; each view has its own generator, so 1 or 4 threads (and
    any order of completion) give the same inputs, and view v of item i is the same in any batch."""
    from PIL import Image

    from vlmlab.data.augment import augmented_inputs
    from vlmlab.data.base import ImageDataset

    rng = np.random.default_rng(1)
    samples = []
    for i in range(6):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 50, 3), dtype=np.uint8)).save(path)
        samples.append((path, i % 2))
    ds = ImageDataset(samples, ["a", "b"], "files", root=tmp_path)
    idx, views = [5, 0, 3, 3, 1, 2, 4, 0], [0, 1, 2, 3, 0, 0, 7, 1]
    one = augmented_inputs(bundle, ds, idx, views, seed=9, workers=1)
    torch.testing.assert_close(augmented_inputs(bundle, ds, idx, views, seed=9, workers=4), one, rtol=0, atol=0)
    torch.testing.assert_close(augmented_inputs(bundle, ds, idx[2:4], views[2:4], seed=9, workers=4), one[2:4],
                               rtol=0, atol=0)
    assert (one[2] - one[3]).abs().max() > 1e-3                                       # views 2 and 3 of item 3 differ


def test_cached_views_are_the_exact_modes_augmentations(bundle, splits):
    idx = torch.tensor([0, 5, 9])
    cached = view_features(bundle, splits.train, idx, n_views=3, seed=4)            # (3, V, D)
    for v in range(3):
        torch.testing.assert_close(cached[:, v], encode_augmented(bundle, splits.train, idx.tolist(), [v] * 3, 4))
    assert (cached[:, 0] - cached[:, 1]).abs().max() > 1e-4                           # views differ


def test_cached_cycle_mode_reproduces_exact_training(bundle, splits):
    job = _jobs(bundle, splits, 1, shots=(4,))[0]
    epochs = 3
    views = view_features(bundle, splits.train, job.train.indices, n_views=epochs, seed=1)
    base = CoOpConfig(n_ctx=4, batch_size=16)
    exact = train_coop(bundle, splits.classnames, TrainSet(job.train.labels, data=splits.train,
                       indices=job.train.indices, view_seed=1), base.replace(mode="exact"), seed=5, epochs=epochs)
    cached = train_coop(bundle, splits.classnames, TrainSet(job.train.labels, view_feats=views),
                        base.replace(mode="cached", view_sampling="cycle"), seed=5, epochs=epochs)
    assert exact.steps == cached.steps == epochs * (40 // 16)                         # drop_last when n >= batch
    torch.testing.assert_close(cached.learner.ctx, exact.learner.ctx, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(exact.learner.ctx, build_learner(bundle, splits.classnames, base, 5).ctx)


@pytest.mark.parametrize("mode", ["exact", "cached"])
def test_a_run_stopped_after_an_epoch_resumes_to_the_result_of_one_never_stopped(bundle, splits, tmp_path,
                                                                                 monkeypatch, mode):
    """``train_coop``'s checkpoint: stopped in epoch 3 of 4, the rerun trains epochs 3-4 only and ends with the
    context, loss history and steps of a run never stopped (the views' draws and the sample order continue)."""
    import vlmlab.coop.train as T
    job = _jobs(bundle, splits, 1, shots=(4,))[0]
    views = view_features(bundle, splits.train, job.train.indices, n_views=3, seed=1)
    train = TrainSet(job.train.labels, view_feats=views, data=splits.train, indices=job.train.indices, view_seed=1)
    cfg = CoOpConfig(n_ctx=4, batch_size=16, mode=mode, epochs={1: 4})
    whole = train_coop(bundle, splits.classnames, train, cfg, seed=5, shots=4)
    ckpt, real, calls = tmp_path / "run.training.pt", T.lr_at, []

    def stop_in_epoch_3(epoch, total, c):                              # lr_at opens every epoch
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(epoch, total, c)

    monkeypatch.setattr(T, "lr_at", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_coop(bundle, splits.classnames, train, cfg, seed=5, shots=4, checkpoint=ckpt, checkpoint_every_s=0)
    monkeypatch.setattr(T, "lr_at", real)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    resumed = train_coop(bundle, splits.classnames, train, cfg, seed=5, shots=4, checkpoint=ckpt,
                         checkpoint_every_s=0)
    assert torch.equal(resumed.learner.ctx, whole.learner.ctx)
    assert resumed.history == whole.history and resumed.steps == whole.steps
    # another run's state (another seed) is not resumed
    other = train_coop(bundle, splits.classnames, train, cfg, seed=6, shots=4, checkpoint=ckpt)
    fresh = train_coop(bundle, splits.classnames, train, cfg, seed=6, shots=4)
    assert torch.equal(other.learner.ctx, fresh.learner.ctx)


def test_an_exact_run_stopped_mid_training_in_a_sweep_resumes_from_its_checkpoint(bundle, splits, tmp_path,
                                                                                   monkeypatch):
    """``run_units`` gives a run trained alone a checkpoint in the run cache; a rerun resumes it and deletes the
    file once the run is stored."""
    import functools

    import vlmlab.checkpoints as C
    import vlmlab.coop.jobs as J
    import vlmlab.coop.train as T
    from vlmlab.features import FeatureCache
    kw = dict(shots=[2], seeds=[1], variants=["M4_end"], methods=("coop",), cache=FeatureCache(tmp_path),
              cfg=CoOpConfig(mode="exact", epochs={1: 3}, batch_size=8))
    plain = run_sweep(bundle, [splits], **{**kw, "cache_runs": False})
    real, calls, saved = T.lr_at, [], []
    real_save = C.save_state

    def stop_in_epoch_3(epoch, total, c):
        calls.append(epoch)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(epoch, total, c)

    monkeypatch.setattr(T, "lr_at", stop_in_epoch_3)
    monkeypatch.setattr(C, "save_state", lambda path, state: saved.append(path) or real_save(path, state))
    monkeypatch.setattr(J, "train_coop", functools.partial(T.train_coop, checkpoint_every_s=0))   # every epoch
    with pytest.raises(KeyboardInterrupt):
        run_sweep(bundle, [splits], **kw)
    assert len(saved) == 2 and torch.load(saved[0], weights_only=True)["epoch"] == 2
    monkeypatch.setattr(T, "lr_at", lambda *a: calls.append(a[0]) or real(*a))
    resumed = run_sweep(bundle, [splits], **kw)
    assert calls[3:] == [2]                                            # the third epoch only
    assert resumed.timing["runs_from_cache"] == 0 and not Path(saved[0]).exists()
    pd.testing.assert_frame_equal(resumed.runs.drop(columns=["seconds", "cpu_seconds"]),
                                  plain.runs.drop(columns=["seconds", "cpu_seconds"]))
    assert run_sweep(bundle, [splits], **kw).timing["runs_from_cache"] == 1


def test_one_training_step_lowers_the_loss_on_a_fixed_batch(bundle):
    classes = ["cat", "dog", "car", "tree"]
    learner = build_learner(bundle, classes, CoOpConfig(n_ctx=4), seed=0)
    feats = F.normalize(torch.randn(16, bundle.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = torch.arange(16) % 4
    opt = torch.optim.SGD([learner.ctx], lr=0.002, momentum=0.9, weight_decay=5e-4)
    before = step_loss(learner, feats, labels, 100.0)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = step_loss(learner, feats, labels, 100.0)
    assert after < before - 1e-7


def test_small_set_takes_one_full_batch_per_epoch(bundle):
    classes = ["cat", "dog"]
    feats = F.normalize(torch.randn(6, 2, bundle.embed_dim), dim=-1)                  # 6 items < batch 32
    res = train_coop(bundle, classes, TrainSet(torch.tensor([0, 1] * 3), view_feats=feats),
                     CoOpConfig(n_ctx=2, epochs={1: 4}), seed=0, shots=3)
    assert res.steps == 4 and [h["lr"] for h in res.history][:2] == [1e-5, 0.002]


def test_csc_with_phrase_unified_is_coops_ignored_csc():
    """CoOp's trainers/coop.py reads CSC only when CTX_INIT is empty: "unified" turns a phrase-init CSC off."""
    phrase = CoOpConfig(csc=True, ctx_init="a photo of a")
    assert phrase.csc and phrase.csc_with_phrase == "per_class"                      # vlmlab's default
    unified = phrase.replace(csc_with_phrase="unified")
    assert not unified.csc and unified == CoOpConfig(ctx_init="a photo of a", csc_with_phrase="unified")
    assert CoOpConfig(csc=True, csc_with_phrase="unified").csc                     # random init: CSC as CoOp's
    assert parse_variant("M4_end_photo_csc").config(CoOpConfig(csc_with_phrase="unified")).csc is False
    with pytest.raises(ValueError, match="csc_with_phrase"):
        CoOpConfig(csc_with_phrase="ignore")


def test_csc_with_phrase_unified_trains_the_unified_phrase_context(bundle, splits):
    """A phrase-init CSC run under "unified" is the phrase-init unified run, context and accuracy to the bit;
    under "per_class" it trains C copies of the phrase; the DG readout rebuilds either from its context."""
    feats = F.normalize(torch.randn(8, 2, bundle.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    train = TrainSet(torch.arange(8) % len(splits.classnames), view_feats=feats)
    base = CoOpConfig(n_views=2, epochs={1: 3}, batch_size=4, ctx_init="a photo of a")
    plain = train_coop(bundle, splits.classnames, train, base, seed=3, shots=1)
    unified = train_coop(bundle, splits.classnames, train, base.replace(csc=True, csc_with_phrase="unified"), seed=3,
                         shots=1)
    per_class = train_coop(bundle, splits.classnames, train, base.replace(csc=True), seed=3, shots=1)
    assert torch.equal(unified.learner.ctx, plain.learner.ctx) and unified.learner.ctx.dim() == 2
    assert per_class.learner.ctx.shape == (len(splits.classnames), *plain.learner.ctx.shape)
    init = build_learner(bundle, splits.classnames, base, 3).ctx
    assert torch.equal(build_learner(bundle, splits.classnames, base.replace(csc=True), 3).ctx[0], init)
    cfg = CoOpConfig(n_views=2, epochs={1: 2}, csc_with_phrase="unified")
    sweep = run_sweep(bundle, [splits], shots=[1], seeds=[1], variants=["M4_end_photo", "M4_end_photo_csc"], cfg=cfg,
                      lp_refine=1)
    t = sweep.table[sweep.table.method == "coop"].set_index("csc")["accuracy"]
    assert t[True] == t[False]                          # the CSC label, CoOp's unified context
    dg = domain_generalization(bundle, splits, [], sweep, [parse_variant("M4_end_photo_csc")], shots=1, seeds=[1])
    assert dg[dg.method == "coop"]["accuracy"].item() == pytest.approx(t[True])


# ---- nearest words -----------------------------------------------------------------------------

def test_nearest_words_returns_planted_words(bundle):
    table = text_tower(bundle).token_embedding.weight
    ids = [bundle.tokenizer([w])[0, 1].item() for w in ("dog", "photo", "enjoyed")]
    ctx = table[ids].detach() + 1e-4 * torch.randn(3, table.shape[1])
    words = nearest_words(ctx, k=2, bundle=bundle)
    assert [w[0][0] for w in words] == ["dog", "photo", "enjoyed"]
    assert all(w[0][1] < w[1][1] for w in words)
    vocab = {0: "zero", 1: "one", 2: "two"}
    small = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert nearest_words(torch.tensor([[0.9, 0.1]]), 2, table=small, vocab=vocab) == [
        [("one", pytest.approx(math.hypot(0.1, 0.1))), ("zero", pytest.approx(math.hypot(0.9, 0.1)))]]


# ---- the sweep and its tables ------------------------------------------------------------------

def test_sweep_table_and_zero_shot_reference(bundle, splits):
    cfg = CoOpConfig(n_views=2, epochs={1: 2})
    sweep = run_sweep(bundle, [splits], shots=[1, 2], seeds=[1, 2], variants=["M4_end", "M2_middle_csc@2"],
                      cfg=cfg, lp_refine=1)
    t = sweep.table
    assert list(t.columns) == COLUMNS
    counts = t.groupby("method").size().to_dict()
    assert counts == {"zero_shot": 2, "linear_probe": 4, "coop": 4 + 2}
    assert t["accuracy"].between(0, 100).all()
    # zero-shot equals an independent computation with the dataset's template
    from vlmlab.features import extract_arrays
    f = extract_arrays(bundle, splits.test.images, splits.test.labels, "t")
    w = F.normalize(bundle.encode_texts([splits.template.format(c) for c in splits.classnames]), dim=-1)
    ref = 100 * float(((f.feats @ w.T).argmax(1) == f.labels).float().mean())
    assert t[t.method == "zero_shot"]["accuracy"].tolist() == pytest.approx([ref, ref])
    # domain generalization on the source itself reproduces the sweep's CoOp accuracy
    dg = domain_generalization(bundle, splits, [], sweep, [parse_variant("M4_end")], shots=2, seeds=[1])
    coop_row = t[(t.method == "coop") & (t.n_ctx == 4) & (t.shots == 2) & (t.seed == 1)]["accuracy"].item()
    assert dg[dg.method == "coop"]["accuracy"].item() == pytest.approx(coop_row)
    # ... and so does the linear probe, scored on the features it was fitted on (raw by default)
    lp_row = t[(t.method == "linear_probe") & (t.shots == 2) & (t.seed == 1)]["accuracy"].item()
    assert sweep.lp_features == "raw" and dg[dg.method == "linear_probe"]["accuracy"].item() == pytest.approx(lp_row)


def test_summary_tables_mean_std_and_average():
    rows = []
    for ds, offset in (("a", 0.0), ("b", 10.0)):
        for seed, acc in ((1, 50.0), (2, 60.0)):
            rows.append({"dataset": ds, "method": "coop", "n_ctx": 16, "position": "end", "init": "random",
                         "csc": False, "shots": 16, "seed": seed, "accuracy": acc + offset})
    s = summary_tables(pd.DataFrame(rows, columns=COLUMNS))
    a = s.long[(s.long.dataset == "a")].iloc[0]
    assert a["mean"] == 55.0 and a["std"] == pytest.approx(np.std([50, 60], ddof=1))
    avg = s.long[s.long.dataset == "Average"].iloc[0]
    assert avg["mean"] == 60.0 and avg["std"] == pytest.approx(np.std([55, 65], ddof=1))
    assert s.average.loc["CoOp M16 end", "16 shot"] == "60.00 ± 7.07"


def test_missing_shift_data_names_what_is_missing(splits, tmp_path):
    for spec, what in (("imagenet_v2", "ImageNet-V2 not found"), ("imagenet_sketch", "ImageNet-Sketch not found")):
        with pytest.raises(DatasetNotFound, match=what):
            dg_target(spec, splits, root=tmp_path)
    with pytest.raises(ValueError, match="share the classes"):
        dg_target("world:objects", splits, n_test=20)


def test_zero_shot_weights_used_by_the_sweep_are_the_templates(bundle, splits):
    w = zero_shot_weights(bundle, splits.classnames, splits.template)
    ref = F.normalize(bundle.encode_texts([splits.template.format(c) for c in splits.classnames]), dim=-1)
    torch.testing.assert_close(w, ref, atol=1e-5, rtol=1e-4)


# ---- worker processes -----------------------------------------------------------------------------

def test_parallel_jobs_give_the_in_process_results_in_job_order():
    import dataclasses

    from vlmlab.coop.jobs import ProbeJob, run_jobs
    from vlmlab.models import load_clip

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g)

    def draw(n):
        y = torch.arange(n) % 3
        return centres[y] + 0.8 * torch.randn(n, 8, generator=g), y

    jobs = [ProbeJob("toy", k, 0, 3, draw(3 * k), draw(9), *draw(30), refine=2) for k in (1, 8, 2, 4)]
    bundle = load_clip("embedded", device="cpu")               # loadable weights: workers load them by tag
    here = run_jobs(bundle, jobs, workers=1)
    there = run_jobs(bundle, jobs, workers=2, threads=1)       # the costliest (8 shots) goes first
    assert [r["accuracy"] for r in there] == [r["accuracy"] for r in here]
    for a, b in zip(here, there):
        torch.testing.assert_close(b["probe"].logits(jobs[0].test_feats), a["probe"].logits(jobs[0].test_feats))
    with pytest.raises(RuntimeError, match="the parent holds"):
        run_jobs(dataclasses.replace(bundle, weights_id="another"), jobs[:2], workers=2, threads=1)
    bf16 = dataclasses.replace(bundle, precision="bf16")       # workers load the parent's precision too
    assert [r["accuracy"] for r in run_jobs(bf16, jobs[:2], workers=2, threads=1)] == [r["accuracy"] for r in here[:2]]


@pytest.mark.parametrize("kind", ["raw", "normalized"])
def test_probe_jobs_fit_and_score_the_encoders_output_or_unit_rows(bundle, splits, kind):
    """lpclip's probe reads ``clip_model.visual(x)`` itself (``lp_features="raw"``, the default); "normalized" is
    the unit embedding. Every probe job of a seed holds exactly those rows of its draw, and of the test set."""
    from vlmlab.coop.augment import eval_features
    from vlmlab.data.fewshot import sample_few_shot
    test = eval_features(bundle, splits.test)
    jobs = _jobs_for_seed(bundle, splits, test, [1, 2], 3, [], CoOpConfig(), {}, ("linear_probe",), 1, None,
                          lp_features=kind, lp_draws="coop")
    train = eval_features(bundle, splits.train)                      # every item, one extraction
    y_train = torch.as_tensor(splits.train.labels)
    with torch.no_grad():                                           # the encoder's output, straight
        z_test = bundle.model.encode_image(features_input(bundle, splits.test)).float()
    pick = (lambda f: f.raw) if kind == "raw" else (lambda f: f.feats)
    for job, k in zip(jobs, [1, 2]):
        idx = sample_few_shot(y_train, k, 3, splits.n_classes, nested=False)
        torch.testing.assert_close(job.train[0], pick(train)[idx], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(job.test_feats, pick(test), atol=0, rtol=0)
    if kind == "raw":
        torch.testing.assert_close(jobs[0].test_feats, z_test, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(jobs[0].test_feats.norm(dim=-1), torch.ones(len(z_test)))
    else:
        torch.testing.assert_close(jobs[0].test_feats.norm(dim=-1), torch.ones(len(z_test)))


def features_input(bundle, data):
    from vlmlab.features import arrays_to_input
    return arrays_to_input(bundle, torch.from_numpy(np.asarray(data.images)))


def test_lpclip_draw_is_lpclips_numpy_loop():
    """``sample_lpclip`` equals lpclip/linear_probe.py's sampling written out: np.random.seed, then choice per class
    of the train labels and, from the same stream, min(K, 4) per class of the val labels."""
    from vlmlab.data.fewshot import sample_lpclip
    y_train = np.random.default_rng(0).permutation(np.repeat(np.arange(5), 9))
    y_val = np.random.default_rng(1).permutation(np.repeat(np.arange(5), 6))
    state = np.random.get_state()
    try:
        for k, seed in ((1, 1), (2, 2), (8, 3)):
            np.random.seed(seed)
            ref_train = [i for c in np.unique(y_train)
                         for i in np.random.choice(np.where(y_train == c)[0], size=k, replace=False)]
            ref_val = [i for c in np.unique(y_train)
                       for i in np.random.choice(np.where(y_val == c)[0], size=min(k, 4), replace=False)]
            tr, va = sample_lpclip(torch.as_tensor(y_train), y_val, k, seed)
            assert tr.tolist() == ref_train and va.tolist() == ref_val
            assert np.bincount(y_train[tr.numpy()]).tolist() == [k] * 5
    finally:
        np.random.set_state(state)
    a, b = sample_lpclip(y_train, y_val, 2, 1), sample_lpclip(y_train, y_val, 2, 2)
    assert not torch.equal(a[0], b[0])


@pytest.mark.parametrize("draws", ["lpclip", "coop"])
def test_probe_jobs_hold_lpclips_draw_or_coops_shots(bundle, splits, draws):
    from vlmlab.coop.augment import eval_features
    from vlmlab.data.fewshot import sample_lpclip
    test = eval_features(bundle, splits.test)
    jobs = _jobs_for_seed(bundle, splits, test, [1, 2], 3, [], CoOpConfig(), {}, ("linear_probe",), 1, None,
                          lp_draws=draws)
    train, val = eval_features(bundle, splits.train), eval_features(bundle, splits.val)
    y_train, y_val = torch.as_tensor(splits.train.labels), torch.as_tensor(splits.val.labels)
    for job, k in zip(jobs, [1, 2]):
        if draws == "lpclip":
            ti, vi = sample_lpclip(y_train, y_val, k, 3)
        else:
            from vlmlab.data.fewshot import sample_few_shot
            ti = sample_few_shot(y_train, k, 3, splits.n_classes, nested=False)
            vi = sample_few_shot(y_val, min(k, 4), 3, splits.n_classes, nested=False)
        assert torch.equal(job.train[1], y_train[ti]) and torch.equal(job.val[1], y_val[vi])
        torch.testing.assert_close(job.train[0], train.raw[ti], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(job.val[0], val.raw[vi], atol=1e-5, rtol=1e-5)


def test_sweep_names_a_bad_draw_or_probe_dtype_before_any_work(bundle, splits):
    with pytest.raises(ValueError, match="few-shot draws"):
        run_sweep(bundle, [splits], [1], [1], ["M4_end"], fewshot_draws="fresh")
    with pytest.raises(ValueError, match="lp_dtype"):
        run_sweep(bundle, [splits], [1], [1], ["M4_end"], lp_dtype="float16")
    with pytest.raises(ValueError, match="lp_features"):
        run_sweep(bundle, [splits], [1], [1], ["M4_end"], lp_features="unit")
    with pytest.raises(ValueError, match="lp_draws"):
        run_sweep(bundle, [splits], [1], [1], ["M4_end"], lp_draws="numpy")
