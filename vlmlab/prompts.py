"""Prompt templates, prompt ensembles and zero-shot classifier weights.

Templates are data: ``IMAGENET_TEMPLATES`` are the 80 ImageNet templates of OpenAI's CLIP notebook
``Prompt_Engineering_for_ImageNet.ipynb`` (same order as ``open_clip.zero_shot_metadata``);
``IMAGENET_TEMPLATES_7`` the 7 the notebook singles out (used by Tip-Adapter).

Two ensembles (``zero_shot_weights(mode=...)``), for template embeddings e_t(c) of class c:
    "clip":           w(c) = normalize( mean_t normalize(e_t(c)) )   CLIP notebook, TDA, Tip-Adapter
    "mean_then_norm": w(c) = normalize( mean_t e_t(c) )              UniInfo (uniinfo_tta.md §2.1)
With one template both are normalize(e(c)).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.models.bundle import ClipBundle
from vlmlab.runtime import autocast

SIMPLE_TEMPLATE = "a photo of a {}."

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.",
    "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)

IMAGENET_TEMPLATES_7: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

MODES = ("clip", "mean_then_norm")


def _templates(templates: str | Sequence[str]) -> list[str]:
    out = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in out if t.count("{}") != 1]
    if not out or bad:
        raise ValueError(f"templates need exactly one '{{}}' each; got {bad or out!r}")
    return out


def clean_classname(name: str) -> str:
    """CoOp's rule: underscores become spaces ("sea_lake" -> "sea lake")."""
    return name.replace("_", " ").strip()


def fill(templates: str | Sequence[str], classnames: Sequence[str], clean: bool = True) -> list[list[str]]:
    """Prompts per class: ``out[c][t] = templates[t].format(classnames[c])`` (C lists of T strings)."""
    ts = _templates(templates)
    return [[t.format(clean_classname(c) if clean else c) for t in ts] for c in classnames]


def zero_shot_weights(bundle: ClipBundle, classnames: Sequence[str], templates: str | Sequence[str] = SIMPLE_TEMPLATE,
                      mode: str = "clip", batch_size: int = 1024) -> Tensor:
    """Text classifier from a prompt ensemble.

    Args:
        bundle: the model.
        classnames: C names.
        templates: one template or T templates with one ``{}``.
        mode: ``"clip"`` or ``"mean_then_norm"`` (see the module docstring).
        batch_size: prompts encoded per forward pass; all C*T prompts go through in chunks.
    Returns:
        (C, D) float32 unit rows, on the bundle's device; a normal tensor (usable in autograd).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {MODES}")
    prompts = fill(templates, classnames)
    n_t = len(prompts[0]) if prompts else 1
    flat = [p for per_class in prompts for p in per_class]                       # C*T, class-major
    with torch.inference_mode(), autocast(bundle.device):
        emb = bundle.encode_texts(flat, normalize=(mode == "clip"), batch_size=batch_size)  # (C*T, D)
    emb = emb.float().reshape(len(prompts), n_t, -1)                             # (C, T, D), a normal tensor
    return F.normalize(emb.mean(dim=1), dim=-1)                                  # (C, D)


def zero_shot_logits(feats: Tensor, weights: Tensor, scale: float = 100.0) -> Tensor:
    """``scale * feats @ weights.T``: (N, D) x (C, D) -> (N, C), on ``feats``' device and dtype.

    ``scale`` is usually ``bundle.logit_scale`` (100 for OpenAI CLIP).
    """
    return scale * feats @ weights.to(device=feats.device, dtype=feats.dtype).T


# LearnableContext: the CoOp/TPT learnable prompt context (shared by vlmlab.coop and vlmlab.tta.tpt)
# goes here; not implemented yet.
