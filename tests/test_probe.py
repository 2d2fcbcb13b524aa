"""vlmlab.probe: lpclip's C search, step by step on hand-computed score functions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vlmlab.probe import COARSE_C, fit_linear_probe, search_C


def test_search_moves_towards_the_better_end_point_and_reports_the_last_round():
    # score = -|log10 C - 0.3|: coarse best 1; rounds: [0.1, 10] -> 10, [1, 10] -> 1,
    # [1, 10^0.5] -> 10^0.5, [10^0.25, 10^0.5] -> 10^0.25 (by hand from lpclip/linear_probe.py)
    def score(c):
        return -abs(math.log10(c) - 0.3)
    expected = {1: 10.0, 2: 1.0, 3: 10 ** 0.5, 4: 10 ** 0.25}
    for refine, c in expected.items():
        assert search_C(score, refine)[0] == pytest.approx(c, rel=1e-12)
    _, history = search_C(score, 2)
    assert [c for c, _ in history] == [*COARSE_C, 0.1, 10.0]        # each C fitted once, in order


def test_ties_take_the_larger_C_on_the_grid_and_the_smaller_end_point_after():
    c, _ = search_C(lambda c: 0.5, refine=0)
    assert c == 1e6                                                  # np.argmax: the first (largest) C
    c, _ = search_C(lambda c: 0.5, refine=3)
    assert c == pytest.approx(1e5)                                   # left end on every tie


def test_the_last_round_wins_even_over_a_better_C_seen_before():
    # a spike at C = 1 exactly: both end points 0.1 and 10 score 0, the tie takes 0.1 (lpclip);
    # keeping the best C ever seen would return 1 instead.
    assert search_C(lambda c: 1.0 if c == 1.0 else 0.0, refine=1)[0] == pytest.approx(0.1)


def test_fit_linear_probe_uses_the_searched_C_and_its_validation_accuracy():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1.0, (20, 4)) for m in (-1, 1)]).astype(np.float32)
    y = np.repeat([0, 1], 20)
    xv = np.concatenate([rng.normal(m, 1.0, (10, 4)) for m in (-1, 1)]).astype(np.float32)
    yv = np.repeat([0, 1], 10)
    probe = fit_linear_probe(x, y, xv, yv, refine=3)
    from sklearn.linear_model import LogisticRegression
    acc = lambda c: float((LogisticRegression(C=c, max_iter=1000, random_state=0).fit(x, y).predict(xv) == yv).mean() * 100)
    c, _ = search_C(acc, 3)
    assert probe.C == c and probe.val_acc == acc(c)


def test_each_fit_runs_with_the_asked_blas_threads(monkeypatch):
    import sklearn.linear_model
    import torch
    from threadpoolctl import threadpool_info
    import vlmlab.probe as probe

    seen = []
    real_fit = sklearn.linear_model.LogisticRegression.fit

    def fit(self, x, y):
        seen.append(max((i["num_threads"] for i in threadpool_info()), default=1))
        return real_fit(self, x, y)

    monkeypatch.setattr(sklearn.linear_model.LogisticRegression, "fit", fit)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 8, generator=g), torch.arange(40) % 4
    probe.fit_linear_probe(x, y, x, y, refine=1)
    assert seen and set(seen) == {1}
    seen.clear()
    probe.fit_linear_probe(x, y, C=1.0, threads=None)                # the process's setting, untouched
    assert seen == [max((i["num_threads"] for i in threadpool_info()), default=1)]


def test_the_fit_is_float64_as_lpclips_and_float32_on_request():
    """lpclip fits on float64 features; ``dtype="float32"`` is the old fit. Each equals scikit-learn on arrays of
    that dtype, and the two differ."""
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (60, 16)).astype(np.float32)
    y = np.arange(60) % 3
    for dtype in ("float64", "float32"):
        probe = fit_linear_probe(x, y, C=100.0, dtype=dtype)
        ref = LogisticRegression(C=100.0, max_iter=1000, random_state=0).fit(x.astype(dtype), y)
        assert probe.clf.coef_.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(probe.clf.coef_, ref.coef_)
        np.testing.assert_array_equal(probe.logits(x).numpy(), ref.decision_function(x.astype(dtype)).astype(np.float32))
    assert not np.array_equal(fit_linear_probe(x, y, C=100.0).clf.coef_,
                              fit_linear_probe(x, y, C=100.0, dtype="float32").clf.coef_)
    with pytest.raises(ValueError, match="dtype"):
        fit_linear_probe(x, y, C=1.0, dtype="float16")
