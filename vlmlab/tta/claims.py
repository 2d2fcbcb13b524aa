"""The claims of notebook 02 (UniInfo poster, Table 2 and the embedding panel; seed 000).

Each claim is a finding of the UniInfo poster (Adachi, Yamaguchi, Hamagami; arXiv:2505.12912),
as stated in ``../shared/seeds/000_dc4b5987f5c334c2.txt`` and summarised in
``../shared/papers/uniinfo_tta.md``, with a predicate over the notebook's saved tables:

    tta               method, corruption, severity, shots, seed, accuracy (percent)
    paired            TPT / ZERO / MTA against No-adapt on the same image subset
    uniinfo_geometry  corruption, stage (before / after), uniformity, modality_gap, ...
    cost              method, ms_per_image, peak_mem_mb, device

A method's mean is the poster's: accuracy averaged over seeds, then the unweighted mean over the
corruptions of the run. Qualitative claims are strict comparisons of these means; no margins.

    ledger = vlmlab.claims.evaluate(CLAIMS, vlmlab.claims.Evidence.load(run.dir, P))
"""
from __future__ import annotations

import pandas as pd

from vlmlab.claims import Claim, Evidence, NotMeasured, Verdict, holds_if

__all__ = ["CLAIMS", "method_means", "per_corruption"]

PAPER = "UniInfo (Adachi et al., arXiv:2505.12912; poster)"
SEED = "seed 000_dc4b5987f5c334c2.txt"
TABLE2 = f"{SEED}, poster Table 2 (実験); papers/uniinfo_tta.md §8.2"
PANEL = f"{SEED}, poster panel 'TTA前後で埋め込みベクトルを可視化'; papers/uniinfo_tta.md §1 (poster narrative)"
LABELS = {"no_adapt": "No-adapt", "linear_probe": "LP", "tip_adapter": "Tip-Adapter", "tpt": "TPT",
          "zero": "ZERO", "mta": "MTA", "tda": "TDA", "uniinfo": "UniInfo"}
BASELINES_TTA = ("tpt", "zero", "mta", "tda")


def _label(method: str, shots) -> str:
    return LABELS.get(method, method) + ("" if pd.isna(shots) else f" ({int(shots)})")


def per_corruption(ev: Evidence) -> pd.DataFrame:
    """Accuracy per row (method and shots, labelled as in the poster) x corruption, averaged over seeds.

    Raises:
        ValueError: a row lacks a corruption that another row has (the table is incomplete).
    """
    t = ev.table("tta").copy()
    t["row"] = [_label(m, s) for m, s in zip(t["method"], t["shots"])]
    wide = t.pivot_table(index="row", columns="corruption", values="accuracy", aggfunc="mean")
    if wide.isna().any().any():
        missing = wide.isna().stack()
        raise ValueError(f"tables/tta.csv lacks rows {missing[missing].index.tolist()} (row, corruption): "
                         "the run is incomplete; rerun the notebook")
    return wide


def method_means(ev: Evidence) -> pd.Series:
    """The poster's Mean column: per row, the unweighted mean over corruptions of the seed-mean accuracy."""
    return per_corruption(ev).mean(axis=1)


def _rows(means: pd.Series, method: str) -> pd.Series:
    """The rows of ``method`` (one, or one per shot count); NotMeasured when the run lacks it."""
    label = LABELS.get(method, method)
    rows = means[[r == label or r.startswith(label + " (") for r in means.index]]
    if rows.empty:
        raise NotMeasured(f"method {method!r} not in this run (parameter `methods`)")
    return rows


def _one(means: pd.Series, method: str) -> float:
    return float(_rows(means, method).iloc[0])


READOUT = ("UniInfo's row is its `uniinfo.readout` (default: the EMA teacher's offline pass; docs/fidelity.md "
           "measures the other readouts)")


