"""Visual-prompt training: schedule closed forms, zero prompt = zero-shot, learning a planted cue, heads."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from vlmlab.features import extract_arrays
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import fit_linear_probe
from vlmlab.prompts import zero_shot_logits, zero_shot_weights
from vlmlab.visual_prompts import (TextHead, VPConfig, clip_head, lr_at, model_inputs, padding, predict,
                                   refine_classname, train_prompt, vision_head)
from vlmlab.world import WorldDataset

CLASSNAMES = ["Circle", "square_box", "tri-angle"]


class _P(dict):
    """Notebook parameters as attributes (what ``vp_config`` and ``_train_and_score`` read)."""
    __getattr__ = dict.__getitem__


def test_lr_schedule_closed_forms():
    base, warm, total = 40.0, 10, 110
    assert lr_at(0, base, warm, total) == pytest.approx(base / warm)             # (step + 1) / warmup
    assert lr_at(9, base, warm, total) == pytest.approx(base)
    assert lr_at(10, base, warm, total) == pytest.approx(base)                   # cosine starts at 1
    assert lr_at(60, base, warm, total) == pytest.approx(base / 2)               # halfway: cos(pi/2) = 0
    assert lr_at(110, base, warm, total) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(35, base, warm, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 100)) * base)


def test_warmup_is_not_capped_unless_asked():
    from vlmlab.visual_prompts.train import _warmup
    # the reference's cosine_lr keeps warming up past the last step: lr(step) = base (step + 1) / warmup
    assert _warmup(VPConfig(warmup=1000), total=80) == 1000
    assert _warmup(VPConfig(warmup=1000, cap_warmup=True), total=80) == 80
    assert lr_at(79, 40.0, _warmup(VPConfig(warmup=1000), total=80), 80) == pytest.approx(40.0 * 80 / 1000)


def test_refine_classname_is_the_references():
    assert [refine_classname(c) for c in CLASSNAMES] == ["circle", "square box", "tri angle"]


@pytest.fixture(scope="module")
def toy_set(vp_bundle, blocky):
    images = blocky(12, seed=0)
    labels = np.arange(12) % 3
    return WorldDataset(images, labels, CLASSNAMES, "a photo of a {}.", "toy", "toy/test")


def test_zero_prompt_reproduces_zero_shot_exactly(vp_bundle, toy_set):
    template = "This is a photo of a {}"
    head = clip_head(vp_bundle, CLASSNAMES, template)
    data = model_inputs(vp_bundle, toy_set)
    zs_logits, y = predict(vp_bundle, head, data)
    vp_logits, _ = predict(vp_bundle, head, data, padding(8, 64, init="zeros"))
    assert torch.equal(vp_logits, zs_logits)
    # an independent route: the feature cache's extractor and the prompts module's zero-shot logits
    feats = extract_arrays(vp_bundle, toy_set.images, toy_set.labels, "toy", cache=None).feats
    w = zero_shot_weights(vp_bundle, ["circle", "square box", "tri angle"], template)
    ref = zero_shot_logits(feats, w, min(vp_bundle.logit_scale, 100.0))
    torch.testing.assert_close(zs_logits, ref, rtol=1e-4, atol=1e-4)
    assert accuracy(vp_logits, y) == accuracy(ref, toy_set.labels)
    # and through training with a zero prompt and lr 0: the prompt never moves
    res = train_prompt(vp_bundle, head, data, VPConfig(prompt_size=8, epochs=1, batch_size=6, lr=0.0, init="zeros"))
    assert torch.equal(predict(vp_bundle, head, data, res.prompter)[0], zs_logits)


class ToyEncoder(nn.Module):
    """f(x) = mean over pixels of relu(w * x) per channel: a frozen model a prompt can steer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, 3, 1, 1))

    def encode_image(self, x):
        return F.relu(self.w * x).mean(dim=(2, 3))  # (B, 3)


