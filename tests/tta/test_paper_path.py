"""The paper path runs: every method on a random-initialised open_clip ViT-B-16 (1 test image, 2 views)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.models import load_clip
from vlmlab.models.lora import trainable_count
from vlmlab.prompts import zero_shot_weights
from vlmlab.tta import METHODS, build, run_stream
from vlmlab.tta.base import ArrayImages, Context, Stream, Support, encode_single, encode_views, view_seed

from tta_helpers import CLASSNAMES, same_state, state_checksum

SMALL = {"tpt": {"n_views": 2}, "zero": {"n_views": 2}, "mta": {"n_views": 2},
         "uniinfo": {"batch_size": 1, "readout": "online"},
         "tip_adapter": {"shots": 1, "augment_epochs": 0, "beta_search": (0.1, 7.0, 2), "alpha_search": (0.1, 3.0, 2)},
         "linear_probe": {"shots": 1, "C": 1.0}}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load_clip("ViT-B-16", None, device="cpu")


@pytest.mark.timeout(600)
def test_every_method_runs_on_vit_b16(vit):
    rng = np.random.default_rng(0)
    images = ArrayImages(vit, rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))   # resized to 224
    with torch.no_grad():
        x = images(torch.arange(3))
        raw = encode_single(vit, x, normalize=False)                   # (3, 512)
        feats = torch.nn.functional.normalize(raw, dim=-1)
        views = encode_views(vit, x[:1], 2, [view_seed(0, 0)])
    text = zero_shot_weights(vit, CLASSNAMES, "a photo of a {}.").cpu()
    labels = torch.tensor([0, 1, 2])
    ctx = Context(vit, CLASSNAMES, text, support=Support(feats, labels, images, feats, labels, 1, norms=raw.norm(dim=-1),
                                                              val_norms=raw.norm(dim=-1)))
    stream = Stream(labels[:1], images, feats[:1], views, name="toy")
    before = state_checksum(vit)
    for name in METHODS:
        m = build(name, **SMALL.get(name, {}))
        m.setup(ctx)
        out = run_stream(m, stream, seed=0)
        assert out.shape == (1, 3) and out.isfinite().all(), name
        if name == "uniinfo":
            assert trainable_count(m.student) == 1_179_648
    assert same_state(state_checksum(vit), before)



@pytest.mark.timeout(600)
def test_uniinfo_train_mode_changes_nothing_on_the_vit(vit):
    # the official net.train(): no BatchNorm and no active dropout in a ViT, so the same logits and LoRA steps
    rng = np.random.default_rng(1)
    images = ArrayImages(vit, rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8))
    text = zero_shot_weights(vit, CLASSNAMES, "a photo of a {}.").cpu()
    stream = Stream(torch.tensor([0, 1]), images, name="toy")
    outs = []
    for train_mode in (False, True):
        m = build("uniinfo", batch_size=2, train_mode=train_mode, readout="student_offline")
        m.setup(Context(vit, CLASSNAMES, text))
        outs.append(run_stream(m, stream, seed=0))
    assert len(m.history) == 1 and m.history[0]["loss"] != 0
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
