"""Visual prompters: one learned image perturbation added to every normalised input.

Bahng, Jahanian, Sankaranarayanan & Isola, "Exploring Visual Prompts for Adapting Large-Scale
Models" (arXiv:2203.17274). For a normalised image x (B, 3, S, S) and a learned prompt v:
    x_prompted = x + v ⊙ M
with M a fixed 0/1 mask (the padding frame, or a p x p square) and v ~ N(0, 1) at init.
    padding(p)        4 strips of width p around a zero centre:
                      2·3·p·S (top, bottom) + 2·3·p·(S − 2p) (left, right) = 2·3·p·(H + W − 2p)
                      parameters for H = W = S (69,840 for p = 30 at 224 px, the paper's default)
    fixed_patch(p)    a p x p square at the top-left corner (3·p² parameters)
    random_patch(p)   a p x p square at a uniformly random location, re-drawn on every forward
                      pass, at test time too (3·p² parameters)
Reference checked: hjbahng/visual_prompting 679e71f ``models/prompters.py`` (PadPrompter,
FixedPatchPrompter, RandomPatchPrompter). Departures: device and dtype follow the input (the
reference hard-codes ``.cuda()``); the random patch's corner is drawn from a ``torch.Generator``
the caller may seed, over the reference's S − p positions per axis (``np.random.choice(S - p)``:
0 .. S − p − 1, never the last one; ``positions="all"`` adds it); ``init="zeros"`` gives the
identity prompt (tests).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Prompter", "PadPrompter", "FixedPatchPrompter", "RandomPatchPrompter", "padding", "fixed_patch",
           "random_patch", "PROMPTERS", "build_prompter"]

INITS = ("randn", "zeros")


def _init(shape: tuple[int, ...], init: str, generator: torch.Generator | None) -> nn.Parameter:
    if init not in INITS:
        raise ValueError(f"prompter init={init!r}; use one of {INITS}")
    data = torch.randn(shape, generator=generator) if init == "randn" else torch.zeros(shape)
    return nn.Parameter(data)


class Prompter(nn.Module):
    """Base class: ``forward(x) = x + prompt``, everything in normalised pixel units.

    Attributes:
        image_size: side S of the square input the prompt is made for.
        size: pad width or patch side p.
    """

    def __init__(self, size: int, image_size: int, max_size: int):
        super().__init__()
        if not 0 < size <= max_size:
            raise ValueError(f"{type(self).__name__}: size={size} does not fit an image of side {image_size}; "
                             f"use 0 < size <= {max_size}")
        self.size, self.image_size = int(size), int(image_size)

    @property
    def n_params(self) -> int:
        """Number of learned values."""
        return sum(p.numel() for p in self.parameters())

    def prompt(self) -> Tensor:
        """The additive prompt as an image (1, 3, S, S), zeros outside the learned region."""
        raise NotImplementedError

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"{type(self).__name__}: input must be (B, 3, {self.image_size}, {self.image_size}) "
                             f"normalised images, got {tuple(x.shape)}; build the prompter with "
                             f"image_size=bundle.image_size")

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) normalised images -> the same plus the prompt (B, 3, S, S)."""
        self._check(x)
        return x + self.prompt().to(dtype=x.dtype, device=x.device)


class PadPrompter(Prompter):
    """Four learned strips of width ``size`` around an untouched centre."""

    def __init__(self, size: int, image_size: int = 224, init: str = "randn",
                 generator: torch.Generator | None = None):
        super().__init__(size, image_size, max_size=image_size // 2)
        p, s = self.size, self.image_size
        self.pad_up = _init((1, 3, p, s), init, generator)
        self.pad_down = _init((1, 3, p, s), init, generator)
        self.pad_left = _init((1, 3, s - 2 * p, p), init, generator)
        self.pad_right = _init((1, 3, s - 2 * p, p), init, generator)

    def prompt(self) -> Tensor:
        p, s = self.size, self.image_size
        centre = self.pad_up.new_zeros(1, 3, s - 2 * p, s - 2 * p)
        middle = torch.cat([self.pad_left, centre, self.pad_right], dim=3)     # (1, 3, S - 2p, S)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)          # (1, 3, S, S)


class FixedPatchPrompter(Prompter):
    """A learned ``size`` x ``size`` square at the top-left corner.

    ``generator`` and ``positions`` are the random patch's (``RandomPatchPrompter``, which moves this
    square); here ``positions`` only sets ``n_positions``, the corners per axis a random patch draws from.
    """

    def __init__(self, size: int, image_size: int = 224, init: str = "randn",
                 generator: torch.Generator | None = None, positions: str = "reference"):
        super().__init__(size, image_size, max_size=image_size)
        if positions not in ("reference", "all"):
            raise ValueError(f"patch positions {positions!r}: use 'reference' (S - p corners per axis, "
                             "as np.random.choice(S - p)) or 'all' (S - p + 1)")
        self.n_positions = max(1, image_size - self.size + (positions == "all"))
        self.patch = _init((1, 3, self.size, self.size), init, generator)

    def prompt(self) -> Tensor:
        return _place(self.patch, self.image_size, 0, 0)


class RandomPatchPrompter(FixedPatchPrompter):
    """A learned square at a random location, re-drawn on every call (train and test).

    Args:
        generator: source of the locations (seed it for reproducible runs); ``None`` = torch's global RNG.
        positions: ``"reference"``: corners 0 .. S − p − 1 per axis; ``"all"``: 0 .. S − p.
    """

    def __init__(self, size: int, image_size: int = 224, init: str = "randn",
                 generator: torch.Generator | None = None, positions: str = "reference"):
        super().__init__(size, image_size, init, generator, positions)
        self.generator = generator
        self.last_corner: tuple[int, int] = (0, 0)

    def prompt(self, corner: tuple[int, int] | None = None) -> Tensor:
        """The prompt with the patch at ``corner`` (row, col); ``None`` draws a new corner."""
        if corner is None:
            corner = tuple(int(v) for v in torch.randint(self.n_positions, (2,), generator=self.generator))
        self.last_corner = corner
        return _place(self.patch, self.image_size, *corner)


def _place(patch: Tensor, image_size: int, top: int, left: int) -> Tensor:
    """A zero (1, 3, S, S) image with ``patch`` (1, 3, p, p) pasted at (top, left), differentiable."""
    p = patch.shape[-1]
    pad = (left, image_size - left - p, top, image_size - top - p)  # F.pad order: last dim first
    return nn.functional.pad(patch, pad)


def padding(pad: int, image_size: int = 224, **kw) -> PadPrompter:
    """Padding prompt of width ``pad`` (the paper's default kind, p = 30 at 224 px)."""
    return PadPrompter(pad, image_size, **kw)


def fixed_patch(size: int, image_size: int = 224, **kw) -> FixedPatchPrompter:
    """Fixed ``size`` x ``size`` patch at the top-left corner."""
    return FixedPatchPrompter(size, image_size, **kw)


def random_patch(size: int, image_size: int = 224, **kw) -> RandomPatchPrompter:
    """``size`` x ``size`` patch at a random location per forward pass."""
    return RandomPatchPrompter(size, image_size, **kw)


PROMPTERS = {"padding": padding, "fixed_patch": fixed_patch, "random_patch": random_patch}


def build_prompter(name: str, size: int, image_size: int, **kw) -> Prompter:
    """A prompter by registry name (``PROMPTERS``): ``"padding"``, ``"fixed_patch"``, ``"random_patch"``."""
    if name not in PROMPTERS:
        raise KeyError(f"unknown prompter {name!r}; known: {sorted(PROMPTERS)}")
    return PROMPTERS[name](size, image_size, **kw)
