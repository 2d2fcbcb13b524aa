"""Figures of notebook 05, in the forms of Fu et al.'s poster: readout vs VLM bars with chance, blind-test
letter bars, TV per variant, accuracy across LM layers, and fine-tuning accuracy."""
from __future__ import annotations

import numpy as np
import pandas as pd

from vlmlab.plots import new_figure, palette

__all__ = ["readout_vs_vlm_bars", "blind_bars", "tv_bars", "layer_lines", "finetune_bars", "task_examples"]


def _grouped_bars(ax, frame: pd.DataFrame) -> np.ndarray:
    """One group of bars per row of ``frame``, one bar per column; returns the group centres."""
    w, colours = 0.8 / frame.shape[1], palette(frame.shape[1])
    x = np.arange(len(frame))
    for k, (name, col) in enumerate(frame.items()):
        ax.bar(x + (k - (frame.shape[1] - 1) / 2) * w, col.values, w, label=name, color=colours[k])
    return x


def readout_vs_vlm_bars(table: pd.DataFrame):
    """Per task: the encoder readout and the VLM's answer accuracy, the chance level dashed."""
    fig, ax = new_figure(width_per=max(4.5, 1.1 * len(table) + 1.5), height_per=3.4)
    x, w = np.arange(len(table)), 0.38
    c = palette(2)
    ax.bar(x - w / 2, table["readout_acc"], w, label="vision encoder readout", color=c[0])
    ax.bar(x + w / 2, table["vlm_acc"], w, label="VLM answer", color=c[1])
    for i, ch in enumerate(table["chance"]):
        ax.hlines(ch, i - 0.45, i + 0.45, colors="0.2", linestyles="--", lw=1, label="chance" if i == 0 else None)
    ax.set_xticks(x, table["task"])
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title="Vision readout vs VLM")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def blind_bars(table: pd.DataFrame):
    """One panel per task: answer frequency per option with the image and with a white image."""
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = new_figure(ncols=len(tasks), width_per=2.6, height_per=2.8)
    axes = np.atleast_1d(axes)
    conds = [c for c in ("image", "blank", "labels") if c in set(table["condition"])]
    colours = dict(zip(conds, palette(len(conds))))
    for ax, task in zip(axes, tasks):
        d = table[table["task"] == task]
        opts = list(dict.fromkeys(d["option"]))
        x, w = np.arange(len(opts)), 0.8 / len(conds)
        for k, cond in enumerate(conds):
            f = d[d["condition"] == cond].set_index("option")["frequency"].reindex(opts)
            ax.bar(x + (k - (len(conds) - 1) / 2) * w, f.values, w, color=colours[cond],
                   label={"image": "with image", "blank": "white image", "labels": "true answers"}[cond])
        ax.set_xticks(x, opts)
        ax.set(title=task, ylim=(0, 1), xlabel="option")
    axes[0].set_ylabel("answer frequency")
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Blind test: answers with and without the image")
    return fig


def tv_bars(table: pd.DataFrame):
    """TV distance between the predicted and the true letter distributions, per task and variant."""
    frame = table.pivot_table(index="task", columns="variant", values="tv", sort=False)
    fig, ax = new_figure(width_per=max(5.0, 1.2 * len(frame) + 2), height_per=3.2)
    x = _grouped_bars(ax, frame)
    ax.set_xticks(x, frame.index)
    ax.set(ylabel="TV(answers, labels)", ylim=(0, 1), title="Letter bias: total variation to the label distribution")
    ax.legend(fontsize=7, ncols=min(4, frame.shape[1]), loc="upper right")
    return fig


def layer_lines(table: pd.DataFrame, vlm_acc: pd.DataFrame | None = None, chance: pd.DataFrame | None = None):
    """Readout accuracy on the vision tokens (layer -1) and on the LM's hidden states at each layer."""
    fig, ax = new_figure(width_per=5.2, height_per=3.4)
    tasks = list(dict.fromkeys(table["task"]))
    colours = dict(zip(tasks, palette(len(tasks))))
    for task in tasks:
        d = table[table["task"] == task].sort_values("layer")
        ax.plot(d["layer"], d["accuracy"], marker="o", color=colours[task], label=task)
        if vlm_acc is not None:
            v = vlm_acc.set_index("task").loc[task]
            ax.axhline(v["vlm_acc"], color=colours[task], ls=":", lw=1)
    ax.axvspan(-1.5, -0.5, color="0.9", zorder=0)
    ax.set(xlabel="layer (-1: vision tokens, 0: projector output, l: after LM block l)", ylabel="readout accuracy (%)",
           ylim=(0, 100), title="The visual information survives through the LM\n(dotted: the VLM's answer accuracy)")
    ax.legend(fontsize=8)
    return fig


def finetune_bars(table: pd.DataFrame, readout: pd.DataFrame | None = None):
    """Accuracy per task after each fine-tuning variant (and the encoder readout as a ceiling)."""
    from vlmlab.blind.experiment import variant_label

    t = table.assign(label=[variant_label(v, n) for v, n in zip(table["variant"], table["n_tokens_or_rank"])])
    frame = t.pivot_table(index="task", columns="label", values="accuracy", sort=False)
    fig, ax = new_figure(width_per=max(5.5, 1.4 * len(frame) + 2), height_per=3.4)
    x = _grouped_bars(ax, frame)
    if readout is not None:
        r = readout.set_index("task").reindex(frame.index)
        for i, (ro, ch) in enumerate(zip(r["readout_acc"], r["chance"])):
            ax.hlines(ro, i - 0.45, i + 0.45, colors="k", lw=1.2, label="encoder readout" if i == 0 else None)
            ax.hlines(ch, i - 0.45, i + 0.45, colors="0.4", linestyles="--", lw=1, label="chance" if i == 0 else None)
    ax.set_xticks(x, frame.index)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title="Prompt tuning and component fine-tuning")
    ax.legend(fontsize=7, ncols=3, loc="upper left", bbox_to_anchor=(0, -0.12))
    return fig


def task_examples(runs: dict, n: int = 2):
    """The first ``n`` test questions of every task, as the VLM sees them, with the correct option."""
    from vlmlab.blind.tasks import LETTERS

    tasks = list(runs)
    n = min(n, *(len(r.test) for r in runs.values()))
    kmax = max(r.test.images.shape[1] for r in runs.values())
    fig, axes = new_figure(ncols=kmax, nrows=n * len(tasks), width_per=1.2, height_per=1.3)
    axes = np.asarray(axes).reshape(n * len(tasks), kmax)
    for t, name in enumerate(tasks):
        task = runs[name].test
        labels = task.labels or ("",) * task.images.shape[1]
        for q in range(n):
            row = axes[t * n + q]
            for i in range(kmax):
                row[i].axis("off")
                if i < task.images.shape[1]:
                    row[i].imshow(task.images[q, i])
                    row[i].set_title(f"{name}: {labels[i]}" if i == 0 else labels[i], fontsize=7)
            row[-1].text(1.05, 0.5, f"answer {LETTERS[task.answers[q]]}", transform=row[-1].transAxes, fontsize=7)
    return fig
