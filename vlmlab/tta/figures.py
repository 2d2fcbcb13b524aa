"""Figures of notebook 02: accuracy bars per corruption, UniInfo's embedding geometry, PCA before/after."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb

from vlmlab.plots import new_figure, palette
from vlmlab.tta.evaluate import POSTER_COLUMNS, POSTER_ORDER, poster_table


MIN_COLOUR_DISTANCE = 0.15   # RGB distance; Linear probing (1) and MTA's old sky blue were 0.11 apart
FAMILY_COLOURS = {"No-adapt": "0.35", "Linear probing": "Blues", "Tip-Adapter": "Greens", "TPT": "#cc79a7",
                  "ZERO": "#e69f00", "MTA": "#9467bd", "TDA": "#8c564b", "UniInfo": "#d62728"}


def row_colours(rows: list[str]) -> dict[str, object]:
    """One colour per table row: a fixed colour per method, shades of one hue for the shot counts; a method
    not listed in ``FAMILY_COLOURS`` takes a colour-blind-safe one at least ``MIN_COLOUR_DISTANCE`` from those."""
    out = {}
    for family, colour in FAMILY_COLOURS.items():
        members = [r for r in rows if r == family or r.startswith(family + " (")]
        shades = sns.color_palette(colour, len(members) + 2)[2:] if colour in ("Blues", "Greens") else [colour] * len(members)
        out.update(zip(members, shades))
    rest = [r for r in rows if r not in out]
    used, candidates = [np.array(to_rgb(c)) for c in out.values()], palette(10)
    spare = [c for c in candidates if all(np.linalg.norm(np.array(c) - u) >= MIN_COLOUR_DISTANCE for u in used)]
    out.update(zip(rest, itertools.cycle(spare or candidates)))     # another method: a colour far from those
    return out


def accuracy_bars(table: pd.DataFrame, title: str = ""):
    """Grouped bars: one group per corruption (poster order, mean last), one bar per method row."""
    wide = poster_table(table).drop(columns=["images", "shots from"], errors="ignore")   # accuracies only
    long = wide.reset_index().melt(id_vars="method", var_name="corruption", value_name="accuracy")
    fig, ax = new_figure(width_per=max(8.0, 0.75 * wide.shape[1] + 2), height_per=3.6)
    sns.barplot(long, x="corruption", y="accuracy", hue="method", palette=row_colours(list(wide.index)), ax=ax,
                width=0.85)
    ax.set(xlabel="", ylabel="top-1 accuracy (%)", title=title or "Accuracy per corruption")
    ax.legend(ncols=min(len(wide), 6), loc="upper left", fontsize=7, frameon=False)
    ax.set_ylim(0, min(100, long.accuracy.max() * 1.3 + 1))
    return fig


def geometry(geom: pd.DataFrame):
    """Uniformity (poster metric, lower = more uniform), entropy and accuracy before/after UniInfo."""
    g = geom.groupby(["corruption", "stage"], as_index=False)[["uniformity", "entropy", "accuracy"]].mean()
    order = [c for c in POSTER_ORDER if c in set(g.corruption)] + sorted(set(g.corruption) - set(POSTER_ORDER))
    g["corruption"] = pd.Categorical(g.corruption.map(lambda c: POSTER_COLUMNS.get(c, c)),
                                     [POSTER_COLUMNS.get(c, c) for c in order])
    fig, axes = new_figure(ncols=3, width_per=max(3.6, 0.35 * len(order) + 1), height_per=3.0)
    labels = {"uniformity": "uniformity, poster metric (lower = more uniform)",
              "entropy": "entropy at tau 0.01 (nats)", "accuracy": "accuracy (%)"}
    for ax, metric in zip(axes, labels):
        sns.barplot(g, x="corruption", y=metric, hue="stage", hue_order=["before", "after"], ax=ax,
                    palette=palette(2))
        ax.set(xlabel="", ylabel="", title=labels[metric])
        ax.tick_params(axis="x", rotation=60)
    return fig


def pca_view(pca: pd.DataFrame, n_classes: int | None = None, title: str = ""):
    """PCA panels: image embeddings before and after adaptation, coloured by class, with class texts."""
    images = [g for g in pca.group.unique() if g != "class text"]
    text = pca[pca.group == "class text"]
    n = n_classes or int(pca.label.max()) + 1
    colours = np.array(sns.color_palette("husl", n))
    fig, axes = new_figure(ncols=len(images), width_per=3.6, height_per=3.4, sharex=True, sharey=True)
    for ax, name in zip(np.atleast_1d(axes), images):
        d = pca[pca.group == name]
        ax.scatter(d.pc1, d.pc2, s=5, c=colours[d.label.to_numpy() % n], alpha=0.6, linewidths=0)
        ax.scatter(text.pc1, text.pc2, s=40, c=colours[text.label.to_numpy() % n], marker="*", edgecolors="k",
                   linewidths=0.5, label="class text")
        ax.set(title=name, xlabel="PC 1", ylabel="PC 2")
        ax.legend(loc="best", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
