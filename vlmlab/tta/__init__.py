"""Test-time adaptation of CLIP under corruption: UniInfo and seven baselines, one interface.

    method = vlmlab.tta.build("tda", pos_beta=4.0)        # config overrides; a bad key raises
    method.setup(Context(bundle, classnames, text))
    logits = run_stream(method, stream, seed=0)            # (N, C), dataset order

Registry key = module name = the ``method`` column of the result tables.
"""
from __future__ import annotations

from vlmlab.tta.base import (Batch, Context, Stream, Support, TTAConfig, TTAMethod, image_source, measure_cost,
                             run_stream)
from vlmlab.tta.linear_probe import LinearProbe
from vlmlab.tta.mta import MTA
from vlmlab.tta.no_adapt import NoAdapt
from vlmlab.tta.tda import TDA
from vlmlab.tta.tip_adapter import TipAdapter
from vlmlab.tta.tpt import TPT
from vlmlab.tta.uniinfo import UniInfo
from vlmlab.tta.zero import Zero

METHODS: dict[str, type[TTAMethod]] = {
    "no_adapt": NoAdapt, "linear_probe": LinearProbe, "tip_adapter": TipAdapter,
    "tpt": TPT, "zero": Zero, "mta": MTA, "tda": TDA, "uniinfo": UniInfo,
}


def build(name: str, **overrides) -> TTAMethod:
    """A method by registry name, with config overrides (an unknown key raises, naming it)."""
    if name not in METHODS:
        raise KeyError(f"unknown TTA method {name!r}; known: {sorted(METHODS)}")
    cls = METHODS[name]
    return cls(cls.config_cls().replace(**overrides))


from vlmlab.tta.evaluate import Evaluation, compare_published, evaluate, poster_table  # noqa: E402  (needs METHODS, build)


__all__ = ["METHODS", "build", "evaluate", "TTAMethod", "TTAConfig", "Context", "Stream", "Support", "Batch",
           "Evaluation", "compare_published", "poster_table", "run_stream", "measure_cost", "image_source", "NoAdapt", "LinearProbe", "TipAdapter", "TPT", "Zero",
           "MTA", "TDA", "UniInfo"]
