from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmlab.probe import fit_linear_probe
from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context, Stream, Support, run_stream


def _clusters(n_per: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 8) * 4.0
    x = torch.cat([c + 0.3 * torch.randn(n_per, 8, generator=g) for c in centres])
    return x, torch.arange(3).repeat_interleave(n_per)


def _support(x, y, xv, yv, shots):
    """A support set of encoder outputs ``x``, ``xv``: unit rows and their norms, as the feature cache keeps them."""
    return Support(F.normalize(x, dim=-1), y, None, F.normalize(xv, dim=-1), yv, shots=shots,
                   norms=x.norm(dim=-1), val_norms=xv.norm(dim=-1))


def test_linear_probe_separates_separable_features(bundle, text):
    (x, y), (xv, yv), (xt, yt) = _clusters(5, 0), _clusters(4, 1), _clusters(50, 2)
    m = build("linear_probe", shots=5, refine=2)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=_support(x, y, xv, yv, 5)))
    assert m.probe.val_acc == 100.0                                   # C chosen on validation, not test
    assert torch.equal(m.predict(Batch(torch.arange(len(xt)), raw_feats=xt)).argmax(1), yt)


def _scaled(seed: int, n_per: int):
    """Encoder outputs whose norms vary by a factor of 4 within each class, so raw and unit features differ."""
    x, y = _clusters(n_per, seed)
    x = x + torch.randn(len(x), 8, generator=torch.Generator().manual_seed(seed + 10))
    return x * torch.linspace(0.5, 2.0, len(x))[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
                                                ][:, None], y


@pytest.mark.parametrize("features", ["raw", "normalized"])
def test_linear_probe_fits_the_features_it_is_told_exactly_as_fit_linear_probe(bundle, text, features):
    """lpclip fits the encoder's output (``features: raw``, the default); ``normalized`` fits unit rows. Each equals
    ``fit_linear_probe`` on those rows, and it scores the same kind of rows at test time."""
    (x, y), (xv, yv), (xt, _) = _scaled(0, 6), _scaled(1, 4), _scaled(2, 20)
    kind = {} if features == "raw" else {"features": "normalized"}
    m = build("linear_probe", shots=6, refine=3, **kind)
    assert m.inputs == (("raw_feats",) if features == "raw" else ("feats",))
    s = _support(x, y, xv, yv, 6)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=s, seed=3))
    if features == "raw":            # the cache's unit rows times their norms: the encoder output to float rounding
        assert torch.allclose(s.raw("train"), x, rtol=1e-6, atol=1e-6) and not torch.equal(s.raw("train"), s.feats)
        rows = (s.raw("train"), s.raw("val"))
    else:
        rows = (s.feats, s.val_feats)
    f = (lambda z: z) if features == "raw" else (lambda z: F.normalize(z, dim=-1))
    ref = fit_linear_probe(rows[0], y, rows[1], yv, refine=3, seed=3, n_classes=3)
    assert m.probe.C == ref.C
    got = m.predict(Batch(torch.arange(len(xt)), feats=F.normalize(xt, dim=-1), raw_feats=xt))
    assert torch.equal(got, ref.logits(f(xt)))


def test_raw_and_normalized_probes_differ_when_norms_vary(bundle, text):
    (x, y), (xv, yv), (xt, _) = _scaled(0, 6), _scaled(1, 4), _scaled(2, 20)
    out = []
    for kind in ("raw", "normalized"):
        m = build("linear_probe", shots=6, refine=3, features=kind)
        m.setup(Context(bundle, ["a", "b", "c"], text, support=_support(x, y, xv, yv, 6)))
        out.append(m.predict(Batch(torch.arange(len(xt)), feats=F.normalize(xt, dim=-1), raw_feats=xt)))
    assert not torch.allclose(out[0], out[1])


def test_the_runner_hands_the_probe_cached_feats_times_norms_or_encodes_them(bundle, text, toy_stream, support):
    """A stream with cached unit features and norms gives ``raw_feats = feats * norms``; without them the runner
    encodes the images unnormalised. Both give the probe the same logits (to float rounding)."""
    m = build("linear_probe", shots=2, refine=1)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=support))
    uncached = run_stream(m, toy_stream, seed=0)
    z = torch.cat([bundle.encode_images(toy_stream.images(torch.arange(6)), normalize=False).float()])
    cached = Stream(toy_stream.labels, None, F.normalize(z, dim=-1), name="toy", norms=z.norm(dim=-1))
    assert torch.allclose(run_stream(m, cached, seed=0), uncached, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no images"):                # unit features alone cannot give raw ones
        run_stream(m, Stream(toy_stream.labels, None, F.normalize(z, dim=-1), name="toy"), seed=0)


def test_raw_features_need_the_support_sets_norms(bundle, text):
    x, y = _clusters(2, 0)
    with pytest.raises(ValueError, match="carries no norms"):
        build("linear_probe", shots=2).setup(Context(bundle, ["a", "b", "c"], text,
                                                     support=Support(x, y, None, x, y, shots=2)))
    with pytest.raises(ValueError, match="features='unit'"):
        build("linear_probe", shots=2, features="unit")


def test_linear_probe_refuses_a_support_of_other_shots(bundle, text):
    x, y = _clusters(1, 0)
    with pytest.raises(ValueError, match="shots=5 but the support set holds 1"):
        build("linear_probe", shots=5).setup(Context(bundle, ["a", "b", "c"], text,
                                                     support=_support(x, y, x, y, 1)))
