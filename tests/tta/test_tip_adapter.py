from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context, Support
from vlmlab.tta.tip_adapter import grid


def _setup(bundle, text, **kw):
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(6, text.shape[1], generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    m = build("tip_adapter", shots=2, augment_epochs=0, **kw)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=Support(keys, labels, None, keys[:3], labels[:3], shots=2)))
    return m, keys


def test_alpha_zero_is_zero_shot(bundle, text):
    m, _ = _setup(bundle, text, alpha=0.0, search=False)
    f = F.normalize(torch.randn(4, text.shape[1]), dim=-1)
    torch.testing.assert_close(m.predict(Batch(torch.arange(4), feats=f)), 100.0 * f @ text.T)


def test_a_cached_key_adds_alpha_to_its_class(bundle, text):
    m, keys = _setup(bundle, text, alpha=1.5, beta=200.0, search=False)   # large beta: only the identical key counts
    out = m.predict(Batch(torch.arange(1), feats=keys[1:2]))
    torch.testing.assert_close(out - 100.0 * keys[1:2] @ text.T, torch.tensor([[0.0, 1.5, 0.0]]), atol=1e-3, rtol=0)


def test_search_grid_is_the_references_and_picks_best_on_validation(bundle, text):
    assert grid(0.1, 7.0, 200)[:2] == [0.1, 0.1 + 6.9 / 200] and len(grid(0.1, 3.0, 20)) == 20
    m, keys = _setup(bundle, text, beta_search=(0.1, 7.0, 10), alpha_search=(0.1, 3.0, 5))
    clip = 100.0 * keys[:3] @ text.T
    best = max((float(((clip + a * m.cache_logits(keys[:3], b)).argmax(1) == torch.arange(3)).float().mean()), -i, -j)
               for i, b in enumerate(grid(0.1, 7.0, 10)) for j, a in enumerate(grid(0.1, 3.0, 5)))
    assert m.val_acc == best[0] * 100
    assert (m.beta, m.alpha) == (grid(0.1, 7.0, 10)[-best[1]], grid(0.1, 3.0, 5)[-best[2]])


def test_keys_average_the_raw_view_features_then_normalise(ctx, monkeypatch):
    """build_cache_model: mean of the raw encoder outputs over the augment epochs, then L2 (not a mean of unit vectors)."""
    import vlmlab.tta.tip_adapter as tip

    n, d = len(ctx.support.labels), ctx.text.shape[1]
    g = torch.Generator().manual_seed(3)
    raw = [torch.randn(n, d, generator=g) * s for s in (1.0, 5.0)]           # epoch 2's features are 5x longer
    calls = []

    def fake_encode(bundle, views, normalize=True):
        out = raw[len(calls)]
        calls.append(normalize)
        return F.normalize(out, dim=-1) if normalize else out

    monkeypatch.setattr(tip, "encode_single", fake_encode)
    expected = {"raw": F.normalize(raw[0] + raw[1], dim=-1),
                "normalized": F.normalize(F.normalize(raw[0], dim=-1) + F.normalize(raw[1], dim=-1), dim=-1)}
    assert not torch.allclose(expected["raw"], expected["normalized"], atol=1e-3)
    for average in ("raw", "normalized"):
        calls.clear()
        m = build("tip_adapter", shots=2, augment_epochs=2, search=False, key_average=average)
        m.setup(ctx)
        torch.testing.assert_close(m.keys, expected[average], rtol=1e-5, atol=1e-6)
        assert calls == [average == "normalized"] * 2


def test_search_on_test_sets_the_grid_best_on_the_test_labels(bundle, text):
    """main_imagenet.py's protocol: search_hp on the test features and labels; the reported accuracy is its best."""
    import pytest
    from vlmlab.tta.tip_adapter import SEARCH_ON
    kw = dict(beta_search=(0.1, 7.0, 10), alpha_search=(0.1, 3.0, 5))
    m, keys = _setup(bundle, text, search_on="test", **kw)
    assert (m.alpha, m.beta) == (1.17, 1.0) and not hasattr(m, "val_acc")          # no validation search
    g = torch.Generator().manual_seed(1)
    f = F.normalize(keys.repeat(4, 1) + 0.8 * torch.randn(24, text.shape[1], generator=g), dim=-1)
    y = torch.randint(0, 3, (24,), generator=g)
    clip = 100.0 * f @ text.T
    brute = max(float(((clip + a * m.cache_logits(f, b)).argmax(1) == y).float().mean()) * 100
                for b in grid(0.1, 7.0, 10) for a in grid(0.1, 3.0, 5))
    assert m.search_test(f, y) == brute
    assert float((m.predict(Batch(torch.arange(24), feats=f)).argmax(1) == y).float().mean()) * 100 == brute
    val, _ = _setup(bundle, text, **kw)
    assert not val.searches_on_test and m.searches_on_test and SEARCH_ON == ("val", "test")
    with pytest.raises(RuntimeError, match="search_on='test'"):
        val.search_test(f, y)
    with pytest.raises(ValueError, match="search_on='train'"):
        _setup(bundle, text, search_on="train")
