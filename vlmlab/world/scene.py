"""The attribute vocabulary of the procedural world and the Scene description.

A Scene is the structured description an image is rendered from and a caption is written
from; every evaluation dataset labels one of its fields. Names here are the class names
users see in tables ("circle", "striped", "on the left"), so they double as prompt text.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "heart", "cross", "hexagon", "pentagon",
    "diamond", "crescent", "ring", "arrow", "ellipse", "octagon", "trapezoid",
    "semicircle", "lightning bolt", "house", "teardrop", "flower",
)
SHAPE_PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES} | {"lightning bolt": "lightning bolts", "cross": "crosses"}

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10), "orange": (0.97, 0.55, 0.08), "yellow": (0.96, 0.88, 0.15),
    "green": (0.16, 0.66, 0.20), "cyan": (0.15, 0.80, 0.85), "blue": (0.12, 0.25, 0.85),
    "purple": (0.52, 0.18, 0.72), "pink": (0.98, 0.52, 0.75), "brown": (0.50, 0.30, 0.12),
    "gray": (0.55, 0.55, 0.55),
}
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "gradient")
SIZES: dict[str, float] = {"small": 0.17, "medium": 0.25, "large": 0.34}  # radius / image side
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
POSITIONS: dict[str, tuple[float, float]] = {  # (x, y) centre as a fraction of the side
    "in the center": (0.5, 0.5), "on the left": (0.27, 0.5), "on the right": (0.73, 0.5),
    "at the top": (0.5, 0.27), "at the bottom": (0.5, 0.73),
}
BACKGROUNDS: tuple[str, ...] = ("white", "dark", "grass", "sky", "sand", "wood")
STYLES: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting", "pixel art")

# Far-from-training vocabularies: never rendered or named in training captions.
DIGITS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TERRAINS: tuple[str, ...] = ("water", "forest", "desert", "snow", "farmland", "city", "mountain", "beach")

# How often each rendition style appears in training: mostly photos, as web data is.
TRAIN_STYLE_WEIGHTS: dict[str, float] = {
    "photo": 0.80, "cartoon": 0.08, "painting": 0.05, "sketch": 0.04, "pixel art": 0.03}


@dataclass(frozen=True)
class Scene:
    """Everything an image shows. ``position`` is meaningful only when ``count == 1``."""

    shape: str = "circle"
    colour: str = "red"
    texture: str = "plain"
    size: str = "medium"
    count: int = 1
    position: str = "in the center"
    background: str = "white"
    style: str = "photo"
    palette: str = "natural"  # "natural" or "thermal" (far set: colour replaced by a heat map)

    def __post_init__(self):
        checks = [("shape", SHAPES), ("colour", COLOURS), ("texture", TEXTURES), ("size", SIZES),
                  ("position", POSITIONS), ("background", BACKGROUNDS), ("style", STYLES),
                  ("palette", ("natural", "thermal"))]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"Scene.{name}={getattr(self, name)!r}; allowed: {list(allowed)}")
        if not 1 <= self.count <= 4:
            raise ValueError(f"Scene.count={self.count}; allowed 1..4")

    def to_dict(self) -> dict:
        return asdict(self)
