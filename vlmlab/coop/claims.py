"""CoOp's claims (Zhou et al., IJCV 2022, arXiv:2109.01134) as predicates over notebook 03's saved tables.

Each ``check_<finding>(ev)`` reads the tables the notebook writes through ``run.save_table`` (read
back by :class:`vlmlab.claims.Evidence`) and returns a :class:`vlmlab.claims.Verdict`:

    coop_mean_std           dataset (incl. "Average"), label, shots, mean, std, n_seeds
    domain_generalization   source, target, method, n_ctx, position, init, csc, shots, seed, accuracy
    nearest_words           ..., class_index, ctx_index, rank, word, distance

"CoOp" is the paper's main curve, ``CoOp M16 end`` (unified context, class token at the end); the
comparisons are at 16 shots unless a claim names another count (not measured without them). A
qualitative claim ("A beats B") is a strict comparison of the run's own means; the margins the
paper's wording needs are module constants, the same in every profile: ``LARGE_GAIN`` (10 points,
the seed's bar for the fine-grained and scene sets), ``LITTLE`` (1 point, the ledger's tolerance)
and ``READS_AS_WORD`` (a vector nearer its first word than half the distance to its second). Paper numbers
are from ``shared/papers/coop.md`` §10 (tags [M] unverified, [I] verified in issue threads).
A claim the run cannot test (a variant, dataset or shot count it did not run) raises
:class:`vlmlab.claims.NotMeasured`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from vlmlab.claims import Claim, Evidence, NotMeasured, Verdict, holds_if
from vlmlab.coop.report import AVERAGE, method_label

PAPER = "CoOp (Zhou et al., IJCV 2022)"
SEED = "seed 002_8816ce1a0304085d.txt"
COOP, ZS, LP = "CoOp M16 end", "Zero-shot CLIP", "Linear probe"
IMAGENET_ANALOGUES = ("ImageNet", "objects")  # CoOp's ImageNet; the world's general-object set (DG source)
SPECIALISED = ("StanfordCars", "Flowers102", "FGVCAircraft", "DTD", "EuroSAT")  # seed: CSC helps these
GAIN_BARS = {"EuroSAT": 45.0, "DTD": 20.0, "Flowers102": 10.0, "StanfordCars": 10.0, "FGVCAircraft": 10.0,
             "SUN397": 10.0, "UCF101": 10.0}  # seed 002: 16-shot gains "over 45 %", "over 20 %", "over 10 %"
UC_CSC_PAIRS = (("CoOp M16 end", "CoOp M16 end CSC"), ("CoOp M16 middle", "CoOp M16 middle CSC"))
LARGE_GAIN = 10.0  # points: the seed's "more than 10 %" bar; the paper's average gain is 14.65
LITTLE = 1.0  # points: "a photo of a" vs random init "differ little"
FULL = 16  # the shot count of the paper's 16-shot claims
READS_AS_WORD = 0.5  # a context vector reads as a word when d(nearest) < 0.5 * d(second nearest)


# ---- reading the tables ---------------------------------------------------------------------------

def _long(ev: Evidence) -> pd.DataFrame:
    return ev.table("coop_mean_std")


def _mean(long: pd.DataFrame, label: str, dataset: str, shots: int) -> float:
    """Mean accuracy over seeds of one curve point; zero-shot has no shots (its row is shots 0)."""
    k = 0 if label == ZS else shots
    row = long[(long["label"] == label) & (long["dataset"] == dataset) & (long["shots"] == k)]
    if row.empty:
        raise NotMeasured(f"no '{label}' at K={k} on {dataset} in this run (coop_mean_std)")
    return float(row["mean"].iloc[0])


def _at16(long: pd.DataFrame) -> int:
    """The paper's 16 shots; a run without them cannot test a 16-shot claim."""
    if FULL not in set(long["shots"]):
        raise NotMeasured(f"the run has no {FULL}-shot results (shots {sorted(set(long['shots']) - {0})})")
    return FULL


def _datasets(long: pd.DataFrame) -> list[str]:
    return [d for d in dict.fromkeys(long["dataset"]) if d != AVERAGE]


def _group_mean(long: pd.DataFrame, label: str, datasets: Iterable[str], shots: int) -> float:
    values = [_mean(long, label, d, shots) for d in datasets]
    return sum(values) / len(values)


