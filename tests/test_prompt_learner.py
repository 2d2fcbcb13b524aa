"""PromptLearner (CoOp's learnable context): equivalence with the text encoder, shapes, positions, gradients."""
from __future__ import annotations


import pytest
import torch

from vlmlab.prompts import PromptLearner

CLASSES = ["tench", "goldfish", "great_white_shark", "tiger shark", "hammerhead"]
CLEAN = [c.replace("_", " ") for c in CLASSES]


@pytest.fixture(scope="module")
def tiny(make_tiny_clip):
    """Context 24 and two text layers (the class-token position survives more than one block)."""
    return make_tiny_clip("vlmlab-test-pl", context_length=24, text_layers=2)


@pytest.fixture(scope="module")
def embedded():
    from vlmlab.models import load_clip
    return load_clip("embedded", device="cpu")


@pytest.fixture(scope="module")
def vit_b16():
    from vlmlab.models import load_clip
    torch.manual_seed(0)
    return load_clip("ViT-B-16", None, device="cpu")


def _encode(bundle, texts):
    with torch.no_grad():
        return bundle.encode_texts(texts, normalize=False)


@pytest.mark.parametrize("which", ["embedded", "vit_b16", "tiny"])
def test_phrase_init_equals_text_encoder(which, request):
    bundle = request.getfixturevalue(which)
    learner = PromptLearner(bundle, CLASSES, ctx_init="a photo of a")
    with torch.no_grad():
        ours = learner()
    ref = _encode(bundle, [f"a photo of a {c}." for c in CLEAN])
    assert ours.shape == (len(CLASSES), bundle.embed_dim)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # and not trivially: another phrase gives different embeddings
    assert (ours - _encode(bundle, [f"a sketch of a {c}." for c in CLEAN])).abs().max() > 1e-3


@pytest.mark.parametrize("position,template", [("middle", "a photo {} of a."), ("front", "{} a photo of a.")])
def test_positions_put_the_class_tokens_where_expected(tiny, position, template):
    learner = PromptLearner(tiny, CLASSES, ctx_init="a photo of a", position=position)
    with torch.no_grad():
        ours = learner()
        # token embeddings: the class tokens of "great white shark" sit after SOS + M/2 context vectors
        prompts = learner.prompts()
        ids = tiny.tokenizer(["great white shark"])[0, 1:4]
        start = 1 + (2 if position == "middle" else 0)
        torch.testing.assert_close(prompts[2, start:start + 3], tiny.model.token_embedding(ids).float())
    assert learner.name_lens[2] == 3
    torch.testing.assert_close(ours, _encode(tiny, [template.format(c) for c in CLEAN]), atol=1e-4, rtol=1e-4)


def test_unified_and_class_specific_shapes(tiny):
    width = tiny.model.token_embedding.weight.shape[1]
    uc = PromptLearner(tiny, CLASSES, n_ctx=8, ctx_init=None)
    csc = PromptLearner(tiny, CLASSES, n_ctx=8, ctx_init=None, csc=True)
    assert uc.ctx.shape == (8, width) and csc.ctx.shape == (len(CLASSES), 8, width)
    assert [n for n, _ in uc.named_parameters()] == ["ctx"]      # the model is not a submodule
    assert csc.ctx.numel() == len(CLASSES) * 8 * width
    # phrase init fixes M to the phrase's token count (CoOp), whatever n_ctx says
    assert PromptLearner(tiny, CLASSES, n_ctx=16, ctx_init="a photo of a").ctx.shape == (4, width)
    assert PromptLearner(tiny, CLASSES, ctx_init="a photo of a", csc=True).ctx.shape == (len(CLASSES), 4, width)