def toy_bundle() -> ClipBundle:
    return ClipBundle(ToyEncoder(), None, None, "toy", None, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "toy")


def planted_cue(n: int = 16) -> TensorDataset:
    """Class 1 has channel 1 = 2 in the 4 x 4 centre; every image has channel 0 = 1 everywhere.

    Features: class 0 -> (1, 0, 0), class 1 -> (1, 0.5, 0), so the text head e_0, e_1 calls both
    class 0 (50 %). A padding prompt of width 2 that switches channel 0 off in the border gives
    (0.25, 0, 0) and (0.25, 0.5, 0): 100 %.
    """
    x = torch.zeros(n, 3, 8, 8)
    x[:, 0] = 1.0
    y = torch.arange(n) % 2
    x[y == 1, 1, 2:6, 2:6] = 2.0
    return TensorDataset(x, y)


def test_training_learns_a_planted_cue_and_leaves_the_model_alone():
    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    before = accuracy(*predict(bundle, head, data))
    assert before == 50.0
    cfg = VPConfig(prompt_size=2, epochs=30, batch_size=8, warmup=4, init="zeros", seed=0)
    res = train_prompt(bundle, head, data, cfg)
    after = accuracy(*predict(bundle, head, data, res.prompter))
    assert after == 100.0, res.history[-1]
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.history[-1]["train_acc"] > res.history[0]["train_acc"]
    torch.testing.assert_close(bundle.model.w.detach(), torch.ones(1, 3, 1, 1))   # frozen
    assert bundle.model.w.requires_grad and bundle.model.w.grad is None         # flags restored, no grads


def test_select_val_keeps_the_best_validation_epoch():
    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(prompt_size=2, epochs=6, batch_size=8, warmup=2, init="zeros", select="val")
    res = train_prompt(bundle, head, data, cfg, val=data)
    vals = [row["val_acc"] for row in res.history]
    assert res.best_epoch == 1 + int(np.argmax(vals))
    assert accuracy(*predict(bundle, head, data, res.prompter)) == max(vals)
    with pytest.raises(ValueError, match="validation split"):
        train_prompt(bundle, head, data, cfg)


def _flipped(data: TensorDataset) -> TensorDataset:
    """The same images with the two labels swapped: learning the cue lowers its accuracy."""
    x, y = data.tensors
    return TensorDataset(x, 1 - y)


def test_select_test_reports_the_best_per_epoch_test_accuracy_as_the_reference():
    # main_clip.py: validate(test) after every epoch, best_acc1 = max(acc1, best_acc1) (ties: the earlier epoch)
    bundle, data = toy_bundle(), planted_cue()
    test = _flipped(planted_cue(12))
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(prompt_size=2, epochs=6, batch_size=8, warmup=2, init="zeros", select="test", lr=1.0)
    res = train_prompt(bundle, head, data, cfg, test=test)
    tests = [row["test_acc"] for row in res.history]
    assert len(tests) == 6 and tests[-1] < max(tests)                 # the last epoch is not the best here
    assert tests[0] == tests[1] == max(tests)                          # a tie: the earlier epoch is kept
    assert res.best_epoch == 1 + int(np.argmax(tests)) == 1
    assert res.selected_test_acc == max(tests)
    assert accuracy(*predict(bundle, head, test, res.prompter)) == max(tests)   # the best epoch's prompt
    last = train_prompt(bundle, head, data, dataclasses.replace(cfg, select="last"))
    assert last.selected_test_acc is None and "test_acc" not in last.history[0]
    assert accuracy(*predict(bundle, head, test, last.prompter)) == tests[-1]   # test passes change no training
    with pytest.raises(ValueError, match="test split"):
        train_prompt(bundle, head, data, cfg)


