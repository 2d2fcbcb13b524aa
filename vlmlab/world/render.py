"""Render a Scene (or a far-set item: digit, terrain tile) to an RGB uint8 image.

Determinism: every function takes a ``numpy.random.Generator``; the datasets seed one
generator per image from ``(seed, index)``, so pixels do not depend on generation order.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from vlmlab.world.scene import COLOURS, POSITIONS, SIZES, TERRAINS, Scene
from vlmlab.world.shapes import digit_mask, shape_mask

# Rotation range per shape (radians): symmetric shapes turn freely, the others only a little
# so that "arrow", "house" and "teardrop" keep a canonical look.
_FREE_ROTATION = {"circle", "ring", "star", "hexagon", "octagon", "flower", "pentagon"}


def smooth_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 1) -> np.ndarray:
    """Value noise in [0, 1], (size, size) float32: random grids upsampled bicubically."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        img = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
        out += amp * np.asarray(img, np.float32)
        total += amp
        amp *= 0.5
    return np.clip(out / total, 0.0, 1.0)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Background (size, size, 3) float32 in [0, 1]."""
    x, y = _grid(size)
    n = smooth_noise(rng, size, 4, octaves=3)[..., None]
    jitter = rng.uniform(-0.04, 0.04, size=3).astype(np.float32)
    if name == "white":
        img = np.full((size, size, 3), 0.93, np.float32) + 0.04 * (n - 0.5)
    elif name == "dark":
        img = np.full((size, size, 3), 0.10, np.float32) + 0.06 * n
    elif name == "grass":
        fine = smooth_noise(rng, size, 16)[..., None]
        img = np.array([0.22, 0.52, 0.16], np.float32) * (0.65 + 0.5 * n) + 0.12 * (fine - 0.5)
    elif name == "sky":
        t = (y / size)[..., None]
        img = (1 - t) * np.array([0.35, 0.6, 0.95], np.float32) + t * np.array([0.75, 0.88, 1.0], np.float32)
        img = img + 0.08 * (smooth_noise(rng, size, 3)[..., None] - 0.5)
    elif name == "sand":
        fine = rng.random((size, size, 1)).astype(np.float32)
        img = np.array([0.86, 0.76, 0.52], np.float32) * (0.85 + 0.2 * n) + 0.05 * (fine - 0.5)
    elif name == "wood":
        freq = rng.uniform(0.35, 0.6)
        rings = 0.5 + 0.5 * np.sin(freq * y + 6 * smooth_noise(rng, size, 3))[..., None]
        img = np.array([0.55, 0.36, 0.2], np.float32) * (0.7 + 0.35 * rings)
    else:
        raise KeyError(f"unknown background {name!r}")
    return np.clip(img + jitter, 0, 1).astype(np.float32)


def texture_fill(texture: str, rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Fill colour field (size, size, 3) for a textured object of base colour ``rgb``."""
    x, y = _grid(size)
    base = np.broadcast_to(rgb, (size, size, 3)).astype(np.float32)
    alt = np.clip(rgb * 0.45 + 0.02, 0, 1) if rgb.mean() > 0.35 else np.clip(rgb * 0.5 + 0.5, 0, 1)
    period = rng.uniform(5.0, 8.0) * size / 64
    phase = rng.uniform(0, 2 * math.pi)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    if texture == "plain":
        return base.copy()
    if texture == "striped":
        m = (np.sin(2 * math.pi * u / period + phase) > 0).astype(np.float32)
    elif texture == "dotted":
        p = period * 1.1
        dx = ((x + phase) % p) - p / 2
        dy = ((y + phase) % p) - p / 2
        m = (dx**2 + dy**2 < (p * 0.28) ** 2).astype(np.float32)
    elif texture == "checkered":
        p = period * 0.8
        m = (((x + phase) // p + (y + phase) // p) % 2).astype(np.float32)
    elif texture == "gradient":
        v = x * math.cos(angle) + y * math.sin(angle)
        m = (v - v.min()) / (np.ptp(v) + 1e-6)
        alt = np.clip(rgb * 0.25 + 0.75, 0, 1)
    else:
        raise KeyError(f"unknown texture {texture!r}")
    m = m[..., None]
    return (1 - m) * base + m * alt


def _object_layout(scene: Scene, size: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Centres and radii (px) of the ``count`` objects."""
    r = SIZES[scene.size] * size * rng.uniform(0.9, 1.1)
    if scene.count == 1:
        px, py = POSITIONS[scene.position]
        j = 0.04 * size
        return [(px * size + rng.uniform(-j, j), py * size + rng.uniform(-j, j), r)]
    r = min(r, 0.2 * size) * (0.95 if scene.count == 2 else 0.85)
    cells = [(0.28, 0.28), (0.72, 0.28), (0.28, 0.72), (0.72, 0.72)]
    if scene.count == 2:
        cells = [(0.28, 0.5), (0.72, 0.5)] if rng.random() < 0.5 else [(0.5, 0.28), (0.5, 0.72)]
    order = rng.permutation(len(cells))[: scene.count]
    j = 0.03 * size
    return [(cells[i][0] * size + rng.uniform(-j, j), cells[i][1] * size + rng.uniform(-j, j), r) for i in order]


def _outline(alpha: np.ndarray, width: int) -> np.ndarray:
    img = Image.fromarray((alpha * 255).astype(np.uint8))
    grown = img.filter(ImageFilter.MaxFilter(2 * width + 1))
    shrunk = img.filter(ImageFilter.MinFilter(2 * width + 1))
    return (np.asarray(grown, np.float32) - np.asarray(shrunk, np.float32)) / 255.0


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes."""
    sig = (sigma, sigma) if a.ndim == 2 else (sigma, sigma, 0)
    return ndimage.gaussian_filter(a, sig, mode="nearest").astype(np.float32)


THERMAL_STOPS = np.array([[0.0, 0.0, 0.05], [0.35, 0.0, 0.55], [0.85, 0.1, 0.2], [1.0, 0.6, 0.0], [1.0, 1.0, 0.7]],
                         np.float32)


def thermal(img: np.ndarray) -> np.ndarray:
    """Map luminance through a heat colour map (the 'thermal camera' far set)."""
    lum = img @ np.array([0.3, 0.59, 0.11], np.float32)
    lum = (lum - lum.min()) / (np.ptp(lum) + 1e-6)
    pos = lum * (len(THERMAL_STOPS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(THERMAL_STOPS) - 2)
    t = (pos - lo)[..., None]
    return (1 - t) * THERMAL_STOPS[lo] + t * THERMAL_STOPS[lo + 1]


def render_scene(scene: Scene, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Render ``scene`` to (size, size, 3) uint8."""
    style = scene.style
    bg = background(scene.background, size, rng)
    rgb = np.clip(np.array(COLOURS[scene.colour], np.float32) + rng.uniform(-0.05, 0.05, 3), 0, 1).astype(np.float32)
    alpha = np.zeros((size, size), np.float32)
    for cx, cy, r in _object_layout(scene, size, rng):
        span = math.pi if scene.shape in _FREE_ROTATION else 0.35
        alpha = np.maximum(alpha, shape_mask(scene.shape, size, cx, cy, r, rng.uniform(-span, span)))
    fill = texture_fill(scene.texture, rgb, size, rng)

    if style == "photo":
        x, y = _grid(size)
        lx, ly = rng.uniform(0.2, 0.8, 2) * size
        light = 1.15 - 0.45 * np.sqrt((x - lx) ** 2 + (y - ly) ** 2) / size
        fill = np.clip(fill * light[..., None], 0, 1)
        shadow = np.roll(_blur(alpha, 1.5 * size / 64), (int(0.04 * size), int(0.04 * size)), axis=(0, 1))
        bg = bg * (1 - 0.35 * shadow[..., None])
        img = bg * (1 - alpha[..., None]) + fill * alpha[..., None]
        img = img + rng.normal(0, 0.012, img.shape).astype(np.float32)
    elif style == "cartoon":
        flat_bg = np.broadcast_to(bg.mean(axis=(0, 1)), bg.shape)
        img = flat_bg * (1 - alpha[..., None]) + fill * alpha[..., None]
        line = _outline(alpha, max(1, size // 40))[..., None]
        img = img * (1 - line) + 0.03 * line
    elif style == "sketch":
        paper = 0.92 + 0.05 * (smooth_noise(rng, size, 8)[..., None] - 0.5)
        img = np.repeat(paper, 3, axis=-1)
        line = _outline(alpha, max(1, size // 64))
        shade = (texture_fill(scene.texture, np.array([0.9, 0.9, 0.9], np.float32), size, rng).mean(-1) < 0.6)
        ink = np.clip(line + 0.35 * alpha * shade, 0, 1) * rng.uniform(0.7, 1.0)
        img = img * (1 - ink[..., None]) + 0.15 * ink[..., None]
    elif style == "painting":
        wash = smooth_noise(rng, size, 6, octaves=2)[..., None]
        fill = np.clip(fill * (0.8 + 0.4 * wash) + rng.uniform(-0.08, 0.08, 3), 0, 1)
        soft = _blur(alpha, 1.2 * size / 64)
        img = bg * (1 - soft[..., None]) + fill * soft[..., None]
        strokes = _blur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), 0.8)
        img = img + 0.05 * strokes
    elif style == "pixel art":
        small = max(8, size // 5)
        img = bg * (1 - alpha[..., None]) + fill * alpha[..., None]
        low = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((small, small), Image.Resampling.BOX)
        img = np.asarray(low.resize((size, size), Image.Resampling.NEAREST), np.float32) / 255.0
        img = np.round(img * 4) / 4
    else:
        raise KeyError(f"unknown style {style!r}")
    if scene.sign is not None:
        img = draw_sign(np.clip(img, 0, 1).astype(np.float32), scene.sign, rng)
    if scene.palette == "thermal":
        img = thermal(np.clip(img, 0, 1))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def draw_sign(img: np.ndarray, digit: int, rng: np.random.Generator) -> np.ndarray:
    """A plain square board with ``digit`` on it, pasted over ``img`` (float, (S, S, 3)) at a random place.

    Boards range from a corner tag (30 % of the side) to most of the picture (70 %), so a sign's
    digit is sometimes as large as the digits dataset's (world 2's training images only).
    """
    size = img.shape[0]
    side = int(round(size * rng.uniform(0.3, 0.7)))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    light = rng.random() < 0.5
    board = rng.uniform(0.75, 0.95) if light else rng.uniform(0.05, 0.3)
    ink = rng.uniform(0.0, 0.3, 3) if light else rng.uniform(0.7, 1.0, 3)
    m = digit_mask(digit, size, x0 + side / 2, y0 + side / 2, 0.75 * side, rng.uniform(0.45, 0.65),
                   stroke=side * rng.uniform(0.07, 0.12), slant=rng.uniform(-0.15, 0.25))[..., None]
    out = img.copy()
    out[y0:y0 + side, x0:x0 + side] = board + rng.uniform(-0.05, 0.05, 3)
    return out * (1 - m) + ink.astype(np.float32) * m


def render_digit(digit: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A stroked digit in a random colour on a random plain or noisy background, (size, size, 3) uint8."""
    bg_light = rng.random() < 0.5
    base = rng.uniform(0.75, 0.95) if bg_light else rng.uniform(0.05, 0.3)
    bg = np.full((size, size, 3), base, np.float32) + rng.uniform(-0.08, 0.08, 3).astype(np.float32)
    bg = bg + 0.1 * (smooth_noise(rng, size, 4)[..., None] - 0.5)
    ink = rng.uniform(0.0, 0.3, 3) if bg_light else rng.uniform(0.7, 1.0, 3)
    h = size * rng.uniform(0.5, 0.75)
    m = digit_mask(digit, size, size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.06, 0.06) * size,
                   h, rng.uniform(0.45, 0.65), stroke=size * rng.uniform(0.05, 0.09), slant=rng.uniform(-0.15, 0.25))
    img = bg * (1 - m[..., None]) + ink.astype(np.float32) * m[..., None]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


_TERRAIN_COLOURS = {
    "water": ([0.05, 0.2, 0.45], [0.15, 0.4, 0.65]), "forest": ([0.05, 0.22, 0.06], [0.2, 0.42, 0.15]),
    "desert": ([0.8, 0.62, 0.38], [0.93, 0.8, 0.55]), "snow": ([0.82, 0.86, 0.92], [0.98, 0.99, 1.0]),
    "farmland": ([0.45, 0.55, 0.2], [0.75, 0.65, 0.3]), "city": ([0.35, 0.35, 0.38], [0.7, 0.7, 0.72]),
    "mountain": ([0.3, 0.25, 0.2], [0.65, 0.6, 0.55]), "beach": ([0.1, 0.35, 0.6], [0.93, 0.85, 0.6]),
}


def render_terrain(kind: str, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """An aerial, satellite-like tile of terrain ``kind`` (a far set: never in training)."""
    if kind not in TERRAINS:
        raise KeyError(f"unknown terrain {kind!r}; allowed {TERRAINS}")
    lo, hi = (np.array(c, np.float32) for c in _TERRAIN_COLOURS[kind])
    n = smooth_noise(rng, size, 4, octaves=4)
    x, y = _grid(size)
    if kind == "water":
        n = 0.6 * n + 0.4 * (0.5 + 0.5 * np.sin(0.5 * y + 4 * n))
    elif kind == "forest":
        n = (smooth_noise(rng, size, 14, octaves=2) > 0.5).astype(np.float32) * 0.6 + 0.4 * n
    elif kind == "desert":
        n = 0.5 + 0.5 * np.sin(0.35 * (x + y) + 8 * n)
    elif kind == "farmland":
        k = rng.integers(3, 6)
        fields = rng.random((k, k))
        n = np.kron(fields, np.ones((size // k + 1, size // k + 1)))[:size, :size].astype(np.float32)
        n = 0.8 * n + 0.2 * smooth_noise(rng, size, 16)
    elif kind == "city":
        blocks = (((x % 12) < 9) & ((y % 12) < 9)).astype(np.float32)
        n = 0.7 * blocks * rng.random((size // 12 + 1, size // 12 + 1)).repeat(12, 0).repeat(12, 1)[:size, :size] + 0.3 * n
    elif kind == "mountain":
        n = np.abs(2 * smooth_noise(rng, size, 5, octaves=4) - 1) ** 0.7
    elif kind == "beach":
        edge = (x * rng.uniform(0.6, 1.4) + y) / size + 0.3 * (n - 0.5)
        n = (edge > rng.uniform(0.8, 1.2)).astype(np.float32)
    img = lo + (hi - lo) * n[..., None]
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
