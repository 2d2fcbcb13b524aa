"""Model loading: ``load_clip`` returns a ClipBundle for the embedded model or any open_clip pair."""
from __future__ import annotations

import torch

from vlmlab.models.bundle import ClipBundle
from vlmlab.runtime import PRECISIONS, resolve_device


def load_clip(name: str = "embedded", pretrained: str | None = None,
              device: str | torch.device = "auto", precision: str = "fp32", **kwargs) -> ClipBundle:
    """Load a CLIP model as a ClipBundle.

    Args:
        name: ``"embedded"`` (the shipped world model) or an open_clip architecture ("ViT-B-16").
        pretrained: for open_clip, a tag ("laion2B-s34B-b88K", "openai") or local weight file;
            ``None`` gives random init (tests). For "embedded", an optional weights file.
        device: "auto", "cpu", "cuda".
        precision: autocast dtype of forward passes, ``"fp32"`` (off), ``"fp16"`` or ``"bf16"``
            (``vlmlab.runtime.autocast``; on the CPU fp16 runs fp32, ``effective_precision``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; use one of {sorted(PRECISIONS)}")
    dev = resolve_device(device)
    if name == "embedded":
        from vlmlab.models.embedded import load_embedded
        bundle = load_embedded(dev, pretrained)
    else:
        from vlmlab.models.openclip import load_openclip
        bundle = load_openclip(name, pretrained, dev, **kwargs)
    bundle.precision = precision
    return bundle


__all__ = ["ClipBundle", "load_clip"]