def test_select_test_through_the_cache_and_the_notebook_path(tmp_path):
    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E

    bundle, data, test = toy_bundle(), planted_cue(), _flipped(planted_cue(12))
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    P = _P(prompt_sizes={"padding": 2}, epochs=6, batch_size=8, lr=1.0, warmup=2, init="zeros", select="test",
           num_workers=0, eval_precision="fp32", vp={})
    cache = FeatureCache(tmp_path)
    res, vp_acc, hist = E._train_and_score(P, bundle, head, "padding", 0, data, None, test, {"dataset": "toy"}, cache)
    assert vp_acc == res.selected_test_acc == max(h["test_acc"] for h in hist)
    again, vp_again, _ = E._train_and_score(P, bundle, head, "padding", 0, data, None, test, {"dataset": "toy"}, cache)
    assert vp_again == vp_acc and again.best_epoch == res.best_epoch and again.history == res.history
    cfg = E.vp_config(P, "padding", 0)
    other = _flipped(planted_cue(10))
    assert E.vp_run_key(bundle, head, cfg, data, None, test) != E.vp_run_key(bundle, head, cfg, data, None, other)
    last = dataclasses.replace(cfg, select="last")                   # the test set enters the key only for "test"
    assert E.vp_run_key(bundle, head, last, data, None, test) == E.vp_run_key(bundle, head, last, data, None, other)
    from vlmlab.runcache import closure_fingerprint, module_closure      # the code part: the trainer and its helpers
    assert E.vp_run_key(bundle, head, cfg, data, None, test)["code"] == closure_fingerprint("vlmlab.visual_prompts.train")
    assert {"vlmlab.visual_prompts.prompters", "vlmlab.features", "vlmlab.models.bundle"} <= set(
        module_closure("vlmlab.visual_prompts.train"))                   # prompters, arrays_to_input, autocast


def test_text_head_is_the_zero_shot_classifier():
    feats, w = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    torch.testing.assert_close(TextHead(w, 37.0)(feats), zero_shot_logits(feats, w, 37.0))


def test_vision_head_hard_codes_the_first_outputs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 6)).astype(np.float32), np.arange(60) % 5
    x[np.arange(60), y] += 2.0
    probe = fit_linear_probe(x, y, C=1.0)
    head = vision_head(probe, 3)
    torch.testing.assert_close(head(torch.from_numpy(x)), probe.logits(x)[:, :3], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="hard-coded mapping"):
        vision_head(probe, 6)


def test_vp_config_takes_vpconfig_overrides_and_names_unknown_ones():
    from vlmlab.visual_prompts import vp_config

    base = dict(prompt_sizes={"random_patch": 8}, epochs=2, batch_size=4, lr=1.0, warmup=1, init="zeros",
                select="last", num_workers=0, eval_precision="fp32")
    assert vp_config(_P(base, vp={}), "random_patch", 0).patch_positions == "reference"
    cfg = vp_config(_P(base, vp={"patch_positions": "all", "cap_warmup": True}), "random_patch", 3)
    assert (cfg.patch_positions, cfg.cap_warmup, cfg.seed, cfg.prompt_size) == ("all", True, 3, 8)
    with pytest.raises(KeyError, match="'positions'"):
        vp_config(_P(base, vp={"positions": "all"}), "random_patch", 0)


@pytest.mark.parametrize("eval_batch_size,draws", [(None, 4), (256, 1), (6, 3)])
def test_evaluation_passes_hold_the_training_batch_as_the_references_val_loader(eval_batch_size, draws, monkeypatch):
    """main_clip.py evaluates in batches of --batch_size, and a random patch draws one location per forward pass:
    16 test images at batch 4 see 4 locations (256, vlmlab's pass before: one). Validation passes too."""
    from vlmlab.visual_prompts import evaluate as E
    from vlmlab.visual_prompts.prompters import RandomPatchPrompter

    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)

    P = _P(prompt_sizes={"random_patch": 2}, epochs=2, batch_size=4, lr=1.0, warmup=1, init="randn", select="val",
           num_workers=0, eval_precision="fp32", vp={} if eval_batch_size is None else {"eval_batch_size": eval_batch_size})
    corners, real = [], RandomPatchPrompter.prompt
    monkeypatch.setattr(RandomPatchPrompter, "prompt", lambda self, corner=None: corners.append(1) or real(self, corner))
    res, _, hist = E._train_and_score(P, bundle, head, "random_patch", 0, data, data, data, {"dataset": "toy"})
    assert res.prompter.n_params > 0 and len(hist) == 2
    # training: 4 steps per epoch, 2 epochs; validation after each epoch and the test pass: `draws` each
    assert len(corners) == 2 * 4 + 3 * draws
    assert VPConfig(batch_size=32).eval_batch == 32 and VPConfig(batch_size=32, eval_batch_size=256).eval_batch == 256


