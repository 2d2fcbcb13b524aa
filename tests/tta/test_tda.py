from __future__ import annotations

import math

import pytest

import torch
import torch.nn.functional as F

from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context
from vlmlab.tta.tda import TDA, Cache


def _tda(bundle, text, **kw):
    m = build("tda", **kw)
    m.setup(Context(bundle, ["a", "b", "c"], text))
    m.reset()
    return m


def test_identical_query_gains_alpha_on_its_class(bundle, text):
    m = _tda(bundle, text, neg_alpha=0.0)
    f = F.normalize(text[0:1] + 0.1 * text[1:2], dim=-1)           # predicted class 0
    z = 100.0 * f @ text.T
    out = m.predict(Batch(torch.arange(1), feats=f))               # cached, then read back: affinity 1
    torch.testing.assert_close(out, z + torch.tensor([[2.0, 0.0, 0.0]]), atol=1e-4, rtol=1e-5)


def test_cache_keeps_capacity_and_lowest_entropy_entries():
    g = torch.Generator().manual_seed(0)
    cache = Cache(capacity=3, n_classes=2, dim=1)
    ents = torch.rand(40, generator=g).tolist()
    for i, e in enumerate(ents):
        cache.add(i % 2, torch.tensor([float(i)]), e)
        assert len(cache) <= 6
    for cls in (0, 1):
        # the reference's replace-the-worst policy keeps exactly the 3 lowest of the class
        assert cache.entries(cls) == sorted(e for i, e in enumerate(ents) if i % 2 == cls)[:3]
        kept_keys = {int(k) for k in cache.keys[cls, :, 0]}
        assert kept_keys == {i for i, e in enumerate(ents) if i % 2 == cls and e in cache.entries(cls)}


def _reference_update(cache: dict, pred: int, item: list, capacity: int) -> None:
    """tda_runner.py's update_cache, as written there: append or overwrite the last item, then a stable sort."""
    import operator
    if pred in cache:
        if len(cache[pred]) < capacity:
            cache[pred].append(item)
        elif item[1] < cache[pred][-1][1]:
            cache[pred][-1] = item
        cache[pred] = sorted(cache[pred], key=operator.itemgetter(1))
    else:
        cache[pred] = [item]


def test_cache_holds_the_references_entries_under_tied_entropies():
    """Entropies from a set of 4 values: ties everywhere; the same items survive as in the reference's lists."""
    g = torch.Generator().manual_seed(3)
    ents = [float(v) for v in torch.tensor([0.1, 0.2, 0.3, 0.4])[torch.randint(0, 4, (200,), generator=g)]]
    cls = torch.randint(0, 3, (200,), generator=g).tolist()
    cache, ref = Cache(capacity=3, n_classes=3, dim=1), {}
    for i, (c, e) in enumerate(zip(cls, ents)):
        cache.add(c, torch.tensor([float(i)]), e)
        _reference_update(ref, c, [i, e], 3)
        for k in ref:
            held = {int(x) for x, h in zip(cache.keys[k, :, 0], cache.entropy[k]) if not torch.isinf(h)}
            assert held == {item[0] for item in ref[k]}, (i, k)


def test_negative_cache_only_inside_the_entropy_band(bundle, text):
    m = _tda(bundle, text)
    c = 3
    for f in (text[0:1], F.normalize(text.mean(0, keepdim=True), dim=-1)):
        z = 100.0 * f @ text.T
        h = float(-(z.softmax(1) * z.log_softmax(1)).sum()) / math.log2(c)
        before = len(m.neg)
        m.predict(Batch(torch.arange(1), feats=f))
        assert (len(m.neg) > before) == (0.2 < h < 0.5)


def test_caches_are_emptied_per_stream(bundle, text):
    m = _tda(bundle, text)
    m.predict(Batch(torch.arange(1), feats=text[:1]))
    assert len(m.pos) == 1
    m.reset()
    assert len(m.pos) == 0 and len(m.neg) == 0