def check_beats_no_adapt(ev: Evidence) -> Verdict:
    """UniInfo's mean accuracy is above No-adapt's (poster: 27.10 vs 23.09, +4.01)."""
    means = method_means(ev)
    uni, base = _one(means, "uniinfo"), _one(means, "no_adapt")
    return holds_if(uni > base, {"UniInfo": uni, "No-adapt": base, "gain": uni - base},
                    f"mean over {per_corruption(ev).shape[1]} corruptions; UniInfo > No-adapt", headline=uni - base)


def check_best_mean(ev: Evidence) -> Verdict:
    """UniInfo has the highest mean of every row of Table 2 (each few-shot shot count a row)."""
    means = method_means(ev)
    uni = _one(means, "uniinfo")
    others = means.drop(_rows(means, "uniinfo").index)
    if others.empty:
        raise NotMeasured("UniInfo is the only method of this run: nothing to compare with")
    best = others.idxmax()
    return holds_if(uni > others.max(), {"UniInfo": uni, f"best other ({best})": float(others.max())},
                    f"UniInfo > every other of {len(others)} rows (strict); {READOUT}", headline=uni)


def check_beats_no_adapt_every_corruption(ev: Evidence) -> Verdict:
    """UniInfo is above No-adapt on every corruption (poster: 15 of 15)."""
    wide = per_corruption(ev)
    means = wide.mean(axis=1)
    diff = wide.loc[_rows(means, "uniinfo").index[0]] - wide.loc[_rows(means, "no_adapt").index[0]]
    worst = diff.idxmin()
    return holds_if(bool((diff > 0).all()), {"corruptions won": int((diff > 0).sum()), "of": len(diff),
                                             f"smallest gain ({worst})": float(diff.min())},
                    f"UniInfo > No-adapt on each corruption (strict); {READOUT}", headline=float((diff > 0).sum()))


def _no_adapt_compare(ev: Evidence, method: str, above: bool) -> Verdict:
    """Mean of ``method`` against No-adapt; for the multi-view methods on the same images (tables/paired.csv)."""
    means = method_means(ev)
    acc = _one(means, method)
    name = LABELS[method]
    ours: dict[str, float] = {name: acc}
    if "no_adapt" in set(ev.table("tta")["method"]):
        ours["No-adapt"] = _one(means, "no_adapt")
    paired = ev.table("paired") if ev.has("paired") else pd.DataFrame()
    if "method" in paired.columns and method in set(paired["method"]):
        p = paired[paired["method"] == method].groupby("corruption")[["accuracy", "no_adapt_same_images"]].mean()
        a, b = float(p["accuracy"].mean()), float(p["no_adapt_same_images"].mean())
        ours |= {f"{name} (same images)": a, "No-adapt (same images)": b}
        note = "on the same image subset (tables/paired.csv), mean over corruptions"
    elif "No-adapt" in ours:
        a, b = acc, ours["No-adapt"]
        note = "Table 2 means over corruptions"
    else:
        raise NotMeasured("No-adapt not in this run (parameter `methods`) and no paired table for " + method)
    diff = a - b
    ours["difference"] = diff
    return holds_if(diff > 0 if above else diff < 0, ours,
                    f"{note}; {name} {'>' if above else '<'} No-adapt (strict)", headline=diff)


def check_tpt_above_no_adapt(ev: Evidence) -> Verdict:
    """TPT's mean is above No-adapt's (poster: 25.07 vs 23.09)."""
    return _no_adapt_compare(ev, "tpt", above=True)


def check_tda_above_no_adapt(ev: Evidence) -> Verdict:
    """TDA's mean is above No-adapt's (poster: 25.54 vs 23.09)."""
    return _no_adapt_compare(ev, "tda", above=True)


def check_zero_below_no_adapt(ev: Evidence) -> Verdict:
    """ZERO's mean is below No-adapt's (poster: 21.96 vs 23.09)."""
    return _no_adapt_compare(ev, "zero", above=False)


def check_mta_below_no_adapt(ev: Evidence) -> Verdict:
    """MTA's mean is below No-adapt's (poster: 22.75 vs 23.09)."""
    return _no_adapt_compare(ev, "mta", above=False)