def test_evaluation_runs_in_fp32_with_an_fp32_text_head_unless_asked(vp_bundle, toy_set):
    """The reference converts CLIP to fp32 and autocasts only its training forward, so validate() runs fp32:
    with a bf16 bundle, eval_view drops the autocast (the same logits as an fp32 bundle of the same weights, text
    head included); "bundle" keeps it (other logits); an fp32 bundle is its own view; another value is named."""
    import dataclasses

    from vlmlab.runtime import effective_precision
    from vlmlab.visual_prompts import eval_view

    if effective_precision(vp_bundle.device, "bf16") != "bf16":
        pytest.skip("this CPU has no bf16 autocast")
    fp32 = dataclasses.replace(vp_bundle, precision="fp32")
    bf16 = dataclasses.replace(vp_bundle, precision="bf16")
    names, template = ["circle", "square box", "tri angle"], "a photo of a {}."
    data = model_inputs(fp32, toy_set)
    prompt = padding(8, fp32.image_size, generator=torch.Generator().manual_seed(0))
    want = predict(fp32, clip_head(fp32, names, template), data, prompt)[0]
    ev = eval_view(bf16, "fp32")
    assert ev.precision == "fp32" and ev.model is bf16.model and bf16.precision == "bf16"
    torch.testing.assert_close(predict(ev, clip_head(ev, names, template), data, prompt)[0], want, rtol=0, atol=0)
    under = predict(eval_view(bf16, "bundle"), clip_head(bf16, names, template), data, prompt)[0]
    assert (under - want).abs().max() > 1e-3                                   # bf16 rounding shows
    assert eval_view(fp32, "fp32") is fp32 and eval_view(bf16, "bundle") is bf16
    with pytest.raises(ValueError, match="eval_precision='fp16'"):
        eval_view(bf16, "fp16")