def test_random_init_is_seeded_small_and_resettable(tiny):
    a, b = (PromptLearner(tiny, CLASSES, n_ctx=16, ctx_init=None, seed=s) for s in (1, 1))
    c = PromptLearner(tiny, CLASSES, n_ctx=16, ctx_init=None, seed=2)
    torch.testing.assert_close(a.ctx, b.ctx)
    assert not torch.allclose(a.ctx, c.ctx)
    assert abs(a.ctx.std().item() - 0.02) < 0.004
    before = a.ctx.detach().clone()
    with torch.no_grad():
        a.ctx.add_(1.0)
    a.reset()
    torch.testing.assert_close(a.ctx.detach(), before)


def test_class_specific_context_is_independent_per_class(tiny):
    learner = PromptLearner(tiny, CLASSES, n_ctx=4, ctx_init=None, csc=True)
    feats = learner()
    feats[1].sum().backward()                                        # class 1's feature depends on its ctx only
    grad_norm = learner.ctx.grad.flatten(1).norm(dim=1)
    assert grad_norm[1] > 0 and torch.all(grad_norm[[0, 2, 3, 4]] == 0)


def test_gradient_reaches_ctx_only(tiny):
    learner = PromptLearner(tiny, CLASSES, n_ctx=4, ctx_init=None)
    learner(normalize=True).pow(2).sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_overflowing_prompt_names_the_limit(tiny):
    with pytest.raises(ValueError, match="context length 24"):
        PromptLearner(tiny, ["a very long class name " * 3], n_ctx=16, ctx_init=None)
    with pytest.raises(ValueError, match="position"):
        PromptLearner(tiny, CLASSES, position="left")


@pytest.mark.parametrize("which", ["tiny", "embedded"])
@pytest.mark.parametrize("position", ["end", "middle"])
def test_shared_prefix_forward_equals_full_forward(which, position, request):
    bundle = request.getfixturevalue(which)
    learner = PromptLearner(bundle, CLASSES, n_ctx=6, ctx_init=None, position=position, seed=3)
    assert learner.fast and learner.shared_prefix == 1 + (6 if position == "end" else 3)
    fast = learner(normalize=True)
    (fast * torch.arange(fast.numel()).reshape(fast.shape)).sum().backward()
    g_fast, learner.ctx.grad = learner.ctx.grad.clone(), None
    learner.fast = False
    full = learner(normalize=True)
    (full * torch.arange(full.numel()).reshape(full.shape)).sum().backward()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_fast, learner.ctx.grad, atol=1e-4, rtol=1e-3)
    assert PromptLearner(bundle, CLASSES, n_ctx=6, ctx_init=None, csc=True).shared_prefix == 0


def test_phrase_init_learns_one_vector_per_word_as_coop(tiny):
    """CoOp: n_ctx = len(ctx_init.split(" ")); 'itap of a' is 3 words but 4 BPE tokens (it ap of a)."""
    phrase = "itap of a"
    n_tokens = int(tiny.tokenizer([phrase]).argmax(-1)[0]) - 1
    assert n_tokens == 4
    words = PromptLearner(tiny, CLASSES, ctx_init=phrase)
    tokens = PromptLearner(tiny, CLASSES, ctx_init=phrase, ctx_init_length="tokens")
    assert (words.n_ctx, tokens.n_ctx) == (3, 4)
    ids = tiny.tokenizer([phrase])[0, 1:5]
    torch.testing.assert_close(words.ctx.detach(), tiny.model.token_embedding(ids[:3]).float())
    with torch.no_grad():                                  # the 4th phrase token stays, fixed, before the class
        ref = _encode(tiny, [f"{phrase} {c}." for c in CLEAN])
        torch.testing.assert_close(words(), ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(tokens(), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="ctx_init_length"):
        PromptLearner(tiny, CLASSES, ctx_init=phrase, ctx_init_length="chars")


def test_class_names_ending_in_punctuation_are_not_an_overflow(tiny):
    names = ["Dr.", "St. Bernard", "goldfish"]
    learner = PromptLearner(tiny, names, ctx_init="a photo of a")
    with torch.no_grad():
        torch.testing.assert_close(learner(), _encode(tiny, [f"a photo of a {c}." for c in names]), atol=1e-4, rtol=1e-4)
    assert min(learner.name_lens) >= 1
