"""Tables and figure of notebook 03: mean ± std over seeds, domain generalization, CoOp's grid of curves.

``summary_tables(table)`` labels rows (zero-shot CLIP, linear probe, "CoOp M16 end" ...), then gives
mean and std over seeds per dataset, and for the average over datasets (averaged per seed first,
then mean ± std over seeds, as CoOp's "Average over 11 datasets" panel).
``domain_generalization`` evaluates the source-trained contexts / probes / zero-shot weights on
shifted targets (CoOp Table 1 protocol). ``grid_figure`` draws one panel per dataset plus the
average: accuracy vs shots on a log-2 axis, CoOp variants as solid lines, the linear probe dashed,
zero-shot as a star left of 1 shot (``draw_curves.py`` puts it at x = 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from vlmlab.coop.augment import eval_features
from vlmlab.coop.train import coop_logits
from vlmlab.coop.variants import Variant
from vlmlab.metrics import accuracy
from vlmlab.probe import probe_input
from vlmlab.prompts import PromptLearner, zero_shot_logits

AVERAGE = "Average"
ZS_X = 0.5


def method_label(row) -> str:
    """Row label: "Zero-shot CLIP", "Linear probe" or "CoOp M16 end[ CSC][ 'a photo of a']"."""
    if row["method"] == "zero_shot":
        return "Zero-shot CLIP"
    if row["method"] == "linear_probe":
        return "Linear probe"
    init = "" if row["init"] in ("random", "-") else f" '{row['init']}'"
    return f"CoOp M{int(row['n_ctx'])} {row['position']}{' CSC' if bool(row['csc']) else ''}{init}"


@dataclass
class Summary:
    """long: label, dataset (incl. "Average"), shots, mean, std, n_seeds; per_dataset / average: "m ± s" pivots."""

    long: pd.DataFrame
    per_dataset: pd.DataFrame
    average: pd.DataFrame


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {0.0 if np.isnan(std) else std:.2f}"


def _pivot(long: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    cells = long.assign(cell=[_fmt(m, s) for m, s in zip(long["mean"], long["std"])])
    out = cells.pivot_table(index=index, columns="shots", values="cell", aggfunc="first")
    out.columns = [f"{k} shot" if k else "0 (ZS)" for k in out.columns]
    return out.fillna("")


def summary_tables(table: pd.DataFrame) -> Summary:
    """Mean ± std over seeds per dataset and for the average over datasets (see the module docstring)."""
    t = table.assign(label=table.apply(method_label, axis=1))
    n_sets = t["dataset"].nunique()
    per_seed_avg = (t.groupby(["label", "shots", "seed"])["accuracy"].agg(["mean", "count"]).reset_index())
    per_seed_avg = per_seed_avg[per_seed_avg["count"] == n_sets].rename(columns={"mean": "accuracy"})
    per_seed_avg["dataset"] = AVERAGE
    both = pd.concat([t[["label", "dataset", "shots", "seed", "accuracy"]],
                      per_seed_avg[["label", "dataset", "shots", "seed", "accuracy"]]])
    long = (both.groupby(["dataset", "label", "shots"])["accuracy"].agg(["mean", "std", "count"]).reset_index()
            .rename(columns={"count": "n_seeds"}))
    per = _pivot(long[long["dataset"] != AVERAGE], ["dataset", "label"])
    avg = _pivot(long[long["dataset"] == AVERAGE], ["label"])
    return Summary(long, per, avg)


def _learner(bundle, classnames, variant: Variant, ctx: torch.Tensor) -> PromptLearner:
    # class-specific when the trained context is (C, M, W): under csc_with_phrase "unified" a CSC variant's is (M, W)
    learner = PromptLearner(bundle, classnames, n_ctx=variant.n_ctx, csc=ctx.dim() == 3, position=variant.position,
                            ctx_init=None if variant.init == "random" else variant.init)
    with torch.no_grad():
        learner.ctx.copy_(ctx.to(learner.ctx.device))
    return learner


def domain_generalization(bundle, source, targets: Sequence[tuple[str, object, torch.Tensor | None]], sweep,
                          variants: Sequence[Variant], shots: int, seeds: Sequence[int], cache=None) -> pd.DataFrame:
    """Accuracy of source-trained models on the source test set and on each target.

    Args:
        source: the source ``Splits``. targets: ``(name, dataset, class_index)`` from ``dg_target``.
        sweep: the ``Sweep`` that trained on the source (contexts, probes, zero-shot weights).
        variants: CoOp variants to evaluate. shots: K of the source training.
    Returns:
        source, target, method, n_ctx, position, init, csc, shots, seed, accuracy.
    """
    sets = [(source.name, source.test, None), *targets]
    rows = []
    for name, ds, index in sets:
        f = eval_features(bundle, ds, cache)
        pick = (lambda z: z) if index is None else (lambda z, i=index: z[:, i])
        base = {"source": source.name, "target": name, "shots": shots}
        if source.name in sweep.zero_shot_weights:
            acc = accuracy(pick(zero_shot_logits(f.feats, sweep.zero_shot_weights[source.name])), f.labels)
            rows += [{**base, "method": "zero_shot", "n_ctx": 0, "position": "-", "init": "-", "csc": False,
                      "shots": 0, "seed": s, "accuracy": acc} for s in seeds]
        x_probe = probe_input(f, sweep.lp_features)           # the rows the probes were fitted on
        for seed in seeds:
            probe = sweep.linear_probes.get((source.name, shots, seed))
            if probe is not None:
                rows.append({**base, "method": "linear_probe", "n_ctx": 0, "position": "-", "init": "-",
                             "csc": False, "seed": seed, "accuracy": accuracy(pick(probe.logits(x_probe)), f.labels)})
            for v in variants:
                ctx = sweep.contexts.get((source.name, v.name, shots, seed))
                if ctx is None:
                    continue
                learner = _learner(bundle, source.classnames, v, ctx)
                rows.append({**base, "method": "coop", **v.columns(), "n_ctx": learner.n_ctx, "seed": seed,
                             "accuracy": accuracy(pick(coop_logits(learner, f.feats)), f.labels)})
    return pd.DataFrame(rows)


def dg_summary(dg: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds: rows = method label, columns = source then targets (CoOp Table 1 layout)."""
    t = dg.assign(label=dg.apply(method_label, axis=1))
    order = list(dict.fromkeys(t["target"]))
    out = t.pivot_table(index="label", columns="target", values="accuracy", aggfunc="mean")[order]
    return out.round(2)


