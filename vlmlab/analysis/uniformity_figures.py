"""Figures of notebook 01: heatmaps, accuracy vs uniformity, PCA of embeddings."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from vlmlab.analysis.uniformity import correlations


def heatmaps(table: pd.DataFrame, corruptions: list[str]) -> plt.Figure:
    """Accuracy and uniformity per corruption (rows) x severity (columns)."""
    t = table[table.condition.isin(corruptions)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.32 * len(corruptions) + 1.6))
    for ax, (col, title, cmap) in zip(axes, [("acc_plain", "zero-shot accuracy (%)", "viridis"),
                                             ("uniformity", "uniformity loss (lower = more uniform)", "magma_r")]):
        grid = t.pivot(index="condition", columns="severity", values=col).reindex(corruptions)
        sns.heatmap(grid, ax=ax, annot=True, fmt=".1f" if col.startswith("acc") else ".2f", cmap=cmap,
                    cbar=False, annot_kws={"size": 7})
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("severity")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def accuracy_vs_uniformity(table: pd.DataFrame) -> plt.Figure:
    """Scatter of plain-prompt accuracy against uniformity, one point per condition, with r."""
    kind = np.where(table.severity > 0, "corruption", np.where(table.condition == "clean", "clean", "domain shift"))
    d = table.assign(kind=kind)
    fig, ax = plt.subplots(figsize=(5, 3.8))
    sns.scatterplot(data=d, x="uniformity", y="acc_plain", hue="kind", size=d.severity.clip(lower=1),
                    sizes=(15, 70), ax=ax, legend="brief")
    r = correlations(table)
    ax.set_title(f"Pearson r = {r['pearson_r']:.2f}, Spearman r = {r['spearman_r']:.2f} (n = {r['n']})", fontsize=9)
    ax.set_xlabel("uniformity loss (lower = more uniform)")
    ax.set_ylabel("zero-shot accuracy (%)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def pca_scatter(points: pd.DataFrame, title: str = "image and class-text embeddings (PCA)") -> plt.Figure:
    """2-D PCA view: each image group in its colour, class texts as black crosses."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    img = points[points.group != "class text"]
    sns.scatterplot(data=img, x="pc1", y="pc2", hue="group", s=10, alpha=0.6, ax=ax, linewidth=0)
    txt = points[points.group == "class text"]
    ax.scatter(txt.pc1, txt.pc2, marker="x", c="black", s=30, label="class text")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return fig
