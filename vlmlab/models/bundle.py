"""ClipBundle: the one interface every method sees, whatever the profile.

A bundle wraps an open_clip ``CLIP`` model (the embedded one or a real one) with its
tokenizer and evaluation transform. Methods never ask which model they hold: they call
``encode_images`` / ``encode_texts`` and read ``logit_scale`` and ``embed_dim``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from vlmlab.results import atomic_path
from vlmlab.runtime import autocast, cache_root, effective_precision, get_logger

log = get_logger(__name__)

_DIGESTS: dict[tuple, str] = {}   # (path, size, mtime_ns, ctime_ns, inode) -> digest, this process
_RACY_NS = 2_000_000_000          # a stat younger than this when hashed may hide a same-tick rewrite


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _memo_path(path: Path) -> Path:
    return cache_root() / "digests" / (hashlib.sha1(str(path).encode()).hexdigest()[:20] + ".json")


def _read_memo(path: Path, key: tuple) -> str | None:
    try:
        memo = json.loads(_memo_path(path).read_text())
    except (OSError, ValueError):
        return None
    return memo.get("digest") if memo.get("stat") == list(key) else None


def _hash_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:12]


def file_digest(path: str | os.PathLike) -> str:
    """Content id of a weight file: the first 12 hex digits of the sha1 of its bytes.

    Hashing a 600 MB checkpoint takes about a second, so the digest is memoised, in this process
    and in ``cache_root()/digests``, under the file's (path, size, mtime, ctime, inode). A memo is
    only written when the file's timestamps were at least 2 s old at hashing time (git's "racy
    clean" rule): a same-size rewrite within one clock tick keeps mtime, so it must not be trusted.
    """
    path = Path(path).expanduser().resolve()
    key = _stat_key(path)
    digest = _DIGESTS.get(key) or _read_memo(path, key)
    if digest:
        return digest
    digest = _hash_file(path)
    if _stat_key(path) == key and time.time_ns() - max(key[2], key[3]) > _RACY_NS:
        _DIGESTS[key] = digest
        try:
            with atomic_path(_memo_path(path)) as tmp:
                tmp.write_text(json.dumps({"path": str(path), "stat": list(key), "digest": digest}))
        except OSError as err:  # a read-only cache only costs a rehash next time
            log.debug("could not memoise the digest of %s: %s", path, err)
    return digest


@dataclass
class ClipBundle:
    """A CLIP model with everything needed to use it.

    Attributes:
        model: open_clip ``CLIP`` (has ``visual``, ``encode_image``, ``encode_text``, ``logit_scale``).
        tokenizer: callable ``list[str] -> LongTensor (N, context_length)``.
        preprocess: evaluation transform, ``PIL.Image -> FloatTensor (3, S, S)``.
        name: model name (``"embedded"`` or an open_clip architecture such as ``"ViT-B-16"``).
        pretrained: weight tag or file (``None`` = random init, tests only).
        image_size: side of the square input ``S``.
        mean, std: per-channel normalisation used by ``preprocess``.
        weights_id: short stable id of the weights, used in feature-cache keys.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``: the autocast dtype of every forward pass
            (``autocast()``); on the CPU bf16 autocasts and fp16 runs fp32 (``vlmlab.runtime.effective_precision``).
    """

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]
    preprocess: Callable
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_id: str
    extra: dict = field(default_factory=dict)
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if proj is not None:
            return int(proj.shape[-1] if isinstance(proj, Tensor) else proj.out_features)
        return int(self.model.visual.output_dim)

    @property
    def logit_scale(self) -> float:
        """exp(learned logit scale), i.e. 1/temperature (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.exp().item())

    @property
    def identity(self) -> str:
        """Cache-key identity: model name and weights (and the precision, when the forward passes are not fp32)."""
        run = effective_precision(self.device, self.precision)
        return f"{self.name}@{self.weights_id}" + (f"@{run}" if run != "fp32" else "")

    def autocast(self):
        """The autocast context of this bundle's forward passes (``vlmlab.runtime.autocast``)."""
        return autocast(self.device, self.precision)

    def normalize_pixels(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> normalised model input (device/dtype of ``x``)."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, x: Tensor, normalize: bool = True) -> Tensor:
        """Normalised model input (B, 3, S, S) -> embeddings (B, D)."""
        z = self.model.encode_image(x.to(self.device))
        return F.normalize(z.float(), dim=-1) if normalize else z

    def encode_texts(self, texts: list[str], normalize: bool = True, batch_size: int = 256) -> Tensor:
        """List of N strings -> embeddings (N, D), batched."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i : i + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        z = torch.cat(out) if out else torch.empty(0, self.embed_dim)
        return F.normalize(z, dim=-1) if normalize else z
