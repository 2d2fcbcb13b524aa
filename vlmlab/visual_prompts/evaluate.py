"""Notebook 04's experiment: VP+TP vs TP and linear probe per dataset, the gap, their correlation.

    run = run_visual_prompting(P, bundle)   per dataset: TP (zero-shot), LP, VP+TP per prompter/seed,
                                            optional vision-only rows, histories, learned prompts
    gaps = measure_gaps(P, bundle)          per dataset: FID and LPIPS-style gap to the reference set
    table = assemble(run.table, gaps)       the columns of tables/visual_prompting.csv
    corr = correlation(table, "padding")    Pearson r, Spearman rho, Pearson p of gain vs each gap
Accuracies and gains are in percentage points; gain = vp_acc - zero_shot_acc on the same test images.
Methods: ``train.py`` (prompt training), ``gap.py`` (distances), ``data.py`` (splits).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.stats
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from vlmlab.checkpoints import checkpoint_path
from vlmlab.features import FeatureCache
from vlmlab.metrics import accuracy
from vlmlab.models.bundle import ClipBundle
from vlmlab.probe import check_features, fit_linear_probe
from vlmlab.runcache import closure_fingerprint, rows_to_tensor, tensor_digest, tensor_to_rows
from vlmlab.runtime import get_logger
from vlmlab.visual_prompts.data import load_reference, load_splits
from vlmlab.visual_prompts.gap import EncoderFeatures, InceptionFeatures, LpipsNet, fid, gap_features, lpips
from vlmlab.visual_prompts.train import (VPConfig, VPResult, clip_head, encode, eval_view, model_inputs, new_prompter,
                                         predict, train_prompt, vision_head)

__all__ = ["COLUMNS", "CORRELATION_COLUMNS", "LPIPS_FORMS", "VPRun", "vp_config", "run_visual_prompting",
           "measure_gaps", "assemble", "correlation", "gain_summary"]

log = get_logger("vlmlab.visual_prompts")
COLUMNS = ["dataset", "prompter", "zero_shot_acc", "vp_acc", "linear_probe_acc", "gain", "fid", "lpips"]
CORRELATION_COLUMNS = ["gap_metric", "pearson_r", "spearman_r", "p_value", "n_datasets"]
# What the ``lpips`` column holds (``gap.py`` defines both): "energy" = cross - (within + within_ref) / 2,
# vlmlab's default; "cross" = the plain mean over cross-dataset pairs, the protocol papers/visual_prompting.md
# §8 proposes (the paper publishes none). docs/fidelity.md, departures: visual prompting gap.
LPIPS_FORMS = ("energy", "cross")


@dataclass
class VPRun:
    """Results of ``run_visual_prompting``.

    Attributes:
        table: one row per (dataset, prompter, seed): accuracies, gain, sizes, prompt parameters.
        history: per-epoch loss / train accuracy of every training run.
        prompts: ``{dataset: (prompt (3, S, S), example test input (3, S, S))}`` for the first
            prompter and seed, in normalised units (``figures.prompt_images`` shows them).
        vision_only: CLIP and vision-only rows side by side (empty when skipped).
    """

    table: pd.DataFrame
    history: pd.DataFrame
    prompts: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    vision_only: pd.DataFrame = field(default_factory=pd.DataFrame)


def gap_sample(test, n: int | None, seed: int):
    """The test images a gap is measured on: all of them, or a seeded uniform sample of ``n`` (in index order).

    Not the first ``n``: folder and CoOp split lists run class by class, so a prefix would hold only the
    first classes (RESISC45's first 5,000 of 6,300 test images cover 36 of its 45); the ImageNet reference is
    a seeded sample too (``load_reference``)."""
    if n is None or n >= len(test):
        return test
    return test.subset(np.sort(np.random.default_rng(seed).permutation(len(test))[:n]))


def vp_config(P, prompter: str, seed: int) -> VPConfig:
    """``VPConfig`` from notebook parameters (``prompt_sizes``, ``epochs``, ``lr`` ...)."""
    if prompter not in P.prompt_sizes:
        raise KeyError(f"prompt_sizes has no entry for prompter {prompter!r}; add it, e.g. {{{prompter!r}: 30}}")
    extra = dict(P.get("vp") or {})                                  # other VPConfig fields (docs/fidelity.md)
    unknown = sorted(set(extra) - set(VPConfig.__dataclass_fields__))
    if unknown:
        raise KeyError(f"vp: {unknown} are not VPConfig fields; allowed: {sorted(VPConfig.__dataclass_fields__)}")
    return VPConfig(method=prompter, prompt_size=int(P.prompt_sizes[prompter]), epochs=P.epochs,
                    batch_size=P.batch_size, lr=P.lr, warmup=P.warmup, init=P.init, select=P.select, seed=seed,
                    num_workers=P.num_workers, eval_precision=P.eval_precision, **extra)


def _listed(selection, spec: str, name: str) -> bool:
    """An empty selection means every dataset; entries may be specs or dataset names."""
    return not selection or spec in selection or name in selection


def _source_probe(P, bundle: ClipBundle):
    """The vision-only model's head: a probe fitted on the source task (the paper: ImageNet classifiers). It reads
    unit features whatever ``lp_features`` says: it is the stand-in for a classifier, not the LP baseline, and
    its prompts are trained through ``predict``'s unit features."""
    src = load_splits(P.vision_only_source, shots=P.vision_only_shots, n_val=P.n_val, n_test=None, seed=P.seed,
                      root=P.data_root)
    x_tr, y_tr = encode(bundle, model_inputs(bundle, src.train), desc="source features")
    x_va, y_va = encode(bundle, model_inputs(bundle, src.val), desc="source features")
    return fit_linear_probe(x_tr, y_tr, x_va, y_va, n_classes=len(src.classnames), seed=P.seed, dtype=P.lp_dtype)


def inputs_digest(data) -> str | None:
    """What a prompt training's key holds of its inputs (``model_inputs``): the digest of in-memory tensors
    (world sets), the dataset's key for files read through ``bundle.preprocess`` (``ImageDataset.key``: the
    files' relative paths and labels; a torchvision set's name, split and items), else None (not keyed)."""
    if isinstance(data, TensorDataset):
        return tensor_digest(*data.tensors)
    key = getattr(data, "key", None)
    return None if key is None else f"files:{key}"


def _features(bundle: ClipBundle, data, cache: FeatureCache | None, desc: str,
              kind: str = "normalized") -> tuple[Tensor, Tensor]:
    """``encode`` without a prompt (``kind``: "normalized" unit features, or "raw", the encoder's output), through
    ``cache`` when the inputs are keyed (``inputs_digest``: in-memory tensors, or files with a dataset key, so the
    paper profile's three prompter cases of a dataset encode its splits once)."""
    normalize = check_features(kind) == "normalized"
    inputs = inputs_digest(data) if cache is not None else None
    if inputs is None:
        return encode(bundle, data, desc=desc, normalize=normalize)
    key = {"kind": "vp-features", "model": bundle.identity, "inputs": inputs}
    if not normalize:
        key["features"] = "raw"          # unit features keep the key they had before raw ones existed
    if (hit := cache.get(key)) is None:
        hit = dict(zip(("feats", "labels"), encode(bundle, data, desc=desc, normalize=normalize)))
        cache.put(key, hit)
    return hit["feats"], hit["labels"]


def _linear_probe_acc(P, bundle, train_in, val_in, test_in, n_classes: int, cache=None) -> float:
    """The LP baseline: lpclip's probe on ``P.lp_features`` ("raw": the encoder's output, lpclip's and CLIP's
    linear-probe example; "normalized": unit embeddings, vlmlab until fidelity row #17)."""
    x_tr, y_tr = _features(bundle, train_in, cache, "probe features", P.lp_features)
    x_va, y_va = _features(bundle, val_in, cache, "probe features", P.lp_features)
    x_te, y_te = _features(bundle, test_in, cache, "probe features", P.lp_features)
    probe = fit_linear_probe(x_tr, y_tr, x_va, y_va, n_classes=n_classes, seed=P.seed, dtype=P.lp_dtype)
    return accuracy(probe.logits(x_te), y_te)


HISTORY = ("epoch", "step", "lr", "loss", "train_acc", "val_acc", "test_acc")


def vp_run_key(bundle: ClipBundle, head, cfg: VPConfig, train_in, val_in, test_in=None) -> dict | None:
    """Cache key of one prompt training (``vlmlab.runcache``): ``None`` unless every input is keyed
    (``inputs_digest``). ``test_in`` enters the key only with ``select="test"`` (the only setting whose
    training reads it)."""
    test_in = test_in if cfg.select == "test" else None
    train, val, test = (None if d is None else inputs_digest(d) for d in (train_in, val_in, test_in))
    if train is None or (val_in is not None and val is None) or (test_in is not None and test is None):
        return None
    key = {"kind": "vp-run", "model": bundle.identity, "cfg": asdict(cfg),
           "head": tensor_digest(*head.state_dict().values()),
           "train": train, "val": val if val_in is not None else tensor_digest(None),
           "code": closure_fingerprint("vlmlab.visual_prompts.train")}
    if test_in is not None:
        key["test"] = test
    return key


def train_prompt_cached(bundle: ClipBundle, head, train_in, cfg: VPConfig, val_in=None,
                        cache: FeatureCache | None = None, desc: str = "visual prompt", eval_head=None,
                        test_in=None) -> VPResult:
    """``train_prompt``, or the result stored in ``cache`` under ``vp_run_key`` (the trained prompt's
    weights, history, selected epoch and, for random patches, the location generator's state after
    training, so the test draws repeat); a trained result is stored there."""
    key = vp_run_key(bundle, head, cfg, train_in, val_in, test_in) if cache is not None else None
    if key is not None and (hit := cache.get(key)) is not None:
        prompter = new_prompter(bundle, cfg)
        prompter.load_state_dict({k[2:]: v for k, v in hit.items() if k.startswith("p.")})
        if "generator" in hit:                       # random patches: the location stream continues from there
            prompter.generator.set_state(hit["generator"])
        history = tensor_to_rows(hit["history"], HISTORY, ints=("epoch", "step"))
        return VPResult(prompter, history, int(hit["best_epoch"]))
    ckpt = checkpoint_path(cache, key) if key is not None else None
    res = train_prompt(bundle, head, train_in, cfg, val=val_in, desc=desc, eval_head=eval_head, test=test_in,
                       checkpoint=ckpt)
    hist = rows_to_tensor(res.history, HISTORY) if key is not None else None     # None: not restorable whole
    if hist is not None:
        gen = getattr(res.prompter, "generator", None)
        cache.put(key, {**{f"p.{k}": v for k, v in res.prompter.state_dict().items()}, "history": hist,
                        "best_epoch": torch.tensor(res.best_epoch),
                        **({"generator": gen.get_state()} if gen is not None else {})})
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return res


def _train_and_score(P, bundle, head, prompter, seed, train_in, val_in, test_in, tag: dict, cache=None,
                     eval_head=None):
    """Train one prompt through ``head`` and score it on ``test_in`` through ``eval_head`` (default ``head``) on
    ``eval_view(bundle, cfg.eval_precision)``, in passes of ``cfg.eval_batch``. With ``select="test"`` the score
    is the best of the per-epoch test accuracies, the number the reference reports (``best_acc1``)."""
    cfg = vp_config(P, prompter, seed)
    eval_head = head if eval_head is None else eval_head
    res = train_prompt_cached(bundle, head, train_in, cfg, val_in, cache,
                              desc=f"VP {tag['dataset']}/{prompter}/s{seed}", eval_head=eval_head, test_in=test_in)
    if cfg.select == "test":
        vp_acc = res.selected_test_acc
    else:
        vp_acc = accuracy(*predict(eval_view(bundle, cfg.eval_precision), eval_head, test_in, res.prompter,
                                   cfg.eval_batch))
    hist = [dict(tag, prompter=prompter, seed=seed, **row) for row in res.history]
    return res, vp_acc, hist


def run_visual_prompting(P, bundle: ClipBundle, cache: FeatureCache | None = None) -> VPRun:
    """Every dataset x prompter x seed of the notebook parameters ``P`` (see the notebook).

    ``cache``: trained prompts are kept there and a rerun with the same inputs and training code loads
    them (``train_prompt_cached``)."""
    if P.linear_probe:
        check_features(P.lp_features, "lp_features")               # before any training
    rows, hist, prompts, vo_rows = [], [], {}, []
    probe_src = _source_probe(P, bundle) if P.vision_only_source else None
    for spec in P.datasets:
        sp = load_splits(spec, shots=P.shots, n_val=P.n_val, n_test=P.n_test, seed=P.seed, root=P.data_root)
        head = clip_head(bundle, sp.classnames, P.template or sp.template)
        ev = eval_view(bundle, P.eval_precision)
        eval_head = head if ev is bundle else clip_head(ev, sp.classnames, P.template or sp.template)
        train_in, val_in, test_in = (model_inputs(bundle, d) for d in (sp.train, sp.val, sp.test))
        zs_acc = accuracy(*predict(ev, eval_head, test_in))
        lp_acc = _linear_probe_acc(P, bundle, train_in, val_in, test_in, len(sp.classnames), cache) if P.linear_probe \
            else float("nan")
        kinds = [k for k in P.prompters if k == P.prompters[0] or _listed(P.compare_on, spec, sp.name)]
        for prompter in kinds:
            for seed in P.seeds:
                res, vp_acc, h = _train_and_score(P, bundle, head, prompter, seed, train_in, val_in, test_in,
                                                  {"dataset": sp.name, "model": "clip"}, cache, eval_head)
                hist += h
                rows.append({"dataset": sp.name, "prompter": prompter, "seed": seed, "zero_shot_acc": zs_acc,
                             "vp_acc": vp_acc, "linear_probe_acc": lp_acc, "gain": vp_acc - zs_acc,
                             "train_acc_first_epoch": h[0]["train_acc"], "train_acc_last_epoch": h[-1]["train_acc"],
                             "n_train": len(train_in), "n_test": len(test_in), "n_classes": len(sp.classnames),
                             "n_params": res.prompter.n_params, "best_epoch": res.best_epoch})
                if prompter == P.prompters[0] and seed == P.seeds[0]:
                    prompts[sp.name] = (res.prompter.prompt().detach().cpu()[0], test_in[0][0].cpu())
        if probe_src is not None and _listed(P.vision_only_datasets, spec, sp.name):
            vo_rows += _vision_only(P, bundle, probe_src, sp, train_in, val_in, test_in, rows, hist, cache)
    return VPRun(pd.DataFrame(rows), pd.DataFrame(hist), prompts, pd.DataFrame(vo_rows))


def _vision_only(P, bundle, probe_src, sp, train_in, val_in, test_in, rows, hist, cache=None) -> list[dict]:
    c = len(sp.classnames)
    if c > probe_src.n_classes:
        log.warning("vision-only row skipped for %s: %d classes > %d source-head outputs (hard-coded mapping)",
                    sp.name, c, probe_src.n_classes)
        return []
    head = vision_head(probe_src, c, bundle.device)
    base = accuracy(*predict(eval_view(bundle, P.eval_precision), head, test_in))
    prompter, out = P.prompters[0], []
    clip = [r for r in rows if r["dataset"] == sp.name and r["prompter"] == prompter]
    for seed in P.seeds:
        _, vp_acc, h = _train_and_score(P, bundle, head, prompter, seed, train_in, val_in, test_in,
                                        {"dataset": sp.name, "model": "vision_only"}, cache)
        hist += h
        out.append({"dataset": sp.name, "model": "vision_only", "prompter": prompter, "seed": seed,
                    "base_acc": base, "vp_acc": vp_acc, "gain": vp_acc - base})
    out += [{"dataset": sp.name, "model": "clip", "prompter": prompter, "seed": r["seed"],
             "base_acc": r["zero_shot_acc"], "vp_acc": r["vp_acc"], "gain": r["gain"]} for r in clip]
    return out


def _gap_extractors(P, bundle):
    if P.gap_extractor == "encoder":
        ex = EncoderFeatures(bundle)
        return ex, ex
    if P.gap_extractor == "paper":
        torch_home = P.torch_home or None
        need_fid, need_lpips = "fid" in P.gap_metrics, "lpips" in P.gap_metrics
        return (InceptionFeatures(torch_home, bundle.device) if need_fid else None,
                LpipsNet("alex", torch_home, bundle.device) if need_lpips else None)
    raise ValueError(f"gap_extractor={P.gap_extractor!r}; use 'encoder' (the project's image encoder) or "
                     f"'paper' (Inception FID + lpips AlexNet, local weights)")


def measure_gaps(P, bundle: ClipBundle) -> pd.DataFrame:
    """FID and LPIPS-style gap between each dataset's test images and the reference set.

    The ``lpips`` column is ``P.lpips_form``'s reading of the set-level distance (``LPIPS_FORMS``); the
    columns ``lpips_cross``, ``lpips_within`` and ``lpips_within_ref`` always hold the three terms.
    """
    unknown = set(P.gap_metrics) - {"fid", "lpips"}
    if unknown:
        raise ValueError(f"gap_metrics has unknown entries {sorted(unknown)}; use 'fid' and/or 'lpips'")
    if P.lpips_form not in LPIPS_FORMS:
        raise ValueError(f"lpips_form={P.lpips_form!r}; use 'energy' (cross - mean within, 0 for identical sets) "
                         f"or 'cross' (the plain cross-pair mean of papers/visual_prompting.md §8)")
    fid_ex, lp_ex = _gap_extractors(P, bundle)
    size = P.gap_image_size
    ref = load_reference(P.reference, P.n_reference, seed=P.seed, root=P.data_root)
    ref_fid = gap_features(ref, fid_ex, size) if fid_ex is not None else None
    ref_lp = ref_fid if lp_ex is fid_ex else (gap_features(ref, lp_ex, size) if lp_ex is not None else None)
    rows = []
    for spec in P.datasets:
        sp = load_splits(spec, shots=P.shots, n_val=P.n_val, n_test=P.n_test, seed=P.seed, root=P.data_root)
        test = gap_sample(sp.test, P.n_gap, P.seed)
        row = {"dataset": sp.name, "n_images": len(test),
               "n_reference": len(ref_fid if ref_fid is not None else ref_lp), "extractor": P.gap_extractor}
        feats = gap_features(test, fid_ex or lp_ex, size)
        if fid_ex is not None:
            row["fid"] = fid(feats, ref_fid, fid_ex)
        if lp_ex is not None:
            lp_feats = feats if lp_ex is fid_ex or fid_ex is None else gap_features(test, lp_ex, size)
            g = lpips(lp_feats, ref_lp, lp_ex, n_pairs=P.lpips_pairs, seed=P.seed)
            row.update(lpips=g.distance if P.lpips_form == "energy" else g.cross, lpips_cross=g.cross,
                       lpips_within=g.within_a, lpips_within_ref=g.within_b)
        rows.append(row)
    return pd.DataFrame(rows)


def assemble(vp_table: pd.DataFrame, gaps: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds, joined with the gaps: exactly ``COLUMNS`` (NaN for a gap not measured)."""
    acc = ["zero_shot_acc", "vp_acc", "linear_probe_acc", "gain"]
    mean = vp_table.groupby(["dataset", "prompter"], sort=False)[acc].mean().reset_index()
    out = mean.merge(gaps.reindex(columns=["dataset", "fid", "lpips"]), on="dataset", how="left")
    return out[COLUMNS]


def correlation(table: pd.DataFrame, prompter: str = "padding", metrics=("fid", "lpips")) -> pd.DataFrame:
    """Gain vs gap across datasets for one prompter: Pearson r (two-sided p) and Spearman rho."""
    sub = table[table["prompter"] == prompter]
    rows = []
    for m in metrics:
        d = sub[["gain", m]].dropna() if m in sub else sub.iloc[:0]
        ok = len(d) >= 3 and d[m].nunique() > 1 and d["gain"].nunique() > 1
        r, p = scipy.stats.pearsonr(d[m], d["gain"]) if ok else (np.nan, np.nan)
        rho = scipy.stats.spearmanr(d[m], d["gain"])[0] if ok else np.nan
        rows.append({"gap_metric": m, "pearson_r": float(r), "spearman_r": float(rho), "p_value": float(p),
                     "n_datasets": len(d)})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def gain_summary(table: pd.DataFrame, groups: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean accuracies and gain per prompter, overall and per dataset group (e.g. world near / shift / far).

    Args:
        table: ``assemble``'s table.
        groups: dataset -> group name; datasets not in it are summarised under "all" only.
    """
    acc = ["zero_shot_acc", "vp_acc", "linear_probe_acc", "gain"]
    frames = [table.assign(group="all")]
    if groups:
        frames.append(table.assign(group=table["dataset"].map(groups)).dropna(subset=["group"]))
    both = pd.concat(frames, ignore_index=True)
    out = both.groupby(["prompter", "group"], sort=False)[acc].mean()
    out["n_datasets"] = both.groupby(["prompter", "group"], sort=False).size()
    return out.reset_index()
