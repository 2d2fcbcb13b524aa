"""Fixtures for the visual-prompting tests: a random-init embedded-architecture CLIP and tiny image sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.models.embedded import build_embedded


@pytest.fixture(scope="session")
def vp_bundle():
    torch.manual_seed(0)
    return build_embedded("cpu")


def blocky_images(n: int, seed: int, offset: int = 0) -> np.ndarray:
    """(n, 64, 64, 3) uint8 images of 8 x 8 random blocks, values in [40, 200) + ``offset``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (n, 8, 8, 3)) + offset
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def blocky():
    """The ``blocky_images`` factory (a fixture, since conftest modules of other folders share its name)."""
    return blocky_images