def _far_near(ev: Evidence, long: pd.DataFrame) -> tuple[list[str], list[str]]:
    far = set(ev.params.get("far_datasets") or ())
    every = _datasets(long)
    return [d for d in every if d in far], [d for d in every if d not in far]


def _gain(long: pd.DataFrame, dataset: str, shots: int) -> float:
    return _mean(long, COOP, dataset, shots) - _mean(long, ZS, dataset, shots)


def _imagenet_analogue(long: pd.DataFrame) -> str:
    found = [d for d in IMAGENET_ANALOGUES if d in set(long["dataset"])]
    if not found:
        raise NotMeasured(f"no ImageNet analogue ({' or '.join(IMAGENET_ANALOGUES)}) among the run's datasets")
    return found[0]


# ---- few-shot curves vs zero-shot ------------------------------------------------------------------

def _beats_zero_shot_at(ev: Evidence, shots: int) -> Verdict:
    long = _long(ev)
    if shots not in set(long["shots"]):
        raise NotMeasured(f"the run has no {shots}-shot results (shots {sorted(set(long['shots']) - {0})})")
    coop, zs = _mean(long, COOP, AVERAGE, shots), _mean(long, ZS, AVERAGE, shots)
    return holds_if(coop > zs, {f"CoOp {shots}-shot": coop, "zero-shot": zs}, f"average over datasets: CoOp > "
                    f"zero-shot (gain {coop - zs:+.2f})", headline=coop - zs)


def check_1shot_beats_zero_shot(ev: Evidence) -> Verdict:
    return _beats_zero_shot_at(ev, 1)


def check_2shot_beats_zero_shot(ev: Evidence) -> Verdict:
    return _beats_zero_shot_at(ev, 2)


def check_16shot_beats_zero_shot(ev: Evidence) -> Verdict:
    return _beats_zero_shot_at(ev, _at16(_long(ev)))


def check_16shot_gain_large(ev: Evidence) -> Verdict:
    long = _long(ev)
    gain = _gain(long, AVERAGE, _at16(long))
    return holds_if(gain >= LARGE_GAIN, {"average gain": gain}, f"gain >= {LARGE_GAIN:g} points", headline=gain)


def check_16shot_gain_imagenet_analogue(ev: Evidence) -> Verdict:
    long = _long(ev)
    name, k = _imagenet_analogue(long), _at16(long)
    coop, zs = _mean(long, COOP, name, k), _mean(long, ZS, name, k)
    return holds_if(coop > zs, {f"CoOp on {name}": coop, f"zero-shot on {name}": zs},
                    f"{k} shots on {name}: CoOp > zero-shot", headline=coop - zs)


def check_16shot_beats_zero_shot_far(ev: Evidence) -> Verdict:
    long = _long(ev)
    far, _ = _far_near(ev, long)
    if not far:
        raise NotMeasured(f"none of far_datasets {list(ev.params.get('far_datasets') or [])} is in this run")
    k = _at16(long)
    gain = _group_mean(long, COOP, far, k) - _group_mean(long, ZS, far, k)
    return holds_if(gain > 0, {"far gain": gain}, f"{k} shots, mean over {far}: CoOp > zero-shot", headline=gain)


def check_16shot_gain_far_exceeds_near(ev: Evidence) -> Verdict:
    long = _long(ev)
    far, near = _far_near(ev, long)
    if not far or not near:
        raise NotMeasured(f"needs far and near datasets; far {far}, near {near}")
    k = _at16(long)
    g_far = sum(_gain(long, d, k) for d in far) / len(far)
    g_near = sum(_gain(long, d, k) for d in near) / len(near)
    return holds_if(g_far > g_near, {"far gain": g_far, "near gain": g_near},
                    f"{k} shots, mean gain over far {far} > over near {near}", headline=g_far - g_near)