def test_vectorised_cache_logits_match_the_reference_loop(bundle, text):
    """TDA's compute_cache_logits, written as the reference loops over classes and entries."""
    m = _tda(bundle, text)
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(text[torch.randint(0, 3, (12,), generator=g)] + 0.3 * torch.randn(12, text.shape[1], generator=g), dim=-1)
    for f in feats[:-1]:
        m.predict(Batch(torch.arange(1), feats=f[None]))
    f = feats[-1:]
    out = m.predict(Batch(torch.arange(1), feats=f))
    z = 100.0 * f @ text.T
    ref = z.clone()
    for cache, alpha, beta, neg in ((m.pos, 2.0, 5.0, False), (m.neg, 0.117, 1.0, True)):
        keys, values = [], []
        for c in range(3):
            for k in range(cache.capacity):
                if cache.entropy[c, k] < float("inf"):
                    keys.append(cache.keys[c, k])
                    p = cache.extra[c, k]
                    values.append(((p > 0.03) & (p < 1.0)).float() if neg else F.one_hot(torch.tensor(c), 3).float())
        if keys:
            a = alpha * torch.exp(-beta * (1 - f @ torch.stack(keys).T)) @ torch.stack(values)
            ref = ref - a if neg else ref + a
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    assert isinstance(m, TDA) and len(m.pos) >= 3