def _few_shot_below(ev: Evidence, method: str) -> Verdict:
    """Every shot count of ``method`` has a mean below No-adapt's; headline = best row minus No-adapt."""
    means = method_means(ev)
    rows, base = _rows(means, method), _one(means, "no_adapt")
    ours = {**{r: float(v) for r, v in rows.items()}, "No-adapt": base, "best minus No-adapt": float(rows.max() - base)}
    return holds_if(bool((rows < base).all()), ours, f"each of {len(rows)} shot counts < No-adapt (strict)",
                    headline=float(rows.max() - base))


def check_linear_probe_below_no_adapt(ev: Evidence) -> Verdict:
    """The linear probe is below No-adapt at every shot count (poster: 1/5/10 shots 10.38?/17.28/20.73)."""
    return _few_shot_below(ev, "linear_probe")


def check_tip_adapter_below_no_adapt(ev: Evidence) -> Verdict:
    """Tip-Adapter is below No-adapt at every shot count (poster: 16.92/20.19/22.17)."""
    return _few_shot_below(ev, "tip_adapter")


def check_baselines_sometimes_lower(ev: Evidence) -> Verdict:
    """Some TTA baseline (TPT, ZERO, MTA, TDA) falls below No-adapt on some corruption (poster: 20 of 60 cells)."""
    wide = per_corruption(ev)
    means = wide.mean(axis=1)
    base = wide.loc[_rows(means, "no_adapt").index[0]]
    present = [m for m in BASELINES_TTA if LABELS[m] in wide.index]
    if not present:
        raise NotMeasured("none of TPT, ZERO, MTA, TDA in this run (parameter `methods`)")
    paired = _paired_differences(ev)
    below = {LABELS[m]: int((paired[m] < 0).sum()) if m in paired else int((wide.loc[LABELS[m]] < base).sum())
             for m in present}
    total = sum(below.values())
    return holds_if(total > 0, {**{f"{k} cells below": v for k, v in below.items()}, "of": len(present) * len(base)},
                    "count of (baseline, corruption) cells with accuracy < No-adapt (TPT / ZERO / MTA on the same "
                    "images, tables/paired.csv); holds if any", headline=total)


def _paired_differences(ev: Evidence) -> dict[str, pd.Series]:
    """Per multi-view method: accuracy minus No-adapt's on the same images, per corruption (seed mean)."""
    paired = ev.table("paired") if ev.has("paired") else pd.DataFrame()
    if "method" not in paired.columns:
        return {}
    return {m: g.groupby("corruption")["accuracy"].mean() - g.groupby("corruption")["no_adapt_same_images"].mean()
            for m, g in paired.groupby("method")}


def _geometry(ev: Evidence, column: str) -> tuple[float, float, int, int]:
    g = ev.table("uniinfo_geometry")
    if "stage" not in g.columns or g.empty:
        raise NotMeasured("no UniInfo geometry in this run (UniInfo not in `methods`)")
    per = g.groupby(["corruption", "stage"])[column].mean().unstack("stage")
    if per[["before", "after"]].isna().any().any():
        raise ValueError(f"tables/uniinfo_geometry.csv lacks a before or after row for {column}: rerun the notebook")
    improved = int((per["after"] < per["before"]).sum())
    return float(per["before"].mean()), float(per["after"].mean()), improved, len(per)


def check_more_uniform(ev: Evidence) -> Verdict:
    """UniInfo lowers the uniformity loss of the image embeddings (poster metric, t = 1, no log)."""
    before, after, improved, n = _geometry(ev, "uniformity")
    return holds_if(after < before, {"before": before, "after": after, "corruptions improved": improved, "of": n},
                    "mean over corruptions of the poster uniformity (lower = more uniform); after < before",
                    headline=after - before)


def check_closes_modality_gap(ev: Evidence) -> Verdict:
    """UniInfo shrinks the gap between image embeddings and their class texts (centroid gap)."""
    before, after, improved, n = _geometry(ev, "modality_gap")
    return holds_if(after < before, {"before": before, "after": after, "corruptions improved": improved, "of": n},
                    "mean over corruptions of the centroid gap to the label's class text; after < before "
                    "(the poster shows it in a PCA plot, no number)", headline=after - before)


