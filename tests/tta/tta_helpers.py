"""Constants and helpers the TTA tests import by name.

They live here, not in ``conftest.py``: a test module that did ``from conftest import ...`` got whichever
``conftest`` Python had imported first, so ``pytest tests/tta tests/visual_prompts`` failed to collect.
"""
from __future__ import annotations

import importlib

import torch

CLASSNAMES = ["circle", "square", "triangle"]
FAST = {  # per-method overrides that keep the contract tests quick (views, batches, search grids)
    "tpt": {"n_views": 4}, "zero": {"n_views": 4}, "mta": {"n_views": 4}, "uniinfo": {"batch_size": 4},
    "tip_adapter": {"augment_epochs": 1, "beta_search": (0.1, 7.0, 4), "alpha_search": (0.1, 3.0, 3)},
    "linear_probe": {"refine": 1, "C": None},
}


def state_checksum(bundle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def evaluate_module():
    """The module ``vlmlab.tta.evaluate`` (the package's attribute ``evaluate`` is the function of that name)."""
    return importlib.import_module("vlmlab.tta.evaluate")
