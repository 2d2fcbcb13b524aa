"""Notebook 01's claims: the UniInfo poster's Table 1 findings as predicates over the run's tables.

Adachi, Yamaguchi & Hamagami, *Uniformity First* (arXiv:2505.12912); the poster is seed
``000_dc4b5987f5c334c2.txt`` and its Table 1 is transcribed in ``../shared/papers/uniinfo_tta.md``
§8.1 (and ``params/published/01_uniformity_analysis.csv``). Every predicate reads the notebook's
saved tables, never its live objects:

    metrics       one row per (condition, severity): acc_plain, acc_ensemble, acc_corruption_prompt,
                  entropy, uniformity (poster metric, lower = more uniform), modality_gap_emd;
                  clean and the shifted sets have severity 0
    correlation   one row: n, pearson_r, pearson_p, spearman_r, spearman_p (acc_plain vs uniformity)

and the parameters ``corruptions``, ``severities`` and ``uniformity_kept_by`` (the shifted sets the
profile counts as the poster's domain-shift columns: ImageNet-A/R, in the world ``renditions``).
The poster reports severity 5 only, so every corruption claim reads severity 5. Qualitative claims
are strict comparisons of the run's own numbers; the one margin ("near clean") comes from the
poster's own table, as its note says. ``paper_value`` floats are derived from the poster's printed
values (column 1 of Table 1 is unnamed and taken as clean ImageNet, §8.1).
"""
from __future__ import annotations

import pandas as pd

from vlmlab.analysis.uniformity import correlations
from vlmlab.claims import Claim, Evidence, NotMeasured, Verdict, holds_if

__all__ = ["CLAIMS", "SEVERITY"]

SEVERITY = 5  # the poster's ImageNet-C severity
PAPER = "UniInfo (Adachi et al., arXiv:2505.12912), poster"
WHERE = "seed 000_dc4b5987f5c334c2.txt, poster Table 1; ../shared/papers/uniinfo_tta.md §8.1"
ABSTRACT = "arXiv:2505.12912 / TMLR abstract; ../shared/papers/uniinfo_tta.md §1; poster Table 1 (§8.1)"


# ---------------------------------------------------------------------------------------------- reading


def _metrics(ev: Evidence) -> pd.DataFrame:
    return ev.table("metrics")


def _clean(t: pd.DataFrame) -> pd.Series:
    rows = t[(t.condition == "clean") & (t.severity == 0)]
    if len(rows) != 1:
        raise KeyError(f"table 'metrics' has {len(rows)} 'clean' rows at severity 0, expected 1")
    return rows.iloc[0]


def _corrupted(ev: Evidence) -> pd.DataFrame:
    """The run's corruptions at severity 5, indexed by corruption; NotMeasured without severity 5."""
    t = _metrics(ev)
    names = list(ev.params.get("corruptions") or t[t.severity > 0].condition.unique())
    if not names:
        raise NotMeasured("this run has no corruption")
    severities = ev.params.get("severities")
    if SEVERITY not in (severities if severities is not None else t.severity.unique()):
        raise NotMeasured(f"severity {SEVERITY} (the poster's) is not among this run's severities {severities}")
    rows = t[t.condition.isin(names) & (t.severity == SEVERITY)].set_index("condition")
    missing = [c for c in names if c not in rows.index]
    if missing:
        raise KeyError(f"table 'metrics' lacks severity-{SEVERITY} rows for {missing}: the run is incomplete")
    return rows.loc[names]


def _shifts(ev: Evidence) -> pd.DataFrame:
    """The profile's domain-shift sets (parameter ``uniformity_kept_by``) at severity 0."""
    names = list(ev.params.get("uniformity_kept_by") or [])
    if not names:
        raise NotMeasured("no domain-shift set named in the parameter uniformity_kept_by")
    t = _metrics(ev)
    rows = t[t.condition.isin(names) & (t.severity == 0)].set_index("condition")
    missing = [n for n in names if n not in rows.index]
    if missing:
        raise KeyError(f"uniformity_kept_by names {missing}, not in table 'metrics' "
                       f"(conditions: {sorted(t.condition.unique())}); add it to shift_sources or drop it")
    return rows.loc[names]


def _f(x) -> float:
    return float(x)