def check_tda_cheaper_than_tpt(ev: Evidence) -> Verdict:
    """TDA costs less time per image than TPT (TDA README: 16 min vs 12 h 50 min on ImageNet)."""
    cost = ev.table("cost")
    if "method" not in cost.columns or cost.empty:
        raise NotMeasured("no timing in this run (n_cost_images = 0)")
    ms = cost.groupby("method")["ms_per_image"].mean()
    missing = [m for m in ("tda", "tpt") if m not in ms.index]
    if missing:
        raise NotMeasured(f"no timing of {missing} in this run (parameter `methods`)")
    return holds_if(ms["tda"] < ms["tpt"], {"TDA ms/image": float(ms["tda"]), "TPT ms/image": float(ms["tpt"]),
                                            "TPT / TDA": float(ms["tpt"] / ms["tda"])},
                    "milliseconds per image, encoder included (tables/cost.csv); TDA < TPT",
                    headline=float(ms["tpt"] / ms["tda"]))


def _claim(finding: str, where: str, statement: str, check, paper_value=None, paper: str = PAPER) -> Claim:
    return Claim(f"uniinfo.{finding}", paper, where, statement, check, paper_value)


CLAIMS: list[Claim] = [
    _claim("beats_no_adapt", TABLE2, "UniInfo's mean accuracy over the corruptions is above No-adapt's.",
           check_beats_no_adapt, 4.01),
    _claim("best_mean", TABLE2, "UniInfo has the best mean accuracy of all methods and shot counts.",
           check_best_mean, 27.10),
    _claim("beats_no_adapt_every_corruption", TABLE2 + "; '提案手法により精度が向上'",
           "UniInfo is above No-adapt on every corruption.", check_beats_no_adapt_every_corruption,
           "15 of 15"),
    _claim("tpt_above_no_adapt", TABLE2, "TPT's mean accuracy is above No-adapt's.", check_tpt_above_no_adapt,
           1.98),
    _claim("tda_above_no_adapt", TABLE2, "TDA's mean accuracy is above No-adapt's.", check_tda_above_no_adapt,
           2.45),
    _claim("zero_below_no_adapt", TABLE2, "ZERO's mean accuracy is below No-adapt's.", check_zero_below_no_adapt,
           -1.13),
    _claim("mta_below_no_adapt", TABLE2, "MTA's mean accuracy is below No-adapt's.", check_mta_below_no_adapt,
           -0.34),
    _claim("linear_probe_below_no_adapt", TABLE2,
           "The few-shot linear probe is below No-adapt's mean at every shot count.",
           check_linear_probe_below_no_adapt, -2.36),
    _claim("tip_adapter_below_no_adapt", TABLE2, "Tip-Adapter is below No-adapt's mean at every shot count.",
           check_tip_adapter_below_no_adapt, -0.92),
    _claim("baselines_sometimes_lower", TABLE2 + "; '既存手法は逆に精度が低下するケースもあり'",
           "Existing TTA methods sometimes lower accuracy below No-adapt on a corruption.",
           check_baselines_sometimes_lower, "20 of 60 cells (ZERO 13, MTA 7, TPT 0, TDA 0)"),
    _claim("more_uniform", PANEL, "UniInfo makes the image embeddings more uniform (lower uniformity loss).",
           check_more_uniform),
    _claim("closes_modality_gap", PANEL,
           "UniInfo closes the gap between the image embeddings and the text embeddings.",
           check_closes_modality_gap),
    _claim("tda_cheaper_than_tpt", "TDA README (kdiAAA/TDA); papers/uniinfo_tta.md §9",
           "TDA (training-free cache, one view) takes less time per image than TPT (64 views, backprop).",
           check_tda_cheaper_than_tpt, "16 min vs 12 h 50 min on ImageNet (RN50), 48x",
           paper="TDA (Karmanov et al., CVPR 2024), README"),
]