def check_16shot_gain_per_dataset(ev: Evidence) -> Verdict:
    long = _long(ev)
    named = [d for d in GAIN_BARS if d in _datasets(long)]
    if not named:
        raise NotMeasured(f"none of the datasets the seed gives gains for ({', '.join(GAIN_BARS)}) is in this run")
    k = _at16(long)
    gains = {d: _gain(long, d, k) for d in named}
    below = [d for d in named if gains[d] <= GAIN_BARS[d]]
    return holds_if(not below, {f"{d} gain": g for d, g in gains.items()},
                    f"{k}-shot gain above the seed's bar on each ({', '.join(f'{d} {GAIN_BARS[d]:g}' for d in named)});"
                    f" below: {below or 'none'}")


def check_accuracy_rises_with_shots(ev: Evidence) -> Verdict:
    long = _long(ev)
    shots = sorted(set(long["shots"]) - {0})
    if len(shots) < 2:
        raise NotMeasured(f"needs two shot counts, the run has {shots}")
    acc = [_mean(long, COOP, AVERAGE, k) for k in shots]
    rising = all(b > a for a, b in zip(acc, acc[1:]))
    return holds_if(rising, {f"{k}-shot": a for k, a in zip(shots, acc)}, "average CoOp rises at every larger K",
                    headline=acc[-1] - acc[0])


# ---- baselines ---------------------------------------------------------------------------------------

def check_beats_linear_probe_every_shot(ev: Evidence) -> Verdict:
    long = _long(ev)
    shots = sorted(set(long["shots"]) - {0})
    if not shots:
        raise NotMeasured("the run has no few-shot results")
    gaps = {k: _mean(long, COOP, AVERAGE, k) - _mean(long, LP, AVERAGE, k) for k in shots}
    return holds_if(all(g > 0 for g in gaps.values()), {f"CoOp - LP at {k}": g for k, g in gaps.items()},
                    "average over datasets: CoOp > linear probe at every K", headline=min(gaps.values()))


def check_linear_probe_below_zero_shot_1shot(ev: Evidence) -> Verdict:
    long = _long(ev)
    lp, zs = _mean(long, LP, AVERAGE, 1), _mean(long, ZS, AVERAGE, 1)
    return holds_if(lp < zs, {"LP 1-shot": lp, "zero-shot": zs}, "average over datasets: LP < zero-shot",
                    headline=lp - zs)


def check_imagenet_linear_probe_below_zero_shot(ev: Evidence) -> Verdict:
    long = _long(ev)
    name, k = _imagenet_analogue(long), _at16(long)
    lp, zs = _mean(long, LP, name, k), _mean(long, ZS, name, k)
    return holds_if(lp < zs, {f"LP on {name}": lp, f"zero-shot on {name}": zs},
                    f"{k} shots on {name}: LP < zero-shot", headline=lp - zs)


# ---- prompt design -----------------------------------------------------------------------------------

