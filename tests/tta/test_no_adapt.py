from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context


def test_no_adapt_is_scaled_cosine_and_classifies_text_like_features(bundle, text):
    m = build("no_adapt", logit_scale=50.0)
    m.setup(Context(bundle, ["a", "b", "c"], text))
    f = F.normalize(text + 0.01 * torch.randn(text.shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = m.predict(Batch(torch.arange(3), feats=f))
    torch.testing.assert_close(out, 50.0 * f @ text.T)
    assert torch.equal(out.argmax(1), torch.arange(3))
