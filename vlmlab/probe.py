"""Linear probe on frozen features, with CoOp's C search (Zhou et al., arXiv:2109.01134, ``lpclip/``).

Logistic regression (L2, lbfgs, max_iter 1000) on image features; C is chosen on a *validation*
split, never on test, as ``lpclip/linear_probe.py`` (KaiyangZhou/CoOp @ ff61507) does it:

1. coarse grid {1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}: C* = the first best (ties: the larger C);
2. ``refine`` rounds (lpclip: 8) on the interval [C*/10, 10·C*]: fit both end points; the better
   one (ties: the *smaller* C) is the round's C, and the interval becomes [log-midpoint, better
   end] (or [better end, log-midpoint]);
3. the reported probe is the last round's C (not the best C ever seen).

Which features it sees is the caller's choice: lpclip's are the image encoder's output, not normalised,
and every notebook's linear-probe baseline fits those by default (``check_features``: "raw" or "normalized"); see each
caller's docstring and ``docs/fidelity.md``. The fit runs on float64 features, as
lpclip's (``feat_extractor.py`` stores them with ``.tolist()`` and ``np.savez``); ``dtype="float32"`` is
vlmlab's behaviour before 2026-12-04, where scikit-learn's lbfgs ran the grid's Python-float Cs in
float32 and the refined numpy-float64 Cs in float64 (numpy 2's promotion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@dataclass
class LinearProbe:
    """A fitted probe. ``logits(feats) -> (N, C)`` decision values over all ``n_classes``."""

    clf: LogisticRegression
    C: float
    val_acc: float
    n_classes: int

    def logits(self, feats) -> torch.Tensor:
        x = _np(feats, self.clf.coef_.dtype)
        out = np.full((len(x), self.n_classes), -1e9, np.float32)
        dec = self.clf.decision_function(x)
        if dec.ndim == 1:  # binary sklearn output
            dec = np.stack([-dec, dec], 1)
        out[:, self.clf.classes_] = dec
        return torch.from_numpy(out)

    def predict(self, feats) -> torch.Tensor:
        return self.logits(feats).argmax(1)


DTYPES = ("float64", "float32")


def _one_of(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; use one of {choices}")
    return value


def check_dtype(dtype: str, name: str = "dtype") -> str:
    """``dtype`` if it is one of ``DTYPES`` (the fit's feature dtype), else a ValueError naming ``name``."""
    return _one_of(dtype, DTYPES, name)


FEATURES = ("raw", "normalized")


def check_features(kind: str, name: str = "features") -> str:
    """``kind`` if it is one of ``FEATURES`` (which image features a probe fits: "raw", the encoder's output as
    lpclip's, or "normalized", unit rows), else a ValueError naming ``name``."""
    return _one_of(kind, FEATURES, name)


def probe_input(features, kind: str):
    """The rows a probe fits or scores: ``features.raw`` for "raw", ``features.feats`` (unit rows) for
    "normalized" (``features``: ``vlmlab.features.Features``)."""
    return features.raw if check_features(kind) == "raw" else features.feats


def _np(x, dtype=np.float32) -> np.ndarray:
    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x
    return np.asarray(x, dtype)


def _fit(x, y, C, max_iter, seed, threads: int | None = 1):
    """One lbfgs fit with at most ``threads`` BLAS threads (``None``: the process's setting). These problems
    are small: on 2 cores a 640 x 128 x 20-class search took 8.2 s with the default threads, 0.34 s with one."""
    with threadpool_limits(threads):
        return LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x, y)


def search_C(score: Callable[[float], float], refine: int = 8) -> tuple[float, list[tuple[float, float]]]:
    """lpclip's C search over a validation score (module docstring); returns ``(C, [(C, score), ...])``.

    ``score(C)`` is called once per distinct C (memoised); the history lists calls in order.
    """
    seen: dict[float, float] = {}

    def val(c: float) -> float:
        if c not in seen:
            seen[c] = score(c)
        return seen[c]

    coarse = [val(c) for c in COARSE_C]
    c_best = COARSE_C[int(np.argmax(coarse))]               # np.argmax: first maximum, the larger C
    left, right = 0.1 * c_best, 10.0 * c_best
    for _ in range(refine):
        acc_left, acc_right = val(left), val(right)
        mid = 10 ** (0.5 * (np.log10(left) + np.log10(right)))
        if acc_left < acc_right:
            c_best, left = right, mid
        else:                                                # ties go to the smaller C, as in lpclip
            c_best, right = left, mid
    return float(c_best), list(seen.items())


def fit_linear_probe(train_feats, train_labels, val_feats=None, val_labels=None, *, C: float | None = None,
                     refine: int = 8, max_iter: int = 1000, seed: int = 0,
                     n_classes: int | None = None, threads: int | None = 1, dtype: str = "float64") -> LinearProbe:
    """Fit a logistic-regression probe, searching C on (val_feats, val_labels) as lpclip does.

    Args:
        train_feats: (N, D) features. train_labels: (N,) ints.
        val_feats, val_labels: validation split for the C search (required unless ``C`` is given).
        C: fixed inverse regularisation (skips the search).
        refine: rounds of the end-point search after the coarse grid (lpclip: 8; 0 keeps the grid's C).
        n_classes: total classes (so logits have a column for classes absent from training).
        threads: BLAS threads of each fit (default 1: faster on these small problems; ``None`` leaves the
            process's setting, e.g. for a probe on a full training set).
        dtype: the features' dtype in the fit: "float64" (lpclip's) or "float32" (vlmlab before 2026-12-04;
            docs/fidelity.md).
    """
    check_dtype(dtype, "fit_linear_probe: dtype")
    x, y = _np(train_feats, dtype), _np(train_labels).astype(int)
    n_classes = n_classes or int(y.max()) + 1
    if C is not None:
        return LinearProbe(_fit(x, y, C, max_iter, seed, threads), C, float("nan"), n_classes)
    if val_feats is None or val_labels is None:
        raise ValueError("fit_linear_probe needs val_feats/val_labels to search C (or pass C=...)")
    xv, yv = _np(val_feats, dtype), _np(val_labels).astype(int)
    fitted: dict[float, tuple[float, LogisticRegression]] = {}

    def score(c: float) -> float:
        clf = _fit(x, y, c, max_iter, seed, threads)
        fitted[c] = (float((clf.predict(xv) == yv).mean() * 100), clf)
        return fitted[c][0]

    best, _ = search_C(score, refine)
    acc, clf = fitted[best]
    return LinearProbe(clf, best, acc, n_classes)
