from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlmlab.prompts import PromptLearner
from vlmlab.tta import build, run_stream
from vlmlab.tta.base import Batch, Context, Stream
from vlmlab.tta.tpt import marginal_entropy, select_confident

from tta_helpers import CLASSNAMES


def _views(n=5, v=8, d=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, v, d, generator=g), dim=-1)


def _tpt(bundle, text, **kw):
    m = build("tpt", n_views=8, **kw)
    m.setup(Context(bundle, CLASSNAMES, text))
    return m


def test_prediction_does_not_depend_on_earlier_images(bundle, text):
    views = _views()
    stream = Stream(torch.zeros(5, dtype=torch.long), views=views)
    m = _tpt(bundle, text)
    a, b = run_stream(m, stream, seed=0), run_stream(m, stream, seed=1)   # two visiting orders
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    m.reset()
    alone = m.predict(Batch(torch.tensor([4]), views=views[4:5]))
    torch.testing.assert_close(a[4:5], alone, atol=1e-5, rtol=1e-5)


def test_one_adamw_step_on_the_context_only(bundle, text):
    m = _tpt(bundle, text, selection=0.25)
    m.reset()
    ctx0 = m.learner.ctx.detach().clone()
    x = _views(1)[0]
    # the gradient, computed independently on a fresh learner
    ref = PromptLearner(bundle, CLASSNAMES, n_ctx=4, ctx_init="a photo of a")
    logits = m.logit_scale * x @ F.normalize(ref().float(), dim=-1).T
    keep = select_confident(logits.detach(), 0.25)
    assert len(keep) == 2
    p = logits[keep].softmax(1).mean(0)
    (-(p * p.log()).sum()).backward()
    g = ref.ctx.grad
    m.predict(Batch(torch.tensor([0]), views=x[None]))
    expected = ctx0 * (1 - 5e-3 * 0.01) - 5e-3 * g / (g.abs() + 1e-8)   # Adam's first step: lr * sign(g)
    torch.testing.assert_close(m.learner.ctx.detach(), expected, atol=1e-6, rtol=1e-4)
    m.reset()
    assert torch.equal(m.learner.ctx.detach(), ctx0)


def test_marginal_entropy_and_selection():
    logits = torch.randn(64, 7, generator=torch.Generator().manual_seed(0)) * 3
    p = logits.softmax(1).mean(0)
    assert float(marginal_entropy(logits)) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)
    keep = select_confident(logits, 0.1)
    ent = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    assert len(keep) == 6 and set(keep.tolist()) == set(ent.argsort()[:6].tolist())


def test_the_text_pass_runs_under_the_bundles_autocast(bundle, text, monkeypatch):
    """The reference tunes and predicts under fp16 autocast; here both text passes enter ``bundle.autocast()``."""
    import contextlib
    inside, calls = [False], []

    @contextlib.contextmanager
    def spy():
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

    real = PromptLearner.forward

    def forward(self, *a, **k):
        calls.append(inside[0])
        return real(self, *a, **k)

    m = _tpt(bundle, text)
    m.reset()
    monkeypatch.setattr(m.learner.bundle, "autocast", spy)
    monkeypatch.setattr(PromptLearner, "forward", forward)
    m.predict(Batch(torch.tensor([0]), views=_views(1)))
    assert calls == [True, True]                                  # the tuning step's and the prediction's