# ---------------------------------------------------------------------------------------------- corruption


def check_corruption_lowers_accuracy(ev: Evidence) -> Verdict:
    """Poster Table 1: every corruption at severity 5 is below clean (best: brightness 54.75 vs 66.97)."""
    clean, c = _f(_clean(_metrics(ev)).acc_plain), _corrupted(ev)
    not_below = [n for n in c.index if not c.acc_plain[n] < clean]
    return holds_if(not not_below, {"clean": clean, "corruption mean": _f(c.acc_plain.mean()),
                                    "best corruption": _f(c.acc_plain.max()), "n corruptions": len(c)},
                    f"acc_plain, severity {SEVERITY}, each of the run's {len(c)} corruptions (poster: 15) below "
                    f"clean; not below: {', '.join(not_below) or 'none'}",
                    headline=_f(c.acc_plain.max()) - clean)


def _rises(ev: Evidence, column: str) -> Verdict:
    clean, c = _f(_clean(_metrics(ev))[column]), _corrupted(ev)
    not_above = [n for n in c.index if not c[column][n] > clean]
    return holds_if(not not_above, {"clean": clean, "corruption mean": _f(c[column].mean()),
                                    "lowest corruption": _f(c[column].min())},
                    f"{column}, severity {SEVERITY}, each of the run's {len(c)} corruptions above clean; headline "
                    f"= mean rise; not above: {', '.join(not_above) or 'none'}",
                    headline=_f(c[column].mean()) - clean)


def check_corruption_raises_uniformity_loss(ev: Evidence) -> Verdict:
    """Poster Table 1: uniformity loss 0.601-0.855 under corruption vs 0.513 clean (mean rise +0.206)."""
    return _rises(ev, "uniformity")


def check_corruption_raises_entropy(ev: Evidence) -> Verdict:
    """Poster Table 1: entropy 1.061-3.773 under corruption vs 0.748 clean (mean 2.395, rise +1.647)."""
    return _rises(ev, "entropy")


def _noise_split(ev: Evidence) -> tuple[pd.DataFrame, pd.DataFrame]:
    c = _corrupted(ev)
    noise = c[c.index.str.endswith("_noise")]
    if noise.empty or len(noise) == len(c):
        raise NotMeasured("needs a noise corruption (*_noise) and another corruption in the run")
    return noise, c.drop(noise.index)


def check_noise_lowest_accuracy(ev: Evidence) -> Verdict:
    """Poster Table 1: Gaussian/impulse/shot noise 6.02/6.12/7.88, every other corruption >= 11.81."""
    noise, other = _noise_split(ev)
    gap = _f(other.acc_plain.min()) - _f(noise.acc_plain.max())
    return holds_if(gap > 0, {"best noise": _f(noise.acc_plain.max()), "worst other": _f(other.acc_plain.min())},
                    f"acc_plain, severity {SEVERITY}: every noise corruption below every other; headline = "
                    f"worst other - best noise", headline=gap)


def check_noise_highest_uniformity_loss(ev: Evidence) -> Verdict:
    """Poster Table 1: noise uniformity loss 0.839-0.855, every other corruption <= 0.744."""
    noise, other = _noise_split(ev)
    gap = _f(noise.uniformity.min()) - _f(other.uniformity.max())
    return holds_if(gap > 0, {"lowest noise": _f(noise.uniformity.min()), "highest other": _f(other.uniformity.max())},
                    f"uniformity, severity {SEVERITY}: every noise corruption above every other; headline = "
                    f"lowest noise - highest other", headline=gap)


def check_corruption_prompt_does_not_help(ev: Evidence) -> Verdict:
    """Poster Table 1: naming the corruption in the prompt, mean 22.70 vs the plain prompt's 23.09."""
    c = _corrupted(ev)
    diff = _f((c.acc_corruption_prompt - c.acc_plain).mean())
    return holds_if(diff <= 0, {"corruption prompt": _f(c.acc_corruption_prompt.mean()), "plain": _f(c.acc_plain.mean()),
                                "corruptions where it helps": int((c.acc_corruption_prompt > c.acc_plain).sum())},
                    f"mean over the run's corruptions at severity {SEVERITY}: corruption prompt <= plain",
                    headline=diff)