@pytest.mark.parametrize("method,select", [("random_patch", "last"), ("padding", "val")])
def test_cached_training_returns_the_trained_prompt_and_later_draws_repeat(tmp_path, monkeypatch, method, select):
    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E
    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(method=method, prompt_size=2, epochs=4, batch_size=8, warmup=2, seed=3, select=select)
    cache = FeatureCache(tmp_path)
    calls = []
    real = E.train_prompt
    monkeypatch.setattr(E, "train_prompt", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = E.train_prompt_cached(bundle, head, data, cfg, data, cache)
    logits_first = predict(bundle, head, data, first.prompter)[0]       # random patches: draws after training
    again = E.train_prompt_cached(bundle, head, data, cfg, data, cache)
    assert len(calls) == 1                                              # the second call trained nothing
    assert again.history == first.history and again.best_epoch == first.best_epoch
    for (k, a), (_, b) in zip(first.prompter.state_dict().items(), again.prompter.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(predict(bundle, head, data, again.prompter)[0], logits_first)
    E.train_prompt_cached(bundle, head, data, dataclasses.replace(cfg, lr=1.0), data, cache)
    assert len(calls) == 2                                              # another config trains
    E.train_prompt_cached(bundle, head, planted_cue(8), cfg, data, cache)
    assert len(calls) == 3                                              # other training data trains


def test_probe_features_through_the_cache_equal_encode_and_are_computed_once(tmp_path, monkeypatch):
    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E
    bundle, data = toy_bundle(), planted_cue()
    calls, real = [], E.encode
    monkeypatch.setattr(E, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = FeatureCache(tmp_path)
    ref = real(bundle, data)
    for _ in range(2):
        x, y = E._features(bundle, data, cache, "probe")
        assert torch.equal(x, ref[0]) and torch.equal(y, ref[1])
    assert len(calls) == 1
    E._features(bundle, planted_cue(8), cache, "probe")               # other inputs: encoded
    assert len(calls) == 2


def test_raw_probe_features_are_the_encoders_output_under_their_own_key(tmp_path, monkeypatch):
    """The LP baseline's default features (``lp_features: raw``) are ``encode_images(..., normalize=False)``, as
    lpclip's ``clip_model.visual(x)``; they are cached beside the unit ones, which keep their old key."""
    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E
    bundle, data = toy_bundle(), planted_cue()
    calls, real = [], E.encode
    monkeypatch.setattr(E, "encode", lambda *a, **k: calls.append(k.get("normalize")) or real(*a, **k))
    cache = FeatureCache(tmp_path)
    unit, _ = E._features(bundle, data, cache, "probe")
    raw, y = E._features(bundle, data, cache, "probe", "raw")
    assert calls == [True, False]                                    # two entries, one encode each
    with torch.no_grad():
        z = bundle.encode_images(data.tensors[0], normalize=False).float()
    torch.testing.assert_close(raw, z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), unit, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(raw)))
    assert torch.equal(E._features(bundle, data, cache, "probe", "raw")[0], raw) and len(calls) == 2
    with pytest.raises(ValueError, match="features"):
        E._features(bundle, data, cache, "probe", "unit")


def _state(prompter) -> dict:
    return {k: v.clone() for k, v in prompter.state_dict().items()}


@pytest.mark.parametrize("method,select", [("padding", "last"), ("random_patch", "test"), ("fixed_patch", "val")])
def test_a_training_stopped_after_an_epoch_resumes_to_the_result_of_one_never_stopped(tmp_path, monkeypatch,
                                                                                       method, select):
    import vlmlab.visual_prompts.train as T
    bundle, data, test = toy_bundle(), planted_cue(), _flipped(planted_cue(12))
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(method=method, prompt_size=2, epochs=5, batch_size=6, warmup=3, seed=4, select=select, lr=2.0)
    kw = dict(val=data, test=test)
    whole = train_prompt(bundle, head, data, cfg, **kw)
    after_draws = predict(bundle, head, test, whole.prompter)[0]        # random patches: the draws that follow
    ckpt, real, calls = tmp_path / "run.training.pt", T._epoch, []

    def stop_in_epoch_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "_epoch", stop_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        train_prompt(bundle, head, data, cfg, checkpoint=ckpt, checkpoint_every_s=0, **kw)
    monkeypatch.setattr(T, "_epoch", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    resumed = train_prompt(bundle, head, data, cfg, checkpoint=ckpt, checkpoint_every_s=0, **kw)
    assert len(calls) == 4 + 2                                          # epochs 4 and 5 only
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    for (k, a), b in zip(_state(whole.prompter).items(), _state(resumed.prompter).values()):
        assert torch.equal(a, b), k
    assert torch.equal(predict(bundle, head, test, resumed.prompter)[0], after_draws)


def test_a_checkpoint_of_another_config_or_a_damaged_one_is_not_resumed(tmp_path, caplog):
    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(prompt_size=2, epochs=3, batch_size=8, warmup=2, init="zeros")
    ckpt = tmp_path / "run.training.pt"
    ref = train_prompt(bundle, head, data, cfg)
    train_prompt(bundle, head, data, dataclasses.replace(cfg, lr=1.0), checkpoint=ckpt)   # the last epoch is saved
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    res = train_prompt(bundle, head, data, cfg, checkpoint=ckpt)
    assert "belongs to another run" in caplog.text and res.history == ref.history
    ckpt.write_bytes(b"not a checkpoint")
    res = train_prompt(bundle, head, data, cfg, checkpoint=ckpt)
    assert "damaged visual-prompt checkpoint" in caplog.text and res.history == ref.history


def test_a_keyed_training_checkpoints_in_the_cache_and_removes_it_once_stored(tmp_path, monkeypatch):
    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E
    bundle, data = toy_bundle(), planted_cue()
    head = TextHead(torch.eye(3)[:2], scale=10.0)
    cfg = VPConfig(prompt_size=2, epochs=3, batch_size=8, warmup=2, seed=1)
    cache, seen = FeatureCache(tmp_path), []
    real = E.train_prompt
    monkeypatch.setattr(E, "train_prompt", lambda *a, **k: seen.append(k["checkpoint"]) or real(*a, **k))
    E.train_prompt_cached(bundle, head, data, cfg, data, cache)
    key = E.vp_run_key(bundle, head, cfg, data, data)
    assert seen == [E.checkpoint_path(cache, key)] and seen[0].parent == cache.root
    assert not seen[0].exists() and cache.get(key) is not None
    E.train_prompt_cached(bundle, head, data, cfg, data, None)         # no cache: no checkpoint
    assert seen[-1] is None


def test_files_read_through_the_preprocess_are_keyed_by_their_dataset_key(tmp_path, monkeypatch):
    from PIL import Image

    from vlmlab.features import FeatureCache
    from vlmlab.visual_prompts import evaluate as E
    from vlmlab.visual_prompts.data import _folder, _Wrapped
    from vlmlab.visual_prompts.train import model_inputs

    def tree(root):
        for c in ("forest", "river"):
            for i in range(3):
                (root / "RESISC" / c).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(root / "RESISC" / c / f"{i}.jpg")
        return _folder("RESISC", root)

    bundle = toy_bundle()
    bundle.preprocess = lambda img: torch.zeros(3, 8, 8)
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    ia, ib = model_inputs(bundle, a), model_inputs(bundle, b)
    assert E.inputs_digest(ia) == E.inputs_digest(ib) == f"files:{a.key}"           # another root, the same key
    assert E.inputs_digest(model_inputs(bundle, a.subset([0, 1]))) != E.inputs_digest(ia)
    head, cfg = TextHead(torch.eye(3)[:2], scale=10.0), VPConfig(prompt_size=2, epochs=1)
    assert E.vp_run_key(bundle, head, cfg, ia, ia) == E.vp_run_key(bundle, head, cfg, ib, ib) is not None
    assert E.vp_run_key(bundle, head, cfg, ia, model_inputs(bundle, list(zip([None] * 2, [0, 1])))) is None
    # the probe's features of a keyed tree: encoded once, also read from the moved copy
    calls, real = [], E.encode
    monkeypatch.setattr(E, "encode", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = FeatureCache(tmp_path / "cache")
    first = E._features(bundle, ia, cache, "probe")
    for x, y in (E._features(bundle, ia, cache, "probe"), E._features(bundle, ib, cache, "probe")):
        assert torch.equal(x, first[0]) and torch.equal(y, first[1])
    assert len(calls) == 1
    # a torchvision set: its name and split, and which items with which labels
    w = _Wrapped(None, np.array([0, 1, 1, 0]), ["x", "y"], name="torchvision/CIFAR10/train")
    assert w.key == _Wrapped(None, np.array([0, 1, 1, 0]), ["x", "y"], name="torchvision/CIFAR10/train").key
    assert w.subset([0, 1]).key != w.key != w.subset([1, 0]).key and w.subset([0, 1]).key.startswith(
        "torchvision/CIFAR10/train:n=2:")
    assert _Wrapped(None, np.array([0, 1, 1, 0]), ["x", "y"], name="torchvision/CIFAR10/test").key != w.key
    assert _Wrapped(None, np.array([0, 1, 1, 0]), ["x", "y"]).key is None
