"""Zero-shot CLIP under corruption and domain shift: UniInfo poster Table 1 (seed 000).

For each condition (clean, ImageNet-C corruption x severity, domain-shift set) and the image
embeddings z_i (unit norm) with class text embeddings t_c (unit norm):
    accuracy       top-1 of argmax_c z_i . t_c, for three prompt kinds (plain template,
                   prompt ensemble, corruption-aware template "a {adjective} photo of a {}.")
    entropy        mean_i H(softmax(z_i . T^T / tau)), nats (tau = 1/logit_scale unless given)
    uniformity     poster metric: mean over pairs i != j of exp(-t ||z_i - z_j||^2), t = 1
                   (variants through ``UniformityOptions``; ../shared/papers/uniinfo_tta.md §3)
    modality gap   EMD between the uniform measure on a seeded subsample of z and the uniform
                   measure on the class text embeddings (plain prompt), Euclidean ground cost
References: Adachi et al., arXiv:2505.12912 (UniInfo); Wang & Isola, arXiv:2005.10242
(uniformity); Liang et al., arXiv:2203.02053 (modality gap). The poster does not define its EMD
text side, N or cost exactly (§10 of the reference). Of our choices, N and the subsample's seed are
parameters (``emd_samples``, ``emd_seed``); the Euclidean cost, the uniform weights and the plain
prompt's class embeddings as the text side are fixed. All are written into the table notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from scipy import stats

from vlmlab.data.sources import corrupted, load_source
from vlmlab.features import Features, FeatureCache, extract, extract_arrays
from vlmlab.metrics import accuracy, modality_gap_emd, softmax_entropy_from_logits, uniformity_loss, uniformity_per_batch
from vlmlab.prompts import zero_shot_weights
from vlmlab.runtime import get_logger, progress

log = get_logger(__name__)
METRIC_COLUMNS = ["acc_plain", "acc_ensemble", "acc_corruption_prompt", "entropy", "uniformity", "modality_gap_emd"]
COLUMNS = ["condition", "severity", "n_images"] + METRIC_COLUMNS


@dataclass(frozen=True)
class UniformityOptions:
    """Which uniformity: poster (t=1, no log, distinct pairs, whole set) by default."""

    t: float = 1.0
    log: bool = False
    include_self: bool = False
    batch_size: int | None = None  # None = whole set; B = mean over consecutive batches of B

    def __call__(self, z: torch.Tensor) -> float:
        kw = {"t": self.t, "log": self.log, "include_self": self.include_self}
        if self.batch_size:
            n = (len(z) // self.batch_size) * self.batch_size or len(z)
            return float(uniformity_per_batch(z[:n], self.batch_size, **kw))
        return float(uniformity_loss(z, **kw))


@dataclass
class Result:
    """Table rows plus the features needed for the embedding plots."""

    table: pd.DataFrame
    feats: dict[tuple[str, int], Features] = field(default_factory=dict)
    text: torch.Tensor | None = None  # (C, D) plain-prompt class embeddings
    notes: dict = field(default_factory=dict)


def encode(bundle, dataset, cache, batch_size: int = 256) -> Features:
    """Features of a world set (in-memory arrays) or an on-disk dataset, through the shared cache."""
    if hasattr(dataset, "images"):
        return extract_arrays(bundle, dataset.images, dataset.labels, dataset.key, cache=cache, batch_size=batch_size)
    return extract(bundle, dataset, cache=cache, batch_size=batch_size)


def condition_metrics(f: Features, weights: dict[str, torch.Tensor | None], scale: float,
                      uniformity: UniformityOptions, emd_samples: int, emd_seed: int,
                      class_index: torch.Tensor | None = None) -> dict:
    """All metrics of one condition. ``class_index`` restricts 1000-way heads (ImageNet-A/R)."""
    z, y = f.feats, f.labels
    out = {}
    for kind, w in weights.items():
        if w is None:
            out[f"acc_{kind}"] = float("nan")
            continue
        w = w[class_index] if class_index is not None else w
        out[f"acc_{kind}"] = accuracy(z @ w.T.to(z), y)
    w_plain = weights["plain"][class_index] if class_index is not None else weights["plain"]
    logits = scale * z @ w_plain.T.to(z)
    out["entropy"] = float(softmax_entropy_from_logits(logits).mean())
    out["uniformity"] = uniformity(z)
    g = torch.Generator().manual_seed(emd_seed)
    idx = torch.randperm(len(z), generator=g)[: min(emd_samples, len(z))]
    out["modality_gap_emd"] = modality_gap_emd(z[idx].double(), w_plain.double().cpu())
    return out


def run(bundle, *, source: str, corruptions: list[str], severities: list[int], shift_sources: list[str],
        n_images: int, template: str, ensemble: list[str], corruption_prompts: dict[str, str],
        temperature: float | None = None, uniformity: UniformityOptions = UniformityOptions(),
        emd_samples: int = 1000, emd_seed: int = 0, seed: int = 0, data_root=None, text_mode: str = "clip",
        batch_size: int = 256, cache: FeatureCache | None = None, keep_feats: tuple = (),
        classnames: str | None = None) -> Result:
    """Compute Table 1 for ``source`` under every corruption x severity and every shift set.

    Args:
        bundle: the model. source: clean data (``vlmlab.data.sources``).
        corruptions, severities: ImageNet-C grid. shift_sources: domain-shift sets with the same classes
            (or a 200-class ImageNet subset with ``imagenet_indices``).
        n_images: images per condition (None = all). template: plain prompt. ensemble: ensemble templates.
        corruption_prompts: corruption -> template naming it ("a foggy photo of a {}.").
        temperature: softmax temperature for the entropy (None = 1 / bundle.logit_scale).
        keep_feats: (condition, severity) pairs whose features are returned for plots.
        classnames: ImageNet class names (``vlmlab.data.load_source``): None = ``classnames.txt``, ``"synsets"`` =
            the WordNet synonym lists of the UniInfo code.
    """
    missing = [c for c in corruptions if c not in corruption_prompts]
    if missing:
        raise KeyError(f"corruption_prompts has no wording for {missing}; add e.g. {missing[0]}: 'a ... photo of a {{}}.'")
    clean = load_source(source, root=data_root, n=n_images, seed=seed, classnames=classnames)
    names = clean.classnames
    plain = zero_shot_weights(bundle, names, template, mode=text_mode).cpu()
    ens = zero_shot_weights(bundle, names, ensemble, mode=text_mode).cpu()
    corr_w = {c: zero_shot_weights(bundle, names, corruption_prompts[c], mode=text_mode).cpu() for c in corruptions}
    scale = 1.0 / temperature if temperature else bundle.logit_scale
    rows, kept = [], {}
    grid = [("clean", 0)] + [(c, s) for c in corruptions for s in severities]
    for cond, sev in progress(grid, desc="conditions", total=len(grid)):
        ds = corrupted(source, clean, cond, sev, root=data_root, n=n_images, seed=seed, corruption_seed=seed,
                       classnames=classnames)
        f = encode(bundle, ds, cache, batch_size)
        weights = {"plain": plain, "ensemble": ens, "corruption_prompt": corr_w.get(cond)}
        rows.append({"condition": cond, "severity": sev, "n_images": len(f),
                     **condition_metrics(f, weights, scale, uniformity, emd_samples, emd_seed)})
        if (cond, sev) in keep_feats or (cond == "clean" and keep_feats):
            kept[(cond, sev)] = f
    for spec in shift_sources:
        ds = load_source(spec, root=data_root, n=n_images, seed=seed, classnames=classnames)
        f = encode(bundle, ds, cache, batch_size)
        index = getattr(ds, "imagenet_indices", None)
        index = torch.as_tensor(index) if index is not None else None
        weights = {"plain": plain, "ensemble": ens, "corruption_prompt": None}
        rows.append({"condition": spec.split(":")[-1], "severity": 0, "n_images": len(f),
                     **condition_metrics(f, weights, scale, uniformity, emd_samples, emd_seed, index)})
    notes = {"uniformity": vars(uniformity) | {"pairs": "all incl. i=j" if uniformity.include_self else "i != j"},
             "emd": f"Euclidean cost, {emd_samples} seeded image samples (seed {emd_seed}) vs uniform class texts",
             "entropy_temperature": 1.0 / scale, "text_mode": text_mode}
    return Result(pd.DataFrame(rows, columns=COLUMNS), kept, plain, notes)


def poster_table(table: pd.DataFrame, corruptions: list[str], severity: int) -> pd.DataFrame:
    """Metrics as rows, conditions as columns (shifts, clean, corruptions at ``severity``, mean of corruptions)."""
    at = table[(table.severity == severity) & table.condition.isin(corruptions)]
    other = table[table.severity == 0]
    wide = pd.concat([other, at]).set_index("condition")[METRIC_COLUMNS].T
    wide[f"corruption mean (sev {severity})"] = at[METRIC_COLUMNS].mean().values
    return wide


def correlations(table: pd.DataFrame, x: str = "uniformity", y: str = "acc_plain") -> dict:
    """Pearson and Spearman r (with p-values) of ``y`` against ``x`` across conditions."""
    d = table[[x, y]].dropna()
    if len(d) < 3:
        return {"n": len(d), "pearson_r": float("nan"), "pearson_p": float("nan"),
                "spearman_r": float("nan"), "spearman_p": float("nan")}
    pr, pp = stats.pearsonr(d[x], d[y])
    sr, sp = stats.spearmanr(d[x], d[y])
    return {"n": len(d), "pearson_r": float(pr), "pearson_p": float(pp), "spearman_r": float(sr), "spearman_p": float(sp)}


def pca_2d(groups: dict[str, torch.Tensor], text: torch.Tensor) -> pd.DataFrame:
    """Project image groups and class texts onto the top-2 principal axes of everything together."""
    allz = torch.cat(list(groups.values()) + [text]).double()
    mu = allz.mean(0)
    _, _, v = torch.linalg.svd(allz - mu, full_matrices=False)
    rows = []
    for name, z in list(groups.items()) + [("class text", text)]:
        p = ((z.double() - mu) @ v[:2].T).numpy()
        rows += [{"group": name, "pc1": a, "pc2": b} for a, b in p]
    return pd.DataFrame(rows)


def ensemble(name: str, template: str) -> list[str]:
    """Prompt-ensemble templates: "world" (the world's 16 variants of ``template``) or "imagenet80" (CLIP's 80)."""
    if name == "world":
        from vlmlab.world import ensemble_templates
        return ensemble_templates(template)
    if name == "imagenet80":
        from vlmlab.prompts import IMAGENET_TEMPLATES
        return list(IMAGENET_TEMPLATES)
    raise KeyError(f"ensemble={name!r}; use 'world' or 'imagenet80'")


def run_from_params(bundle, P, cache: FeatureCache | None = None) -> Result:
    """``run`` with the notebook's parameters (see params/<profile>/01_uniformity_analysis.yaml)."""
    u = dict(P.uniformity)
    return run(bundle, source=P.source, corruptions=list(P.corruptions), severities=list(P.severities),
               shift_sources=list(P.shift_sources), n_images=P.n_images, template=P.template,
               ensemble=ensemble(P.ensemble, P.template), corruption_prompts=dict(P.corruption_prompts),
               temperature=P.temperature, uniformity=UniformityOptions(**u), emd_samples=P.emd_samples,
               emd_seed=P.emd_seed, seed=P.seed, data_root=P.data_root or None, text_mode=P.text_mode,
               batch_size=P.batch_size, cache=cache,
               keep_feats=((P.pca_condition, max(P.severities)),), classnames=P.classnames)


def compare_published(table: pd.DataFrame, published: pd.DataFrame, severity: int = 5) -> pd.DataFrame:
    """Reproduced vs published (poster Table 1) per condition and metric, with the difference."""
    ours = table[(table.severity == severity) | (table.severity == 0)].melt(
        id_vars=["condition"], value_vars=METRIC_COLUMNS, var_name="metric", value_name="reproduced")
    pub = published.rename(columns={"value": "published"})[["condition", "metric", "published", "note"]]
    out = ours.merge(pub, on=["condition", "metric"], how="outer")
    out["difference"] = out.reproduced - out.published
    return out

