"""CoOp variants: context length M, class-token position, initialisation, unified or class-specific.

Shorthand strings (notebook parameters): ``"M16_end"``, ``"M16_middle_csc"``, ``"M4_end_photo"``
(context initialised from "a photo of a"), with an optional ``"@16"`` or ``"@8,16"`` suffix that
restricts the variant to those shot counts (ablations). A dict of :class:`Variant` fields works too.
The paper's main curves (``draw_curves.py``): M16 end, M16 middle, M16 end CSC, M16 middle CSC.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

from vlmlab.coop.train import CoOpConfig

PHRASE = "a photo of a"
POSITION_ALIASES = {"end": "end", "middle": "middle", "mid": "middle", "front": "front"}


@dataclass(frozen=True)
class Variant:
    """One CoOp prompt design.

    Attributes:
        n_ctx: M (a phrase init replaces it by the phrase's word count, as in CoOp; the name keeps this M).
        position: "end", "middle" or "front".
        init: "random" or the phrase whose embeddings start the context.
        csc: class-specific context.
        shots: the shot counts this variant runs at (None = all of the sweep).
    """

    n_ctx: int = 16
    position: str = "end"
    init: str = "random"
    csc: bool = False
    shots: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        init = "" if self.init == "random" else f" '{self.init}'"
        return f"M{self.n_ctx} {self.position}{' CSC' if self.csc else ''}{init}"

    def columns(self) -> dict:
        """The variant's columns of ``tables/coop.csv``."""
        return {"n_ctx": self.n_ctx, "position": self.position, "init": self.init, "csc": self.csc}

    def config(self, base: CoOpConfig) -> CoOpConfig:
        return base.replace(n_ctx=self.n_ctx, position=self.position, csc=self.csc,
                            ctx_init=None if self.init == "random" else self.init)

    def shots_or(self, default: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.shots) if self.shots else tuple(default)


def parse_variant(spec: Variant | str | dict) -> Variant:
    """A :class:`Variant` from itself, a field dict or a shorthand string (see the module docstring)."""
    if isinstance(spec, Variant):
        return spec
    if isinstance(spec, dict):
        known = {f.name for f in fields(Variant)}
        bad = sorted(set(spec) - known)
        if bad:
            raise KeyError(f"CoOp variant {spec!r}: unknown key(s) {bad}; known: {sorted(known)}")
        spec = dict(spec)
        if spec.get("shots") is not None:
            spec["shots"] = tuple(int(k) for k in spec["shots"])
        return Variant(**spec)
    body, _, at = str(spec).partition("@")
    parts = body.lower().split("_")
    if not parts or not parts[0].startswith("m") or not parts[0][1:].isdigit():
        raise ValueError(f"CoOp variant {spec!r}: start with M<context length>, e.g. 'M16_end', 'M16_middle_csc', "
                         f"'M4_end_photo', 'M8_end@16'")
    kw = {"n_ctx": int(parts[0][1:])}
    for p in parts[1:]:
        if p in POSITION_ALIASES:
            kw["position"] = POSITION_ALIASES[p]
        elif p == "csc":
            kw["csc"] = True
        elif p in ("photo", "init"):
            kw["init"] = PHRASE
        elif p not in ("uc", "random"):
            raise ValueError(f"CoOp variant {spec!r}: unknown part {p!r} (use end/middle/front, csc, photo)")
    if at:
        kw["shots"] = tuple(int(k) for k in at.split(","))
    return Variant(**kw)
