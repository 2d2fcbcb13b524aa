"""Shared figure style: seaborn whitegrid, paper context, colour-blind palette.

Notebooks call :func:`new_figure` (which applies the style once) and save with
``run.save_figure(fig, name)``. Keep plotting code here small; what a figure shows
belongs in the notebook.
"""
from __future__ import annotations

import string

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

__all__ = ["set_style", "new_figure", "palette", "label_panels", "FONT_SIZES"]

FONT_SIZES = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
              "ytick.labelsize": 8, "legend.fontsize": 8, "legend.title_fontsize": 8,
              "figure.titlesize": 11}
_STYLED = False


def set_style() -> None:
    """Apply the vlmlab style to matplotlib (idempotent, cheap to call again)."""
    global _STYLED
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind",
                  rc={**FONT_SIZES, "figure.dpi": 110, "savefig.dpi": 150, "axes.titleweight": "bold",
                      "pdf.fonttype": 42, "ps.fonttype": 42})      # editable text in PDFs
    _STYLED = True


def new_figure(ncols: int = 1, nrows: int = 1, width_per: float = 4.0, height_per: float = 3.2,
               squeeze: bool = True, **kwargs):
    """A styled figure with a grid of axes sized per panel.

    Returns:
        ``(fig, ax)`` for one panel, ``(fig, axes)`` with axes a flat array otherwise
        (``squeeze=False``: always a 2-D ``(nrows, ncols)`` array).
    """
    if not _STYLED:
        set_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_per * ncols, height_per * nrows),
                             squeeze=False, layout="constrained", **kwargs)
    if not squeeze:
        return fig, axes
    return (fig, axes[0, 0]) if axes.size == 1 else (fig, axes.ravel())


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colour-blind-safe colours (cycled past 10)."""
    return sns.color_palette("colorblind", n_colors=n)


def label_panels(axes, start: str = "a", size: int = 11) -> None:
    """Write bold panel letters (a, b, c ...) in the top-left corner of each axis."""
    letters = string.ascii_lowercase[string.ascii_lowercase.index(start):]
    for ax, letter in zip(np.ravel(axes), letters):
        ax.text(-0.12, 1.04, letter, transform=ax.transAxes, fontsize=size, fontweight="bold", va="bottom")