def test_templates_imagenet7_scores_with_the_reference_ensemble(bundle, text, ctx):
    """``templates="imagenet7"``: zero-shot logits from the 7 prompts, each normalised, averaged, normalised
    (TDA's / Tip-Adapter's ``clip_classifier``), computed here prompt by prompt; "run" keeps the run's prompt."""
    from vlmlab.prompts import IMAGENET_TEMPLATES_7

    per_prompt = torch.stack([F.normalize(bundle.encode_texts([t.format(c) for t in IMAGENET_TEMPLATES_7]), dim=-1)
                              .mean(0) for c in ctx.classnames])
    ensemble = F.normalize(per_prompt, dim=-1).cpu()
    assert not torch.allclose(ensemble, text, atol=1e-3)                     # the switch changes something
    torch.testing.assert_close(ctx.class_text("imagenet7"), ensemble, atol=1e-5, rtol=1e-5)
    assert ctx.class_text("run") is ctx.text
    m = build("tda", neg_alpha=0.0, pos_alpha=0.0, templates="imagenet7")
    m.setup(ctx)
    m.reset()
    f = F.normalize(torch.randn(1, text.shape[1], generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.testing.assert_close(m.predict(Batch(torch.arange(1), feats=f)), 100.0 * f @ ensemble.T, atol=1e-4, rtol=1e-5)
    tip = build("tip_adapter", shots=2, augment_epochs=0, search=False, alpha=0.0, templates="imagenet7")
    tip.setup(ctx)
    torch.testing.assert_close(tip.predict(Batch(torch.arange(1), feats=f)), 100.0 * f @ ensemble.T, atol=1e-4, rtol=1e-5)
    import pytest
    with pytest.raises(ValueError, match="imagenet7"):
        ctx.class_text("seven")


def _reference_views(x, text, fraction=0.1):
    """The reference's get_clip_logits for a list of views, line by line (utils.py): entropy per view, the
    int(0.1 V) lowest by argsort, the mean feature and logits, avg_entropy, the mean probability."""
    logits = 100.0 * x @ text.T
    ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idx = torch.argsort(ent, descending=False)[:int(ent.size()[0] * fraction)]
    out = logits[idx]
    lp = out - out.logsumexp(dim=-1, keepdim=True)
    avg = lp.logsumexp(dim=0) - math.log(lp.shape[0])
    loss = -(avg * torch.exp(avg)).sum(dim=-1)
    return x[idx].mean(0).unsqueeze(0), out.mean(0).unsqueeze(0), float(loss), out.softmax(1).mean(0)


def _views(text, n, v, seed):
    g = torch.Generator().manual_seed(seed)
    base = text[torch.randint(0, 3, (n,), generator=g)]
    return F.normalize(base[:, None] + 0.4 * torch.randn(n, v, text.shape[1], generator=g), dim=-1)


def test_augmix_views_read_out_as_the_reference_does(bundle, text):
    m = _tda(bundle, text, views="augmix", n_views=40)
    assert m.inputs == ("augmix_views",) and m.n_views == 40 and build("tda").inputs == ("feats",)
    for x in _views(text, 4, 40, 0):
        f, z, ent, prob = m.confident_views(x)
        rf, rz, rent, rprob = _reference_views(x, text)
        torch.testing.assert_close(f, rf)
        torch.testing.assert_close(z, rz, atol=1e-4, rtol=1e-5)
        assert ent == pytest.approx(rent, rel=1e-5)
        torch.testing.assert_close(prob, rprob)
        assert float(f.norm()) < 1.0                                  # the mean is not renormalised, as the reference


def test_augmix_views_feed_the_caches_the_mean_feature_entropy_and_probability(bundle, text):
    """With the negative band open, each image enters both caches with the reference's multi-view quantities,
    and its logits are the single-view formula applied to the mean feature and mean logits."""
    m = _tda(bundle, text, views="augmix", n_views=20, entropy_band=(0.0, 1.0))
    entered = 0
    for x in _views(text, 6, 20, 1):
        f, z, ent, prob = _reference_views(x, text)
        clocks = m.pos._clock, m.neg._clock
        m.predict(Batch(torch.arange(1), views=x[None]))
        c = int(z.argmax(1))
        if m.pos._clock > clocks[0]:                                   # it entered its class's slots
            slot = int(m.pos.stamp[c].argmax())
            torch.testing.assert_close(m.pos.keys[c, slot], f[0])
            assert float(m.pos.entropy[c, slot]) == pytest.approx(ent, rel=1e-5)
            entered += 1
        if m.neg._clock > clocks[1]:
            torch.testing.assert_close(m.neg.extra[c, int(m.neg.stamp[c].argmax())], prob)
    assert entered >= 3 and len(m.neg) > 0


def test_identical_views_give_the_single_view_run(bundle, text):
    """If every view is the image itself, the readout is the image's feature, logits, entropy and probability:
    the multi-view run equals the single-view run on every image of a stream."""
    single, multi = _tda(bundle, text), _tda(bundle, text, views="augmix", n_views=10)
    for f in _views(text, 8, 1, 2)[:, 0]:
        a = single.predict(Batch(torch.arange(1), feats=f[None]))
        b = multi.predict(Batch(torch.arange(1), views=f[None, None].expand(1, 10, -1)))
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    assert len(single.neg) == len(multi.neg) and len(single.pos) == len(multi.pos)


def test_views_setting_is_checked():
    with pytest.raises(ValueError, match="views"):
        build("tda", views="multi")
    with pytest.raises(ValueError, match="keeps none"):
        build("tda", views="augmix", n_views=9)


def test_augmix_tda_runs_on_a_stream_through_the_runner(bundle, text, toy_stream):
    """The runner encodes the image and its AugMix views of the raw array per item (view 0: the served input)."""
    from vlmlab.tta.base import encode_augmix_views, encode_single, run_stream

    m = _tda(bundle, text, views="augmix", n_views=10)
    logits = run_stream(m, toy_stream, seed=0)
    assert logits.shape == (len(toy_stream), 3) and torch.isfinite(logits).all()
    v = encode_augmix_views(bundle, toy_stream.images, torch.tensor([1, 4]), 10, seed=3)
    assert v.shape == (2, 10, text.shape[1])
    torch.testing.assert_close(v[:, 0], encode_single(bundle, toy_stream.images(torch.tensor([1, 4]))), atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(v[1], encode_augmix_views(bundle, toy_stream.images, torch.tensor([4]), 10, seed=3)[0])
    assert not torch.allclose(v[0, 1], v[0, 2])