# ---------------------------------------------------------------------------------------------- domain shift


def check_domain_shift_lowers_accuracy(ev: Evidence) -> Verdict:
    """Poster Table 1: ImageNet-A 32.91, ImageNet-R 74.36 (mean 53.64) vs column 1 (clean) 66.97."""
    clean, s = _f(_clean(_metrics(ev)).acc_plain), _shifts(ev)
    mean = _f(s.acc_plain.mean())
    return holds_if(mean < clean, {"clean": clean, **{n: _f(v) for n, v in s.acc_plain.items()}},
                    "acc_plain: mean over uniformity_kept_by below clean (on the mean: the poster's ImageNet-R "
                    "alone is above its column 1)", headline=mean - clean)


def check_domain_shift_keeps_uniformity(ev: Evidence) -> Verdict:
    """Poster Table 1: A +0.025, R -0.013 from clean, while the mildest corruption rises +0.088."""
    clean, s, c = _f(_clean(_metrics(ev)).uniformity), _shifts(ev), _corrupted(ev)
    moves = (s.uniformity - clean).abs()
    mildest = _f(c.uniformity.min()) - clean
    return holds_if(bool((moves < mildest).all()), {"clean": clean, **{f"|{n} - clean|": _f(v) for n, v in moves.items()},
                                                     "mildest corruption rise": mildest},
                    f"margin from the poster: 'near clean' = moves uniformity less than the mildest corruption at "
                    f"severity {SEVERITY} raises it (poster: 0.025 < 0.088)", headline=_f(moves.max()))


def check_uniformity_separates_corruption_from_shift(ev: Evidence) -> Verdict:
    """Abstract; poster Table 1: lowest corruption 0.601 (brightness) > highest domain shift 0.538 (A)."""
    s, c = _shifts(ev), _corrupted(ev)
    gap = _f(c.uniformity.min()) - _f(s.uniformity.max())
    return holds_if(gap > 0, {"lowest corruption": _f(c.uniformity.min()), "highest domain shift": _f(s.uniformity.max())},
                    f"uniformity: every corruption at severity {SEVERITY} above every uniformity_kept_by set",
                    headline=gap)


def check_modality_gap_does_not_separate(ev: Evidence) -> Verdict:
    """Poster Table 1: EMD corruption mean 1.311 vs ImageNet-A/R mean 1.341 (no rise under corruption)."""
    s, c = _shifts(ev), _corrupted(ev)
    diff = _f(c.modality_gap_emd.mean()) - _f(s.modality_gap_emd.mean())
    return holds_if(diff <= 0, {"corruption mean": _f(c.modality_gap_emd.mean()),
                                "domain shift mean": _f(s.modality_gap_emd.mean())},
                    f"modality_gap_emd: mean of the corruptions at severity {SEVERITY} not above the "
                    f"uniformity_kept_by mean", headline=diff)


# ---------------------------------------------------------------------------------------------- prompts, correlation


def check_ensemble_at_least_plain(ev: Evidence) -> Verdict:
    """Poster Table 1: the ensemble is above the plain prompt in all 18 columns (mean +0.92)."""
    t = _metrics(ev)
    rows = pd.concat([t[t.severity == 0].set_index("condition"), _corrupted(ev)])
    gain = rows.acc_ensemble - rows.acc_plain
    return holds_if(_f(gain.mean()) >= 0, {"ensemble": _f(rows.acc_ensemble.mean()), "plain": _f(rows.acc_plain.mean()),
                                           "conditions where below": int((gain < 0).sum()), "n conditions": len(rows)},
                    f"mean over clean, every shifted set and the corruptions at severity {SEVERITY}: ensemble >= plain",
                    headline=_f(gain.mean()))


