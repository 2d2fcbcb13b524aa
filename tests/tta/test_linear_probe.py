from __future__ import annotations

import pytest
import torch

from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context, Support


def _clusters(n_per: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 8) * 4.0
    x = torch.cat([c + 0.3 * torch.randn(n_per, 8, generator=g) for c in centres])
    return x, torch.arange(3).repeat_interleave(n_per)


def test_linear_probe_separates_separable_features(bundle, text):
    (x, y), (xv, yv), (xt, yt) = _clusters(5, 0), _clusters(4, 1), _clusters(50, 2)
    m = build("linear_probe", shots=5, refine=2)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=Support(x, y, None, xv, yv, shots=5)))
    assert m.probe.val_acc == 100.0                                   # C chosen on validation, not test
    assert torch.equal(m.predict(Batch(torch.arange(len(xt)), feats=xt)).argmax(1), yt)


def test_linear_probe_refuses_a_support_of_other_shots(bundle, text):
    x, y = _clusters(1, 0)
    with pytest.raises(ValueError, match="shots=5 but the support set holds 1"):
        build("linear_probe", shots=5).setup(Context(bundle, ["a", "b", "c"], text,
                                                     support=Support(x, y, None, x, y, shots=1)))
