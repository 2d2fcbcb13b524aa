"""The only module that imports open_clip: build a ClipBundle from an open_clip (name, pretrained).

``pretrained`` may be an open_clip tag (``"laion2B-s34B-b88K"``, ``"openai"``), a local weight file
(``.pt``/``.bin``/``.safetensors``) or ``None`` (random init; tests only). Nothing here downloads
unless ``VLMLAB_ALLOW_DOWNLOAD=1`` (``vlmlab data fetch`` is the usual way to get weights): a tag
that is not in the local caches stops with an error that says what was looked for and how to get it.
"""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch

from vlmlab.models.bundle import ClipBundle, file_digest

log = logging.getLogger(__name__)


class WeightsNotFound(FileNotFoundError):
    """Raised when pretrained weights are neither a local file nor an obtainable open_clip tag."""


class WeightsUnreadable(ValueError):
    """Raised when a weights file exists but cannot be read (truncated, damaged); names the file."""


def downloads_allowed() -> bool:
    """Whether a run may download weights: only with ``VLMLAB_ALLOW_DOWNLOAD=1`` in the environment."""
    return os.environ.get("VLMLAB_ALLOW_DOWNLOAD", "") == "1"


@contextmanager
def _hub_offline_unless_allowed():
    """Hugging Face Hub offline for the block (read from the cache only) unless downloads are allowed."""
    import huggingface_hub.constants as hub

    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = previous or not downloads_allowed()
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous


def _tag_file(name: str, tag: str) -> Path:
    """The local file behind an open_clip tag (Hugging Face cache, or open_clip's URL cache)."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    try:
        if not cfg.get("hf_hub") and cfg.get("url") and not downloads_allowed():
            cached = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
            if not cached.is_file():
                raise FileNotFoundError(f"{cached} is not there and downloads are off")
        with _hub_offline_unless_allowed():
            found = open_clip.download_pretrained(cfg)
    except Exception as err:  # offline hub miss (FileNotFoundError), or no network for a URL tag
        raise WeightsNotFound(
            f"could not load weights {tag!r} for {name!r}: {err}. Runs do not download (the Makefile "
            f"sets HF_HUB_OFFLINE=1): fetch them once with `vlmlab data fetch --all --notebooks <NB>` or "
            f"`make data PROFILE=paper` (into the Hugging Face cache, ~/.cache/huggingface; `vlmlab data "
            f"status` lists what is missing), or run outside make with VLMLAB_ALLOW_DOWNLOAD=1 and "
            f"HF_HUB_OFFLINE unset, or pass the path of a local weight file.") from err
    if not found:
        raise WeightsNotFound(f"open_clip names no file for {name!r} pretrained={tag!r}; pass a local weight file")
    return Path(found)


def canonical_tag(name: str, tag: str) -> str:
    """open_clip's spelling of a weights tag (``"laion2B-s34B-b88K"`` -> ``"laion2b_s34b_b88k"``).

    open_clip keys its pretrained table by ``tag.lower().replace('-', '_')`` (``pretrained._clean_tag``,
    used by ``get_pretrained_cfg``), so the papers' mixed-case, dashed spelling names the same weights.
    Raises ``WeightsNotFound`` (listing the known tags) when ``tag`` is none of ``name``'s.
    """
    clean = tag.lower().replace("-", "_")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not open_clip.is_pretrained_cfg(name, tag) or clean not in tags:
        raise WeightsNotFound(
            f"pretrained={tag!r} for {name!r} is neither a local file nor a known tag "
            f"(known tags: {tags}). Pass a path to a downloaded .pt/.bin/.safetensors file.")
    return clean


def _weights_id(name: str, pretrained: str | None) -> str:
    """Cache identity of the weights: a content hash for a local file, the canonical tag otherwise."""
    if pretrained is None:
        return "random-init"
    p = Path(str(pretrained)).expanduser()
    if p.is_file():
        return f"{p.name}-{file_digest(p)}"
    return str(pretrained)


def register_config(path: str | Path) -> None:
    """Register an open_clip model config JSON (model name = file stem)."""
    open_clip.add_model_config(str(path))


def trained_with_quick_gelu(name: str, tag: str | None) -> bool:
    """Whether open_clip's table says the weights ``tag`` of ``name`` were trained with QuickGELU (OpenAI's: RN50,
    ViT-B-32, ... ``openai``). Since open_clip 3 the plain architecture configs build ``nn.GELU`` and a mismatch
    only warns, so these weights must be loaded with ``force_quick_gelu=True`` (as OpenAI's ``clip.load``, which
    CoOp and visual_prompting use, builds them)."""
    if tag is None or not open_clip.is_pretrained_cfg(name, tag):
        return False
    return bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))


def load_openclip(name: str, pretrained: str | None, device: str | torch.device = "cpu",
                  weights_id: str | None = None, **kwargs) -> ClipBundle:
    """Create an open_clip model and wrap it in a ClipBundle.

    Args:
        name: open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-16"``.
        pretrained: tag, local file, or ``None`` for random init.
        device: target device.
        weights_id: override for the cache identity of the weights.
        **kwargs: passed to ``open_clip.create_model_and_transforms`` (e.g. ``force_quick_gelu``; by default
            True for a tag trained with QuickGELU: ``trained_with_quick_gelu``).
    """
    if name not in open_clip.list_models():
        raise KeyError(f"unknown open_clip model {name!r}; see open_clip.list_models() "
                       f"(e.g. 'ViT-B-16', 'ViT-B-32', 'RN50') or use 'embedded'")
    source = None
    if pretrained is not None:
        source = Path(str(pretrained)).expanduser()
        if not source.is_file():
            pretrained = canonical_tag(name, str(pretrained))
            source = _tag_file(name, pretrained)
            if trained_with_quick_gelu(name, pretrained):
                kwargs.setdefault("force_quick_gelu", True)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None if pretrained is None else str(pretrained), device=device, **kwargs)
    except Exception as err:
        if source is None:
            raise
        raise WeightsUnreadable(
            f"could not read the weights file {source} ({name!r}, pretrained={pretrained!r}): "
            f"{type(err).__name__}: {err}. A truncated or damaged file (an interrupted copy or download): "
            f"delete it and fetch it again; weights of another architecture: pass the matching model name.") from err
    model.eval()
    if pretrained is None and weights_id is None:  # random init: identify the draw, not just the name
        h = hashlib.sha1()
        for t in model.state_dict().values():
            h.update(t.detach().flatten()[:16].cpu().float().numpy().tobytes())
        weights_id = f"random-init-{h.hexdigest()[:10]}"
    weights_id = weights_id or _weights_id(name, pretrained)
    if kwargs.get("force_quick_gelu"):
        weights_id += "+quickgelu"                   # another model than the same weights under nn.GELU (caches)
    tokenizer = open_clip.get_tokenizer(name)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return ClipBundle(model=model, tokenizer=tokenizer, preprocess=preprocess, name=name,
                      pretrained=None if pretrained is None else str(pretrained),
                      image_size=image_size, mean=mean, std=std,
                      weights_id=weights_id)


def tokenizer_vocab(bundle: ClipBundle) -> dict[int, str]:
    """Token id -> decoded word piece for the bundle's BPE tokenizer (for nearest-word readings)."""
    tok = bundle.tokenizer
    decoder = getattr(tok, "decoder", None)
    if decoder is None:
        raise TypeError(f"tokenizer of {bundle.name!r} has no BPE decoder")
    return {i: s.replace("</w>", "") for i, s in decoder.items()}