def check_accuracy_uniformity_negative_correlation(ev: Evidence) -> Verdict:
    """Poster Table 1 read across its 18 columns: Pearson r(uniformity, accuracy) = -0.90 (derived).

    The poster's columns: clean, the domain-shift sets and the corruptions at severity 5, so the run's
    severity-0 conditions and its corruptions at ``SEVERITY`` (not its other severities); the notebook's
    ``correlation`` table (every condition of the run) is reported beside it."""
    t = _metrics(ev)
    rows = pd.concat([t[t.severity == 0].set_index("condition"), _corrupted(ev)])
    c = correlations(rows)
    if c["n"] < 3:
        raise NotMeasured(f"{c['n']} conditions: a correlation needs 3")
    r = _f(c["pearson_r"])
    every = ev.table("correlation").iloc[0]
    return holds_if(r < 0, {"pearson_r": r, "spearman_r": _f(c["spearman_r"]), "n": int(c["n"]),
                            "every condition pearson_r": _f(every.pearson_r), "every condition n": int(every.n)},
                    f"acc_plain vs uniformity across clean, every shifted set and the corruptions at severity {SEVERITY}: "
                    "pearson_r < 0", headline=r)


def _claim(finding: str, where: str, statement: str, check, paper_value=None, tolerance: float = 1.0) -> Claim:
    return Claim(f"uniformity.{finding}", PAPER, where, statement, check, paper_value, tolerance)


CLAIMS: list[Claim] = [
    _claim("corruption_lowers_accuracy", WHERE,
           "Zero-shot accuracy at severity 5 is below clean for every one of the 15 corruptions.",
           check_corruption_lowers_accuracy, -12.22),  # best corruption (brightness 54.75) - clean 66.97
    _claim("corruption_raises_uniformity_loss", WHERE,
           "The image embeddings' uniformity loss rises above clean under every corruption (they lose uniformity).",
           check_corruption_raises_uniformity_loss, 0.206, 0.02),  # mean of 15 printed (0.719) - 0.513
    _claim("corruption_raises_entropy", WHERE,
           "Prediction entropy rises above clean under every corruption.",
           check_corruption_raises_entropy, 1.647, 0.1),
    _claim("noise_lowest_accuracy", WHERE,
           "The noise corruptions (Gaussian, shot, impulse) are the most damaging: the lowest accuracy of all corruptions.",
           check_noise_lowest_accuracy, 3.93),  # glass 11.81 - shot 7.88
    _claim("noise_highest_uniformity_loss", WHERE,
           "The noise corruptions have the highest uniformity loss of all corruptions.",
           check_noise_highest_uniformity_loss, 0.095, 0.02),  # shot 0.839 - contrast 0.744
    _claim("corruption_prompt_does_not_help", WHERE,
           "Naming the corruption in the prompt does not raise accuracy on average over the plain prompt.",
           check_corruption_prompt_does_not_help, -0.37),  # mean of 15 printed; printed means 22.70 - 23.09
    _claim("domain_shift_lowers_accuracy", WHERE + "; poster text 'distribution shift lowers zero-shot accuracy'",
           "Domain shift (ImageNet-A/R; in the world, renditions) lowers zero-shot accuracy on average.",
           check_domain_shift_lowers_accuracy, -13.34),  # mean(32.91, 74.36) - 66.97
    _claim("domain_shift_keeps_uniformity", WHERE + "; poster text 'domain shift vs corruption'",
           "Under domain shift the uniformity loss stays near clean: it moves less than the mildest corruption raises it.",
           check_domain_shift_keeps_uniformity, 0.025, 0.02),  # max |A, R - clean|
    _claim("uniformity_separates_corruption_from_shift", ABSTRACT,
           "Uniformity separates corruption from domain shift: every corruption's uniformity loss exceeds every "
           "domain-shift set's.", check_uniformity_separates_corruption_from_shift, 0.063, 0.02),  # 0.601 - 0.538
    _claim("modality_gap_does_not_separate", ABSTRACT,
           "The modality gap (EMD) does not grow under corruption beyond domain shift: the corruptions' mean EMD is "
           "not above the domain-shift sets'.", check_modality_gap_does_not_separate, -0.030, 0.02),  # 1.311 - 1.341
    _claim("ensemble_at_least_plain", WHERE,
           "The prompt ensemble is at least as accurate as the single plain prompt (on average over conditions).",
           check_ensemble_at_least_plain, 0.92),  # mean over the 18 columns of ensemble - plain
    _claim("accuracy_uniformity_negative_correlation", WHERE,
           "Across conditions, accuracy and uniformity loss correlate negatively.",
           check_accuracy_uniformity_negative_correlation, -0.90, 0.1),  # Pearson over the poster's 18 columns
]
