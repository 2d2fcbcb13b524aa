"""Templates and zero-shot weights: closed forms and an independent per-class computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmlab.prompts import (IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_7, SIMPLE_TEMPLATE, fill, zero_shot_logits,
                            zero_shot_weights)

CLASSES = ["tench", "goldfish", "great_white_shark", "tiger shark", "hammerhead"]
TEMPLATES = ["a photo of a {}.", "a sketch of the {}.", "itap of my {}.", "a {} in a video game."]


@pytest.fixture(scope="module")
def bundle(tiny_clip):
    return tiny_clip


def encode(bundle, texts: list[str]) -> torch.Tensor:
    """Unnormalised text embeddings straight from the model, one call."""
    with torch.no_grad():
        return bundle.model.encode_text(bundle.tokenizer(texts)).float()


def test_imagenet_templates_are_80_distinct_with_one_slot():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert set(IMAGENET_TEMPLATES_7) <= set(IMAGENET_TEMPLATES) and len(set(IMAGENET_TEMPLATES_7)) == 7
    assert SIMPLE_TEMPLATE in IMAGENET_TEMPLATES


def test_fill_shape_and_underscores():
    out = fill(TEMPLATES[:2], CLASSES)
    assert len(out) == 5 and all(len(p) == 2 for p in out)
    assert out[2] == ["a photo of a great white shark.", "a sketch of the great white shark."]
    assert fill("{}!", ["a_b"], clean=False) == [["a_b!"]]
    with pytest.raises(ValueError, match="exactly one"):
        fill(["no slot"], CLASSES)


def test_single_template_is_the_normalised_embedding(bundle):
    ref = F.normalize(encode(bundle, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSES]), dim=-1)
    for mode in ("clip", "mean_then_norm"):
        w = zero_shot_weights(bundle, CLASSES, SIMPLE_TEMPLATE, mode=mode)
        torch.testing.assert_close(w, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["clip", "mean_then_norm"])
def test_batched_equals_per_class_loop(bundle, mode):
    w = zero_shot_weights(bundle, CLASSES, TEMPLATES, mode=mode, batch_size=3)   # chunks cross class boundaries
    assert w.shape == (5, bundle.embed_dim) and w.dtype == torch.float32
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(5))
    rows = []
    for c in CLASSES:
        e = encode(bundle, [t.format(c.replace("_", " ")) for t in TEMPLATES])   # (T, D)
        e = F.normalize(e, dim=-1) if mode == "clip" else e
        rows.append(F.normalize(e.mean(0), dim=-1))
    torch.testing.assert_close(w, torch.stack(rows), atol=1e-5, rtol=1e-4)


def test_modes_differ_for_several_templates(bundle):
    a = zero_shot_weights(bundle, CLASSES, TEMPLATES, mode="clip")
    b = zero_shot_weights(bundle, CLASSES, TEMPLATES, mode="mean_then_norm")
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="mode"):
        zero_shot_weights(bundle, CLASSES, TEMPLATES, mode="avg")


def test_zero_shot_logits_and_autograd(bundle):
    w = zero_shot_weights(bundle, CLASSES, TEMPLATES)
    feats = F.normalize(torch.randn(3, bundle.embed_dim), dim=-1).requires_grad_()
    logits = zero_shot_logits(feats, w, bundle.logit_scale)
    torch.testing.assert_close(logits, bundle.logit_scale * feats @ w.T)
    assert logits.shape == (3, 5)
    logits.sum().backward()                                   # weights are not inference tensors
    assert feats.grad is not None
    torch.testing.assert_close(zero_shot_logits(w, w, 1.0).diagonal(), torch.ones(5))
