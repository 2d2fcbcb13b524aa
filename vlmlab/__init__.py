"""vlmlab: see and rerun five results about vision-language models.

Subpackages are imported lazily (``vlmlab.metrics``, ``vlmlab.world`` ...) so that
``import vlmlab`` stays fast in notebooks.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"runtime", "params", "results", "plots", "claims", "world", "data", "models", "metrics",
               "features", "prompts", "probe", "analysis", "tta", "coop", "visual_prompts", "blind", "sweep"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"vlmlab.{name}")
    raise AttributeError(f"module 'vlmlab' has no attribute {name!r}")
