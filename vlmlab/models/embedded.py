"""The embedded CLIP: a small open_clip model trained on the procedural world, shipped in the package.

Architecture (``vlmlab/assets/embedded.json``, registered with open_clip under the name
``embedded``): open_clip's ``ModifiedResNet`` image tower (width 16, one bottleneck per stage,
64 px input) ending in its attention pool, and open_clip's text transformer with the standard
49,408-token BPE tokenizer. Weights: ``vlmlab/assets/embedded.safetensors`` (float16),
produced by ``make train-embedded``; see ``vlmlab/assets/MODEL_CARD.md``.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlmlab.models.bundle import ClipBundle, file_digest
from vlmlab.models.openclip import WeightsUnreadable, load_openclip, register_config
from vlmlab.runtime import PACKAGE_ROOT

ASSETS = PACKAGE_ROOT / "assets"
CONFIG_PATH = ASSETS / "embedded.json"
WEIGHTS_PATH = ASSETS / "embedded.safetensors"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or damaged file raises ``WeightsUnreadable`` naming it."""
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors' own message names no file
        raise WeightsUnreadable(
            f"could not read the weights file {path}: {type(err).__name__}: {err}. It is truncated or damaged: "
            f"copy it again (the shipped {WEIGHTS_PATH.name}: `git checkout -- vlmlab/assets/{WEIGHTS_PATH.name}` "
            f"restores it, `make train-embedded` rebuilds it).") from err


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _weights_follow():
    """Silence open_clip's 'initialized randomly' warning while the shipped weights are about to be loaded."""
    root, notice = logging.getLogger(), _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def build_embedded(device: str | torch.device = "cpu") -> ClipBundle:
    """The embedded architecture with random weights (training starts here)."""
    register_config(CONFIG_PATH)
    return load_openclip("embedded", None, device, weights_id="random-init")


def load_embedded(device: str | torch.device = "cpu", weights: str | Path | None = None) -> ClipBundle:
    """Load the shipped embedded CLIP (offline, CPU-fast).

    Args:
        device: target device.
        weights: a safetensors file to load instead of the shipped one.
    """
    path = Path(weights) if weights else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"embedded CLIP weights not found at {path}; they ship with the package "
                                f"(git checkout restores them) or are rebuilt by `make train-embedded`")
    with _weights_follow():
        bundle = build_embedded(device)
    state = {k: v.float() for k, v in read_weights(path).items()}
    bundle.model.load_state_dict(state, strict=True)
    bundle.model.to(device).eval()
    bundle.pretrained = str(path)
    bundle.weights_id = file_digest(path)
    return bundle
