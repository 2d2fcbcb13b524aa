"""Tiny fixtures for the TTA tests: a random-init embedded-architecture CLIP, 3 classes, 6 images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.models.embedded import build_embedded
from vlmlab.prompts import zero_shot_weights
from vlmlab.tta.base import ArrayImages, Context, Stream, Support, encode_single

from tta_helpers import CLASSNAMES


@pytest.fixture(scope="session")
def bundle():
    torch.manual_seed(0)
    return build_embedded("cpu")


@pytest.fixture(scope="session")
def text(bundle):
    return zero_shot_weights(bundle, CLASSNAMES, "a photo of a {}.").cpu()


def _images(n: int, seed: int) -> np.ndarray:
    """Blocky random images, one colour scheme per class, so features differ by class a little."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)


@pytest.fixture(scope="session")
def toy_stream(bundle):
    images = _images(6, 0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return Stream(labels, ArrayImages(bundle, images), name="toy", severity=5)


@pytest.fixture(scope="session")
def support(bundle):
    train, val = _images(6, 1), _images(3, 2)
    z_train = encode_single(bundle, ArrayImages(bundle, train)(torch.arange(6)), normalize=False)
    z_val = encode_single(bundle, ArrayImages(bundle, val)(torch.arange(3)), normalize=False)
    unit = lambda z: torch.nn.functional.normalize(z, dim=-1)          # noqa: E731
    return Support(unit(z_train), torch.tensor([0, 1, 2, 0, 1, 2]), ArrayImages(bundle, train), unit(z_val),
                   torch.tensor([0, 1, 2]), shots=2, norms=z_train.norm(dim=-1), val_norms=z_val.norm(dim=-1))


@pytest.fixture(scope="session")
def ctx(bundle, text, support):
    return Context(bundle, CLASSNAMES, text, "a photo of a {}.", support, seed=0)
