"""Linear probe on frozen features, with CoOp's C search (Zhou et al., arXiv:2109.01134, ``lpclip/``).

Logistic regression (L2, lbfgs) on image features; C is chosen on a *validation* split, never on
test: first the coarse grid {1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6}, then ``refine`` rounds of
bisection in log10 space inside [0.1·C*, 10·C*], keeping the best validation accuracy.
Departure: the reference reports the test accuracy of the last bisection round; we keep the C
with the best validation accuracy (ties: the larger C), which is what a user would deploy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

COARSE_C = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@dataclass
class LinearProbe:
    """A fitted probe. ``logits(feats) -> (N, C)`` decision values over all ``n_classes``."""

    clf: LogisticRegression
    C: float
    val_acc: float
    n_classes: int

    def logits(self, feats) -> torch.Tensor:
        x = _np(feats)
        out = np.full((len(x), self.n_classes), -1e9, np.float32)
        dec = self.clf.decision_function(x)
        if dec.ndim == 1:  # binary sklearn output
            dec = np.stack([-dec, dec], 1)
        out[:, self.clf.classes_] = dec
        return torch.from_numpy(out)

    def predict(self, feats) -> torch.Tensor:
        return self.logits(feats).argmax(1)


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


def _fit(x, y, C, max_iter, seed):
    return LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(x, y)


def fit_linear_probe(train_feats, train_labels, val_feats=None, val_labels=None, *, C: float | None = None,
                     refine: int = 4, max_iter: int = 1000, seed: int = 0,
                     n_classes: int | None = None) -> LinearProbe:
    """Fit a logistic-regression probe, searching C on (val_feats, val_labels).

    Args:
        train_feats: (N, D) features. train_labels: (N,) ints.
        val_feats, val_labels: validation split for the C search (required unless ``C`` is given).
        C: fixed inverse regularisation (skips the search).
        refine: bisection rounds after the coarse grid (CoOp uses 8).
        n_classes: total classes (so logits have a column for classes absent from training).
    """
    x, y = _np(train_feats), _np(train_labels).astype(int)
    n_classes = n_classes or int(y.max()) + 1
    if C is not None:
        return LinearProbe(_fit(x, y, C, max_iter, seed), C, float("nan"), n_classes)
    if val_feats is None or val_labels is None:
        raise ValueError("fit_linear_probe needs val_feats/val_labels to search C (or pass C=...)")
    xv, yv = _np(val_feats), _np(val_labels).astype(int)

    def score(c):
        clf = _fit(x, y, c, max_iter, seed)
        return float((clf.predict(xv) == yv).mean() * 100), clf

    results = {c: score(c) for c in COARSE_C}
    best = max(results, key=lambda c: (results[c][0], c))
    lo, hi = np.log10(best) - 1, np.log10(best) + 1
    for _ in range(refine):
        mid_lo, mid_hi = 10 ** ((2 * lo + hi) / 3), 10 ** ((lo + 2 * hi) / 3)
        for c in (mid_lo, mid_hi):
            if c not in results:
                results[c] = score(c)
        if results[mid_lo][0] >= results[mid_hi][0]:
            hi = np.log10(mid_hi)
        else:
            lo = np.log10(mid_lo)
    best = max(results, key=lambda c: (results[c][0], c))
    acc, clf = results[best]
    return LinearProbe(clf, float(best), acc, n_classes)
