"""Anti-aliased masks of the world's shapes and digit glyphs.

Every shape is drawn by Pillow on a supersampled canvas and box-filtered down, so edges are
smooth and the output depends only on the arguments (no global random state).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 3


def _star(n: int, inner: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = 1.0 if k % 2 == 0 else inner
        a = math.pi * k / n - math.pi / 2
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return list(zip(x / 17.0, (y + 2.5) / 17.0))


def _flower() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    r = 0.55 + 0.45 * np.abs(np.cos(2.5 * t))
    return list(zip(r * np.cos(t), r * np.sin(t)))


def _teardrop() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    x = 0.75 * np.sin(t) * np.sin(t / 2) ** 1.2
    y = -np.cos(t)
    return list(zip(x, y))


POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -0.95), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(5, 0.42),
    "heart": _heart(),
    "cross": [(-0.3, -0.95), (0.3, -0.95), (0.3, -0.3), (0.95, -0.3), (0.95, 0.3), (0.3, 0.3), (0.3, 0.95),
              (-0.3, 0.95), (-0.3, 0.3), (-0.95, 0.3), (-0.95, -0.3), (-0.3, -0.3)],
    "hexagon": _regular(6, 0.0),
    "pentagon": _regular(5),
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
    "arrow": [(-0.95, -0.25), (0.2, -0.25), (0.2, -0.65), (0.95, 0.0), (0.2, 0.65), (0.2, 0.25), (-0.95, 0.25)],
    "octagon": _regular(8, math.pi / 8),
    "trapezoid": [(-0.5, -0.6), (0.5, -0.6), (0.95, 0.6), (-0.95, 0.6)],
    "lightning bolt": [(0.15, -1.0), (-0.6, 0.1), (-0.05, 0.1), (-0.3, 1.0), (0.6, -0.2), (0.05, -0.2), (0.35, -1.0)],
    "house": [(0.0, -0.95), (0.85, -0.15), (0.6, -0.15), (0.6, 0.85), (-0.6, 0.85), (-0.6, -0.15), (-0.85, -0.15)],
    "teardrop": _teardrop(),
    "flower": _flower(),
}
ELLIPSES = {"circle": (0.9, 0.9), "ellipse": (0.95, 0.55)}


def _to_canvas(points, cx, cy, r, angle, scale):
    ca, sa = math.cos(angle), math.sin(angle)
    return [((cx + r * (x * ca - y * sa)) * scale, (cy + r * (x * sa + y * ca)) * scale) for x, y in points]


def _ellipse_poly(ax: float, ay: float, n: int = 72, start: float = 0.0, stop: float = 2 * math.pi):
    t = np.linspace(start, stop, n)
    return list(zip(ax * np.cos(t), ay * np.sin(t)))


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    """Alpha mask (size, size) float32 in [0, 1] of ``shape`` centred at pixel (cx, cy), radius r px."""
    s = SUPERSAMPLE
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    if shape in POLYGONS:
        draw.polygon(_to_canvas(POLYGONS[shape], cx, cy, r, angle, s), fill=255)
    elif shape in ELLIPSES:
        draw.polygon(_to_canvas(_ellipse_poly(*ELLIPSES[shape]), cx, cy, r, angle, s), fill=255)
    elif shape == "ring":
        draw.polygon(_to_canvas(_ellipse_poly(0.92, 0.92), cx, cy, r, 0.0, s), fill=255)
        draw.polygon(_to_canvas(_ellipse_poly(0.55, 0.55), cx, cy, r, 0.0, s), fill=0)
    elif shape == "crescent":
        draw.polygon(_to_canvas(_ellipse_poly(0.9, 0.9), cx, cy, r, angle, s), fill=255)
        draw.polygon(_to_canvas([(x + 0.45, y - 0.1) for x, y in _ellipse_poly(0.78, 0.78)], cx, cy, r, angle, s), fill=0)
    elif shape == "semicircle":
        pts = [(x, y + 0.35) for x, y in _ellipse_poly(0.95, 0.95, 48, math.pi, 2 * math.pi)]
        draw.polygon(_to_canvas(pts, cx, cy, r, angle, s), fill=255)
    else:
        raise KeyError(f"unknown shape {shape!r}")
    return _downsample(img, size)


def _downsample(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


# Seven-segment-like strokes (x0, y0, x1, y1) in a unit box, with a diagonal for some glyphs so that
# digits are not all made from one segment set.
_SEG = {
    "a": (0.15, 0.0, 0.85, 0.0), "b": (0.85, 0.0, 0.85, 0.5), "c": (0.85, 0.5, 0.85, 1.0),
    "d": (0.15, 1.0, 0.85, 1.0), "e": (0.15, 0.5, 0.15, 1.0), "f": (0.15, 0.0, 0.15, 0.5),
    "g": (0.15, 0.5, 0.85, 0.5), "s7": (0.85, 0.0, 0.35, 1.0), "s1": (0.5, 0.0, 0.5, 1.0),
    "t1": (0.3, 0.2, 0.5, 0.0),
}
DIGIT_STROKES: dict[int, tuple[str, ...]] = {
    0: ("a", "b", "c", "d", "e", "f"), 1: ("s1", "t1"), 2: ("a", "b", "g", "e", "d"),
    3: ("a", "b", "g", "c", "d"), 4: ("f", "g", "b", "c"), 5: ("a", "f", "g", "c", "d"),
    6: ("a", "f", "g", "e", "c", "d"), 7: ("a", "s7"), 8: ("a", "b", "c", "d", "e", "f", "g"),
    9: ("a", "b", "c", "d", "f", "g"),
}


def digit_mask(digit: int, size: int, cx: float, cy: float, height: float, width_ratio: float,
               stroke: float, slant: float) -> np.ndarray:
    """Alpha mask of a stroked digit glyph: box ``height`` px tall, ``stroke`` px thick, slanted."""
    s = SUPERSAMPLE
    img = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(img)
    w = height * width_ratio

    def pt(x, y):
        px = cx + (x - 0.5) * w + slant * (0.5 - y) * height
        py = cy + (y - 0.5) * height
        return px * s, py * s

    for name in DIGIT_STROKES[digit]:
        x0, y0, x1, y1 = _SEG[name]
        draw.line([pt(x0, y0), pt(x1, y1)], fill=255, width=max(1, int(round(stroke * s))), joint="curve")
        rr = stroke * s / 2
        for x, y in ((x0, y0), (x1, y1)):
            px, py = pt(x, y)
            draw.ellipse([px - rr, py - rr, px + rr, py + rr], fill=255)
    return _downsample(img, size)
