"""Figures of notebook 04: gain vs gap scatter with a fitted line, prompter bars, learned prompts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vlmlab.plots import new_figure, palette

__all__ = ["gain_vs_gap", "prompter_bars", "prompt_images"]

_LABELS = {"fid": "FID to the reference set", "lpips": "LPIPS-style gap to the reference set"}
_LPIPS_CROSS_LABEL = "mean cross-pair LPIPS-style distance to the reference set"    # lpips_form "cross"


def gain_vs_gap(table: pd.DataFrame, corr: pd.DataFrame, metric: str, prompter: str = "padding",
                extractor: str = "", lpips_form: str = "energy"):
    """One point per dataset: x = gap ``metric``, y = VP+TP − TP gain (pp), least-squares line, r in the title.

    ``lpips_form`` names what the ``lpips`` column holds (``evaluate.LPIPS_FORMS``), for the axis label.
    """
    d = table[table["prompter"] == prompter].dropna(subset=[metric, "gain"])
    fig, ax = new_figure(width_per=4.6, height_per=3.6)
    ax.scatter(d[metric], d["gain"], color=palette(1)[0], zorder=3)
    for _, row in d.iterrows():
        ax.annotate(row["dataset"], (row[metric], row["gain"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    c = corr.set_index("gap_metric").loc[metric] if metric in set(corr["gap_metric"]) else None
    if len(d) >= 2 and d[metric].nunique() > 1:
        slope, icpt = np.polyfit(d[metric], d["gain"], 1)
        xs = np.linspace(d[metric].min(), d[metric].max(), 50)
        ax.plot(xs, slope * xs + icpt, color="0.3", lw=1, label=f"fit: {slope:.3g} pp per unit")
        ax.legend(loc="best")
    ax.axhline(0, color="0.6", lw=0.8, ls=":")
    r = "" if c is None else f"Pearson r = {c['pearson_r']:.2f} (p = {c['p_value']:.2g}), Spearman ρ = {c['spearman_r']:.2f}"
    label = _LPIPS_CROSS_LABEL if metric == "lpips" and lpips_form == "cross" else _LABELS.get(metric, metric)
    ax.set(xlabel=label + (f" ({extractor} features)" if extractor else ""),
           ylabel=f"gain of VP+TP over TP ({prompter}), pp", title=f"Gain vs {metric.upper()}\n{r}")
    return fig


def prompter_bars(table: pd.DataFrame):
    """Test accuracy per dataset: TP, linear probe and VP+TP for each prompter."""
    zs = table.drop_duplicates("dataset").set_index("dataset")
    bars = {"TP (zero-shot)": zs["zero_shot_acc"], "linear probe": zs["linear_probe_acc"]}
    for k, g in table.groupby("prompter", sort=False):
        bars[f"VP+TP {k}"] = g.set_index("dataset")["vp_acc"]
    frame = pd.DataFrame(bars).reindex(zs.index)
    fig, ax = new_figure(width_per=max(5.0, 0.75 * len(frame) + 2), height_per=3.4)
    width, colours = 0.8 / frame.shape[1], palette(frame.shape[1])
    x = np.arange(len(frame))
    for k, (name, col) in enumerate(frame.items()):
        ax.bar(x + (k - (frame.shape[1] - 1) / 2) * width, col.values, width, label=name, color=colours[k])
    ax.set_xticks(x, frame.index, rotation=30, ha="right")
    ax.set(ylabel="test accuracy (%)", title="Visual prompts against zero-shot and linear probe")
    ax.legend(ncols=min(3, frame.shape[1]), fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.25))
    return fig


def _to_pixels(x: Tensor, mean, std) -> np.ndarray:
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def prompt_images(prompts: dict[str, tuple[Tensor, Tensor]], mean, std, prompter: str = "padding"):
    """Per dataset: the learned prompt in pixel units (grey = 0, scaled to its own range) and a prompted test image."""
    names = list(prompts)
    fig, axes = new_figure(ncols=max(len(names), 1), nrows=2, width_per=1.35, height_per=1.5, squeeze=False)
    s = torch.tensor(std).view(3, 1, 1)
    for k, name in enumerate(names):
        v, x = prompts[name]
        delta = v * s                                          # additive change in [0, 1] pixel units
        scale = float(delta.abs().max()) or 1.0
        axes[0, k].imshow((0.5 + 0.5 * delta / scale).permute(1, 2, 0).numpy())
        axes[0, k].set_title(f"{name}\n±{scale:.2f}", fontsize=7)
        axes[1, k].imshow(_to_pixels(x + v, mean, std))
        for ax in axes[:, k]:
            ax.set_xticks([]), ax.set_yticks([])
            ax.grid(False)
    axes[0, 0].set_ylabel("prompt", fontsize=7)
    axes[1, 0].set_ylabel("prompted", fontsize=7)
    fig.suptitle(f"Learned {prompter} prompts (top: pixel change, grey = 0; bottom: on a test image)")
    return fig