def grid_figure(long: pd.DataFrame, datasets: Sequence[str] | None = None, ncols: int = 4, title: str = ""):
    """CoOp's Fig. 3 layout from ``Summary.long``: one panel per dataset, then the average."""
    from vlmlab.plots import new_figure, palette

    datasets = list(datasets or [d for d in dict.fromkeys(long["dataset"]) if d != AVERAGE])
    panels = datasets + ([AVERAGE] if (long["dataset"] == AVERAGE).any() else [])
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = new_figure(ncols=min(ncols, len(panels)), nrows=nrows, width_per=3.2, height_per=2.6, squeeze=False)
    coop = sorted(lb for lb in long["label"].unique() if lb.startswith("CoOp"))
    colours = dict(zip(coop, palette(max(len(coop), 1))))
    for ax, name in zip(axes.ravel(), panels):
        d = long[long["dataset"] == name]
        for label in coop:
            c = d[d["label"] == label].sort_values("shots")
            if len(c):
                ax.errorbar(c["shots"], c["mean"], yerr=c["std"].fillna(0), marker="o", ms=3, lw=1.2, capsize=2,
                            color=colours[label], label=label)
        lp = d[d["label"] == "Linear probe"].sort_values("shots")
        if len(lp):
            ax.plot(lp["shots"], lp["mean"], ls="--", marker="x", ms=4, color="0.25", label="Linear probe")
        zs = d[d["label"] == "Zero-shot CLIP"]
        if len(zs):
            ax.plot([ZS_X], [zs["mean"].iloc[0]], marker="*", ms=11, color="crimson", ls="", label="Zero-shot CLIP")
        ax.set_xscale("log", base=2)
        ax.set_xticks([ZS_X, 1, 2, 4, 8, 16], ["0", "1", "2", "4", "8", "16"])
        ax.set(title=name, xlabel="shots per class", ylabel="accuracy (%)")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    if title:
        fig.suptitle(title)
    return fig


COMPARISONS = (
    ("CoOp vs zero-shot, all datasets", "CoOp M16 end", "Zero-shot CLIP", "all"),
    ("CoOp vs zero-shot, far datasets", "CoOp M16 end", "Zero-shot CLIP", "far"),
    ("CoOp vs zero-shot, near datasets", "CoOp M16 end", "Zero-shot CLIP", "near"),
    ("CoOp vs linear probe", "CoOp M16 end", "Linear probe", "all"),
    ("UC vs CSC (end)", "CoOp M16 end", "CoOp M16 end CSC", "all"),
    ("UC vs CSC (middle)", "CoOp M16 middle", "CoOp M16 middle CSC", "all"),
    ("end vs middle (UC)", "CoOp M16 end", "CoOp M16 middle", "all"),
    ("M16 vs M4 (end)", "CoOp M16 end", "CoOp M4 end", "all"),
    ("M16 vs M8 (end)", "CoOp M16 end", "CoOp M8 end", "all"),
    ("M8 vs M4 (end)", "CoOp M8 end", "CoOp M4 end", "all"),
    ("'a photo of a' vs random init (M4 end)", "CoOp M4 end 'a photo of a'", "CoOp M4 end", "all"),
)


def _mean_over(t: pd.DataFrame, label: str, datasets: list[str], shots: int) -> tuple[float, int]:
    d = t[(t["label"] == label) & t["dataset"].isin(datasets) & (t["shots"] == (0 if label == "Zero-shot CLIP" else shots))]
    per_seed = d.groupby("seed")["accuracy"].agg(["mean", "count"])
    per_seed = per_seed[per_seed["count"] == len(datasets)]                 # only seeds with every dataset
    return (float(per_seed["mean"].mean()), len(per_seed)) if len(per_seed) else (float("nan"), 0)


def findings(table: pd.DataFrame, far: Sequence[str] = (), shots: int = 16, comparisons=COMPARISONS) -> pd.DataFrame:
    """The notebook's claims as numbers: mean accuracy at ``shots`` of two rows over a dataset group.

    Returns:
        comparison, a, b, datasets ("all" / "far" / "near"), a_mean, b_mean, difference (a - b),
        n_seeds; a comparison whose rows were not run is left out.
    """
    t = table.assign(label=table.apply(method_label, axis=1))
    every = list(dict.fromkeys(t["dataset"]))
    groups = {"all": every, "far": [d for d in every if d in far], "near": [d for d in every if d not in far]}
    rows = []
    for name, a, b, group in comparisons:
        sets = groups[group]
        if not sets:
            continue
        (ma, na), (mb, nb) = _mean_over(t, a, sets, shots), _mean_over(t, b, sets, shots)
        if na and nb:
            rows.append({"comparison": name, "a": a, "b": b, "datasets": group, "a_mean": ma, "b_mean": mb,
                         "difference": ma - mb, "n_seeds": min(na, nb)})
    return pd.DataFrame(rows, columns=["comparison", "a", "b", "datasets", "a_mean", "b_mean", "difference", "n_seeds"])