def _pairs_present(long: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    labels = set(long["label"])
    found = [(a, b) for a, b in pairs if a in labels and b in labels]
    if not found:
        raise NotMeasured(f"none of the pairs {list(pairs)} was run")
    return found


def check_unified_wins_on_average(ev: Evidence) -> Verdict:
    long = _long(ev)
    pairs = _pairs_present(long, UC_CSC_PAIRS)
    shots = sorted(set(long["shots"]) - {0})
    uc = [_mean(long, a, AVERAGE, k) for a, _ in pairs for k in shots]
    csc = [_mean(long, b, AVERAGE, k) for _, b in pairs for k in shots]
    m_uc, m_csc = sum(uc) / len(uc), sum(csc) / len(csc)
    return holds_if(m_uc > m_csc, {"UC": m_uc, "CSC": m_csc},
                    f"average over datasets and K {shots}, pairs {[a for a, _ in pairs]} vs CSC: UC > CSC",
                    headline=m_uc - m_csc)


def check_csc_helps_specialised(ev: Evidence) -> Verdict:
    long = _long(ev)
    pairs = _pairs_present(long, UC_CSC_PAIRS)
    special = set(SPECIALISED) | set(ev.params.get("far_datasets") or ())
    sets = [d for d in _datasets(long) if d in special]
    if not sets:
        raise NotMeasured(f"no fine-grained or specialised set ({sorted(special)}) in this run")
    k = _at16(long)
    uc = sum(_group_mean(long, a, sets, k) for a, _ in pairs) / len(pairs)
    csc = sum(_group_mean(long, b, sets, k) for _, b in pairs) / len(pairs)
    return holds_if(csc > uc, {"CSC": csc, "UC": uc}, f"{k} shots, mean over {sets}: CSC > UC", headline=csc - uc)


def _context_lengths(long: pd.DataFrame, k: int) -> dict[int, str]:
    labels = {f"CoOp M{m} end": m for m in (4, 8, 16)}
    present = {m: lb for lb, m in labels.items() if ((long["label"] == lb) & (long["shots"] == k)).any()}
    if len(present) < 2:
        raise NotMeasured(f"needs two context lengths (M4/M8/M16 end) at {k} shots; the run has {sorted(present)}")
    return present


def check_no_single_best_context_length(ev: Evidence) -> Verdict:
    long = _long(ev)
    k, sets = _at16(long), _datasets(long)
    if len(sets) < 2:
        raise NotMeasured(f"needs two datasets to compare the best M; the run has {sets}")
    lengths = _context_lengths(long, k)
    best = {}
    for d in sets:
        acc = {m: _mean(long, lb, d, k) for m, lb in lengths.items()}
        best[d] = max(acc, key=acc.get)
    return holds_if(len(set(best.values())) > 1, {f"best M on {d}": m for d, m in best.items()},
                    f"{k} shots, M in {sorted(lengths)}: the best M differs between datasets")


def check_longer_context_helps_on_average(ev: Evidence) -> Verdict:
    long = _long(ev)
    k = _at16(long)
    lengths = _context_lengths(long, k)
    short, longest = min(lengths), max(lengths)
    a, b = _mean(long, lengths[longest], AVERAGE, k), _mean(long, lengths[short], AVERAGE, k)
    return holds_if(a > b, {f"M{longest}": a, f"M{short}": b}, f"{k} shots, average: M{longest} end > M{short} end",
                    headline=a - b)


def check_middle_gains_with_length(ev: Evidence) -> Verdict:
    long = _long(ev)
    k, labels = _at16(long), set(long["label"])
    short = [m for m in (4, 8) if {f"CoOp M{m} end", f"CoOp M{m} middle"} <= labels]
    if not short or not {"CoOp M16 end", "CoOp M16 middle"} <= labels:
        raise NotMeasured("needs the class token at the end and in the middle at M16 and at M4 or M8 "
                          "(add e.g. 'M4_middle@16' to variants)")
    m = short[0]
    d16 = _mean(long, "CoOp M16 middle", AVERAGE, k) - _mean(long, "CoOp M16 end", AVERAGE, k)
    d_short = _mean(long, f"CoOp M{m} middle", AVERAGE, k) - _mean(long, f"CoOp M{m} end", AVERAGE, k)
    return holds_if(d16 > d_short, {"M16 middle - end": d16, f"M{m} middle - end": d_short},
                    f"{k} shots, average: the middle position gains more at M16 than at M{m}", headline=d16 - d_short)


def check_init_differs_little(ev: Evidence) -> Verdict:
    long = _long(ev)
    k = _at16(long)
    photo, rand = _mean(long, "CoOp M4 end 'a photo of a'", AVERAGE, k), _mean(long, "CoOp M4 end", AVERAGE, k)
    diff = photo - rand
    return holds_if(abs(diff) <= LITTLE, {"'a photo of a'": photo, "random": rand},
                    f"{k} shots, average, M4 end: |difference| <= {LITTLE:g} point", headline=diff)


# ---- domain generalization ---------------------------------------------------------------------------

def _dg_means(ev: Evidence) -> tuple[pd.Series, pd.Series, list[str]]:
    """Mean over seeds on the source test set and over the shifted targets, per method label."""
    dg = ev.table("domain_generalization")
    if dg.empty:
        raise NotMeasured("no domain-generalization rows in this run")
    dg = dg.assign(label=dg.apply(method_label, axis=1))
    per = dg.groupby(["label", "target"])["accuracy"].mean().unstack("target")
    source = str(dg["source"].iloc[0])
    targets = [t for t in dict.fromkeys(dg["target"]) if t != source]
    if not targets:
        raise NotMeasured(f"no shifted target beside the source {source!r} (dg_targets is empty)")
    return per[source], per[targets].mean(axis=1), targets


def _dg_label(series: pd.Series, label: str) -> float:
    if label not in series.index or pd.isna(series[label]):
        raise NotMeasured(f"no '{label}' in the domain-generalization table")
    return float(series[label])


def _more_robust_than(ev: Evidence, other: str) -> Verdict:
    _, target, names = _dg_means(ev)
    coop, base = _dg_label(target, COOP), _dg_label(target, other)
    return holds_if(coop > base, {"CoOp on targets": coop, f"{other} on targets": base},
                    f"mean accuracy over shifted targets {names}: CoOp > {other}", headline=coop - base)


def check_dg_beats_linear_probe(ev: Evidence) -> Verdict:
    return _more_robust_than(ev, LP)


def check_dg_beats_zero_shot(ev: Evidence) -> Verdict:
    return _more_robust_than(ev, ZS)


def check_dg_context_length_tradeoff(ev: Evidence) -> Verdict:
    source, target, _ = _dg_means(ev)
    s16, s4 = _dg_label(source, COOP), _dg_label(source, "CoOp M4 end")
    t16, t4 = _dg_label(target, COOP), _dg_label(target, "CoOp M4 end")
    return holds_if(s16 > s4 and t4 > t16, {"M16 source": s16, "M4 source": s4, "M16 targets": t16, "M4 targets": t4},
                    "M16 > M4 on the source test set and M4 > M16 on the shifted targets")


# ---- interpretation ----------------------------------------------------------------------------------

def check_vectors_not_words(ev: Evidence) -> Verdict:
    w = ev.table("nearest_words")
    if w.empty or w["rank"].max() < 2:
        raise NotMeasured("needs the two nearest words of each context vector (words_k >= 2)")
    d = w[w["rank"] <= 2].pivot_table(index=["class_index", "ctx_index"], columns="rank", values="distance")
    ratio = d[1] / d[2]
    share = float((ratio < READS_AS_WORD).mean())
    return holds_if(share < 0.5, {"share reading as a word": share, "median d1/d2": float(ratio.median()),
                                  "vectors": len(ratio)},
                    f"a vector reads as a word when d(nearest) < {READS_AS_WORD:g} x d(second); holds when fewer than "
                    f"half do", headline=share)


def _claim(finding: str, where: str, statement: str, check, paper_value=None) -> Claim:
    return Claim(f"coop.{finding}", PAPER, where, statement, check, paper_value)


_FIG3 = f"{SEED} (Fig. 3 discussion); papers/coop.md §10.2-10.3"
CLAIMS: list[Claim] = [
    _claim("1shot_beats_zero_shot", f"IJCV abstract; {_FIG3}",
           "With one shot per class, CoOp (M16 end) beats the hand-crafted zero-shot prompt on average.",
           check_1shot_beats_zero_shot, 0.82),
    _claim("2shot_beats_zero_shot", _FIG3,
           "With two shots per class, CoOp clearly beats the hand-crafted zero-shot prompt on average.",
           check_2shot_beats_zero_shot, 3.55),
    _claim("16shot_beats_zero_shot", _FIG3, "At 16 shots CoOp beats zero-shot CLIP on average (gain about 15 points).",
           check_16shot_beats_zero_shot, 14.65),
    _claim("16shot_gain_large", _FIG3,
           f"At 16 shots the average gain over zero-shot is large: at least {LARGE_GAIN:g} points.",
           check_16shot_gain_large, 14.65),
    _claim("16shot_gain_imagenet_analogue", _FIG3,
           "At 16 shots CoOp beats zero-shot on ImageNet (the world's analogue: objects), by 4.77 points in the paper.",
           check_16shot_gain_imagenet_analogue, 4.77),
    _claim("16shot_beats_zero_shot_far", _FIG3,
           "At 16 shots CoOp beats zero-shot on the specialised sets far from CLIP's training data (far_datasets).",
           check_16shot_beats_zero_shot_far, 27.07),
    _claim("16shot_gain_far_exceeds_near", _FIG3,
           "The 16-shot gain is larger on the specialised (far) sets than on the others (EuroSAT +46, DTD +21).",
           check_16shot_gain_far_exceeds_near, 17.07),
    _claim("16shot_gain_per_dataset", _FIG3,
           "16-shot gains: EuroSAT > 45, DTD > 20, fine-grained and scene/action sets > 10 points.",
           check_16shot_gain_per_dataset, "EuroSAT 45.97, DTD 21.26, Flowers 28.37, Cars 17.75, Aircraft 13.98, "
           "SUN 10.74, UCF 14.25 [M]"),
    _claim("accuracy_rises_with_shots", f"{_FIG3} (average panel)",
           "CoOp's average accuracy rises with every doubling of the shots.",
           check_accuracy_rises_with_shots, "59.59, 62.32, 66.77, 69.89, 73.42 at 1-16 shots [M]"),
    _claim("beats_linear_probe_every_shot", _FIG3,
           "CoOp beats the linear probe on average at every shot count.",
           check_beats_linear_probe_every_shot, "CoOp above LP at every K (Fig. 3; LP curves not recalled)"),
    _claim("linear_probe_below_zero_shot_1shot", "Fig. 3; papers/coop.md §10.3 [M], §12 (#85)",
           "With one shot the linear probe is below zero-shot CLIP on average (it overtakes only with more shots).",
           check_linear_probe_below_zero_shot_1shot, "ImageNet LP 1-shot 22.17 vs ZS 58.18 [M]"),
    _claim("imagenet_linear_probe_below_zero_shot", "Table 1 (source column); papers/coop.md §10.1 [I], §12 (#85)",
           "At 16 shots the linear probe stays below zero-shot on ImageNet (the world's analogue: objects).",
           check_imagenet_linear_probe_below_zero_shot, -2.31),
    _claim("unified_wins_on_average", f"{SEED} (UC vs CSC); papers/coop.md §10.3",
           "Unified context beats class-specific context on average over datasets and shot counts.",
           check_unified_wins_on_average, "UC above CSC on the average panel (Fig. 3)"),
    _claim("csc_helps_specialised", f"{SEED} (UC vs CSC); papers/coop.md §10.3",
           "At 16 shots class-specific context beats unified context on fine-grained and specialised sets.",
           check_csc_helps_specialised, "CSC better on Cars, Flowers, Aircraft, DTD, EuroSAT at 16 shots"),
    _claim("no_single_best_context_length", f"{SEED} (context length); papers/coop.md §10.3",
           "No context length (M = 4, 8, 16) is the best on every dataset.",
           check_no_single_best_context_length, "no single best M"),
    _claim("longer_context_helps_on_average", f"{SEED} (context length); papers/coop.md §10.3",
           "More context tokens usually help: at 16 shots M16 beats M4 on average.",
           check_longer_context_helps_on_average),
    _claim("middle_gains_with_length", f"{SEED} (context length); papers/coop.md §10.3",
           "The class token in the middle helps more with long context (M16) than with short context.",
           check_middle_gains_with_length),
    _claim("init_differs_little", f"{SEED} (initialization); papers/coop.md §10.3",
           f"'a photo of a' and random initialization differ little (within {LITTLE:g} point on average, "
           f"M4, 16 shots).",
           check_init_differs_little, "little difference"),
    _claim("dg_beats_zero_shot", f"Table 1; {SEED} (generalization); papers/coop.md §10.3",
           "Trained on the source (ImageNet / objects), CoOp is more accurate than zero-shot CLIP on shifted targets.",
           check_dg_beats_zero_shot, "CoOp above zero-shot on ImageNet-V2/Sketch/A/R"),
    _claim("dg_beats_linear_probe", f"Table 1; {SEED} (generalization); papers/coop.md §10.3",
           "Trained on the source, CoOp is more accurate than the linear probe on shifted targets.",
           check_dg_beats_linear_probe, "CoOp above the linear probe on ImageNet-V2/Sketch/A/R"),
    _claim("dg_context_length_tradeoff", f"Table 1; {SEED} (context length); papers/coop.md §10.3",
           "Context length trades accuracy for robustness: M16 is better in-domain, M4 on shifted targets.",
           check_dg_context_length_tradeoff, "trade-off between performance and robustness to shift"),
    _claim("vectors_not_words", f"{SEED} (interpretation); papers/coop.md §9",
           "The learned context vectors do not read as words: most lie between vocabulary embeddings.",
           check_vectors_not_words, "few task-related nearest words (Food101 'enjoyed', Pets 'fluffy', 'paw')"),
]
