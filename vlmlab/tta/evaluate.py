"""The grid of notebook 02: every method on every corruption at one severity (poster Table 2, seed 000).

``evaluate(P)`` reads the notebook's parameters and returns an :class:`Evaluation` with
    table      method, corruption, severity, shots, seed, accuracy, n_images (tables/tta.csv)
    poster     methods as rows, corruptions as columns in the poster's order, mean, then
               the images each row was scored on per corruption (rows differ when the 64-view
               methods run on a subset; ``paired`` is then the like-for-like comparison)
    cost       method, ms_per_image, peak_mem_mb, device                     (tables/cost.csv)
    setup      per method: images per corruption, views, where the shots came from, settings
    paired     multi-view methods vs No-adapt on the same image subset
    geometry   uniformity, entropy and accuracy of the embeddings before / after UniInfo
    history    UniInfo's per-batch loss terms (I, w, L_ent, L_unif, distillation)
    pca        2-D PCA of image embeddings before / after UniInfo and of the class texts
Single-view features come from the shared feature cache under the keys notebook 01 uses
(``extract_arrays`` for world sets, ``extract`` otherwise); view features of the 64-view methods
are cached too, keyed by model, images, view count and view seed, and so are the results of the methods
that adapt on a stream (episodic and online: ``vlmlab.tta.base.run_stream_cached``, keyed by everything the
run reads and by its code), so a rerun with warm caches scores them without running them again, and an
interrupted paper-profile grid resumes from the streams it finished.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from vlmlab.checkpoints import Checkpoint, checkpoint_path
from vlmlab.data.fewshot import check_draws, sample_few_shot
from vlmlab.data.sources import corrupted, load_source
from vlmlab.features import FeatureCache, extract, extract_arrays
from vlmlab.metrics import (accuracy, modality_gap_centroid, softmax_entropy_from_logits, uniformity_loss,
                            uniformity_per_batch)
from vlmlab.models import load_clip
from vlmlab.prompts import zero_shot_weights
from vlmlab.runtime import get_logger, progress, resolve_device
from vlmlab.tta import METHODS, build
from vlmlab.tta.base import (Context, Stream, Support, check_view_source, encode_item_views, image_source,
                              measure_cost, run_stream_cached)

log = get_logger("vlmlab.tta.evaluate")

FEW_SHOT = ("linear_probe", "tip_adapter")
POSTER_ORDER = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "contrast", "elastic_transform",
                "jpeg_compression", "pixelate", "gaussian_noise", "impulse_noise", "shot_noise", "brightness",
                "fog", "snow", "frost")
POSTER_COLUMNS = {"defocus_blur": "Def.", "glass_blur": "Gla.", "motion_blur": "Mot.", "zoom_blur": "Zoom",
                  "contrast": "Con.", "elastic_transform": "Ela.", "jpeg_compression": "JPEG", "pixelate": "Pix.",
                  "gaussian_noise": "Gau.", "impulse_noise": "Imp.", "shot_noise": "Shot", "brightness": "Bri.",
                  "fog": "Fog", "snow": "Snow", "frost": "Frost"}
LABELS = {"no_adapt": "No-adapt", "linear_probe": "Linear probing", "tip_adapter": "Tip-Adapter", "tpt": "TPT",
          "zero": "ZERO", "mta": "MTA", "tda": "TDA", "uniinfo": "UniInfo"}
TABLE_COLUMNS = ["method", "corruption", "severity", "shots", "seed", "accuracy", "n_images"]


@dataclass
class Evaluation:
    """Everything the notebook shows (see the module docstring)."""

    table: pd.DataFrame
    cost: pd.DataFrame
    setup: pd.DataFrame
    paired: pd.DataFrame
    geometry: pd.DataFrame
    history: pd.DataFrame
    pca: pd.DataFrame
    notes: dict = field(default_factory=dict)

    @property
    def poster(self) -> pd.DataFrame:
        return poster_table(self.table, self.notes.get("shots_source"))


def encode(bundle, dataset, cache, batch_size: int = 256):
    """Single-view features through the shared cache (same keys as notebook 01's ``encode``)."""
    if hasattr(dataset, "images"):
        return extract_arrays(bundle, dataset.images, dataset.labels, dataset.key, cache=cache, batch_size=batch_size)
    return extract(bundle, dataset, cache=cache, batch_size=batch_size)


def cached_views(bundle, dataset, idx: torch.Tensor, n_views: int, seed: int, cache, chunk: int = 8,
                 source: str = "served", checkpoint_every_s: float = 300.0) -> torch.Tensor:
    """(len(idx), V, D) unit view features of items ``idx`` (view 0 = the image), from the cache if present;
    ``source``: crops of the served model input or of the raw file (``vlmlab.tta.base.encode_item_views``).

    While they are encoded (64 views of 1,000 ImageNet-C images: about 45 minutes on a GPU), the views so far
    are written beside their cache entry every ``checkpoint_every_s`` seconds (``vlmlab.checkpoints``), so a
    stopped run resumes after the last saved chunk, to the same features; the file is deleted once they are
    stored. Each item's views are drawn from its own seed, so they do not depend on where a run stopped."""
    crop = {"served": "roi_align-bilinear", "raw": "raw-rrc-bilinear"}[check_view_source(source)]
    spec = {"model": bundle.identity, "dataset": f"{getattr(dataset, 'key', type(dataset).__name__)}:views",
            "extra": {"index": idx.tolist()}, "seed": seed,
            "transform": f"views:V={n_views}:rrc(0.08,1)+hflip:{crop}:{bundle.image_size}"}
    hit = cache.get(spec) if cache is not None else None
    if hit is not None:
        return hit["views"]
    path = checkpoint_path(cache, spec) if cache is not None else None
    ckpt = Checkpoint(path, spec, "view checkpoint", checkpoint_every_s)
    state = ckpt.load()
    out, done = ([state["views"]], int(state["done"])) if state is not None else ([], 0)
    if done:
        log.info("views %s: resumed after %d of %d images", getattr(dataset, "name", ""), done, len(idx))
    src = image_source(bundle, dataset)
    steps = range(done, len(idx), chunk)
    for s in progress(steps, desc=f"views {getattr(dataset, 'name', '')}", leave=False, disable=True if len(steps) < 20 else None):
        part = idx[s:s + chunk]
        out.append(encode_item_views(bundle, src, part, n_views, seed, source).cpu())
        ckpt.save(lambda: {"views": torch.cat(out), "done": s + len(part)})
    views = torch.cat(out) if out else torch.zeros(0, n_views, bundle.embed_dim)
    if cache is not None:
        cache.put(spec, {"views": views})
        path.unlink(missing_ok=True)
    return views


def balanced_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """About ``n`` indices, the same number per class (``n // C``), seeded; fewer than C: one each of
    ``n`` seeded classes; all when n is None."""
    if n is None or n >= len(labels):
        return torch.arange(len(labels))
    n_classes = int(labels.max()) + 1
    idx = sample_few_shot(labels, max(n // n_classes, 1), seed, n_classes=n_classes)
    if n < n_classes:
        idx = torch.sort(idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:n]]).values
    return idx


def support_set(P, bundle, text_classes: int, shots: int, seed: int, cache, corruption: str | None) -> Support:
    """K shots per class from the train split, min(K, 4) from the val split (CoOp's protocol; ``P.fewshot_draws``:
    every K drawn on its own, as CoOp's, or nested in K)."""
    nested = check_draws(P.fewshot_draws)
    spec = P.support_source or P.source
    root = P.data_root or None
    n_train = max(P.shots) * text_classes if spec.startswith("world:") else None
    n_val = 4 * text_classes if spec.startswith("world:") else None
    parts = []
    for split, k, n in (("train", shots, n_train), ("val", min(shots, 4), n_val)):
        ds = load_source(spec, root=root, split=split, n=n, seed=P.seed)
        ds = ds.subset(sample_few_shot(ds.labels, k, seed, n_classes=text_classes, nested=nested).numpy())
        if corruption is not None:
            if not spec.startswith("world:"):
                raise ValueError(f"shots_source='target' needs generated corruptions (a world source), not {spec!r}: "
                                 "ImageNet-C holds only validation images, which are the test set")
            ds = corrupted(spec, ds, corruption, P.severity, corruption_seed=P.seed + 1)
        parts.append((ds, encode(bundle, ds, cache, P.batch_size)))
    (train, f_train), (_, f_val) = parts
    return Support(f_train.feats, f_train.labels, image_source(bundle, train), f_val.feats, f_val.labels, shots,
                   "target" if corruption else "clean", f_train.norms, f_val.norms)


def method_runs(P) -> list[tuple[str, int | None, dict]]:
    """(name, shots, overrides) for every table row family, in the poster's row order."""
    runs = []
    for name in P.methods:
        if name not in METHODS:
            raise KeyError(f"methods: unknown method {name!r}; known: {sorted(METHODS)}")
        overrides = dict(P[name])
        if name in FEW_SHOT:
            runs += [(name, k, {**overrides, "shots": k}) for k in P.shots]
        else:
            runs.append((name, None, overrides))
    return runs


def geometry_rows(corruption: str, z_before: torch.Tensor, z_after: torch.Tensor, labels: torch.Tensor,
                  text: torch.Tensor, tau: float = 0.01, unif_batch: int = 128) -> list[dict]:
    """Uniformity (poster metric; UniInfo's per-batch loss), entropy at tau, centroid modality gap to the
    label's class text, accuracy; before and after adaptation.

    ``unif_loss`` is what UniInfo's offline evaluator logs (``evaluator/classification_evaluator.py``): the
    training loss (t = 0.5, log, all pairs) of each batch of ``unif_batch`` embeddings in dataset order (its
    ``val_dataloader``: 128, unshuffled; the last batch smaller), averaged unweighted over the batches
    (ignite ``Average`` of a scalar)."""
    rows = []
    for stage, z in (("before", z_before), ("after", z_after)):
        z = z.double()
        logits = z @ text.double().T
        rows.append({"corruption": corruption, "stage": stage, "n_images": len(z),
                     "uniformity": float(uniformity_loss(z, t=1.0)),
                     "unif_loss": float(uniformity_per_batch(z, unif_batch, t=0.5, log=True, include_self=True)),
                     "entropy": float(softmax_entropy_from_logits(logits / tau).mean()),
                     "modality_gap": float(modality_gap_centroid(z, text.double()[labels])),
                     "accuracy": accuracy(logits, labels)})
    return rows


def pca_frame(groups: Mapping[str, torch.Tensor], text: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Top-2 principal axes of all image groups and the class texts together, as tidy rows."""
    allz = torch.cat([*groups.values(), text]).double()
    mu = allz.mean(0)
    _, _, v = torch.linalg.svd(allz - mu, full_matrices=False)
    frames = []
    for name, z in [*groups.items(), ("class text", text)]:
        p = ((z.double() - mu) @ v[:2].T).numpy()
        lab = labels.numpy() if name != "class text" else np.arange(len(text))
        frames.append(pd.DataFrame({"group": name, "pc1": p[:, 0], "pc2": p[:, 1], "label": lab}))
    return pd.concat(frames, ignore_index=True)


class _Grid:
    """Method instances and contexts of one evaluation, reused across corruptions when nothing differs."""

    def __init__(self, P, bundle, names: list[str], text: torch.Tensor, cache):
        self.P, self.bundle, self.names, self.text, self.cache = P, bundle, names, text, cache
        self.methods: dict[tuple, Any] = {}
        self.supports: dict[tuple, Support] = {}

    def method(self, name: str, shots: int | None, overrides: dict, seed: int, corruption: str):
        target = corruption if (shots is not None and self.P.shots_source == "target") else None
        key = (name, shots, seed, target)
        if key not in self.methods:
            support = None
            if shots is not None:
                skey = (shots, seed, target)
                if skey not in self.supports:
                    self.supports[skey] = support_set(self.P, self.bundle, len(self.names), shots, seed, self.cache, target)
                support = self.supports[skey]
            m = build(name, **overrides)
            m.setup(Context(self.bundle, self.names, self.text, self.P.template, support, seed))
            self.methods[key] = m
        return self.methods[key]


def _view_count(P) -> int:
    counts = [build(n, **dict(P[n])).n_views for n in P.methods if "views" in METHODS[n].inputs]
    return max(counts, default=0)


def evaluate(P, *, bundle=None, cache: FeatureCache | None | bool = None) -> Evaluation:
    """Run every method of ``P.methods`` on every corruption of ``P.corruptions`` at ``P.severity``.

    Args:
        P: the notebook's parameters (``vlmlab.params.Params`` or a mapping with attribute access).
        bundle: a loaded model (default: ``load_clip(P.model, P.pretrained, P.device, precision=P.precision)``).
        cache: feature cache (default the shared one; ``False`` = none).
    """
    check_view_source(P.views_from)
    bundle = bundle or load_clip(P.model, P.pretrained, resolve_device(P.device), precision=P.precision)
    cache = FeatureCache() if cache is None or cache is True else (cache or None)
    root = P.data_root or None
    clean = load_source(P.source, root=root, n=P.n_images, seed=P.seed, classnames=P.classnames)
    names = list(clean.classnames)
    text = zero_shot_weights(bundle, names, P.template, mode=P.text_mode).cpu()        # (C, D)
    grid, runs, n_views = _Grid(P, bundle, names, text, cache), method_runs(P), _view_count(P)
    rows, paired, geometry, history, pca = [], [], [], [], None
    first_stream, from_cache = None, 0
    for corruption in progress(P.corruptions, desc=f"corruptions (severity {P.severity})"):
        ds = corrupted(P.source, clean, corruption, P.severity, root=root, n=P.n_images, seed=P.seed,
                       corruption_seed=P.seed, classnames=P.classnames)
        f = encode(bundle, ds, cache, P.batch_size)
        stream = Stream(f.labels, image_source(bundle, ds), f.feats, name=corruption, severity=P.severity,
                        norms=f.norms)
        first_stream = first_stream or (stream, ds)
        sub = balanced_subset(f.labels, P.n_images_multiview, P.seed)
        for seed in P.seeds:
            multi = None
            for name, shots, overrides in runs:
                method = grid.method(name, shots, overrides, seed, corruption)
                s = stream
                if "views" in method.inputs:
                    if multi is None:
                        multi = stream.subset(sub)
                        multi.view_seed, multi.view_source = seed, P.views_from
                        multi.views = cached_views(bundle, ds, sub, n_views, seed, cache, source=P.views_from)
                    s = multi
                elif "augmix_views" in method.inputs:              # TDA's A/V/R/S setting: the whole stream
                    s = replace(stream, view_seed=seed)
                if getattr(method, "searches_on_test", False):     # Tip-Adapter's ImageNet protocol (a switch)
                    method.search_test(s.feats, s.labels)
                logits, hit = run_stream_cached(method, s, cache=cache, seed=seed, desc=f"{name} {corruption}")
                from_cache += hit
                acc = accuracy(logits, s.labels)
                rows.append({"method": name, "corruption": corruption, "severity": P.severity, "shots": shots,
                             "seed": seed, "accuracy": acc, "n_images": len(s)})
                if s is multi:
                    base = accuracy(s.feats @ text.T, s.labels)
                    paired.append({"method": name, "corruption": corruption, "seed": seed, "n_images": len(s),
                                   "accuracy": acc, "no_adapt_same_images": base, "difference": acc - base})
                if name == "uniinfo":
                    z_after = method.embeddings
                    geometry += [r | {"seed": seed} for r in geometry_rows(
                        corruption, f.feats, z_after, f.labels, text, unif_batch=method.config.eval_batch_size)]
                    history += [h | {"corruption": corruption, "seed": seed} for h in method.history]
                    if corruption == P.pca_corruption and pca is None:
                        pca = pca_frame({"before (frozen)": f.feats, "after UniInfo": z_after}, text, f.labels)
    if from_cache:
        log.info("%d method streams loaded from the cache (vlmlab.tta.base.run_stream_cached)", from_cache)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["shots"] = table["shots"].astype("Int64")
    cost = cost_table(P, grid, runs, *first_stream) if first_stream and P.n_cost_images > 0 else pd.DataFrame(
        columns=["method", "ms_per_image", "peak_mem_mb", "device"])
    return Evaluation(table, cost, setup_table(P, runs, len(stream), len(sub), n_views, len(names)),
                      pd.DataFrame(paired), pd.DataFrame(geometry), pd.DataFrame(history),
                      pca if pca is not None else pd.DataFrame(columns=["group", "pc1", "pc2", "label"]),
                      {"classes": len(names), "text": P.template, "text_mode": P.text_mode,
                       "shots_source": P.shots_source if any(s is not None for _, s, _ in runs) else None,
                       "streams_from_cache": from_cache})


def cost_table(P, grid: _Grid, runs, stream: Stream, ds) -> pd.DataFrame:
    """ms/image and peak memory of each method on a fresh, uncached slice of the first corruption.

    Includes the image encoder (no precomputed features or views); few-shot set-up (fitting the
    probe, building the cache) is not included. 64-view methods use ``n_cost_images_multiview`` images.
    """
    rows, src = [], image_source(grid.bundle, ds)
    last = {name: (shots, overrides) for name, shots, overrides in runs}      # few-shot: the largest shots
    for name, (shots, overrides) in last.items():
        method = grid.method(name, shots, overrides, P.seeds[0], stream.name)
        n = P.n_cost_images_multiview if method.n_views > 1 else P.n_cost_images
        idx = torch.arange(min(n, len(stream)))
        fresh = Stream(stream.labels, src, name=stream.name, severity=stream.severity,           # no cached inputs
                       view_source=P.views_from).subset(idx)
        rows.append({"method": name, **measure_cost(method, fresh, seed=P.seeds[0])})
    return pd.DataFrame(rows, columns=["method", "ms_per_image", "peak_mem_mb", "device"])


def setup_table(P, runs, n_images: int, n_multi: int, n_views: int, n_classes: int) -> pd.DataFrame:
    """What each row family ran on: images per corruption, views, shots and their source, the settings."""
    rows = []
    for name, shots, overrides in runs:
        m = build(name, **overrides)
        multi = "views" in m.inputs                 # scored on the multi-view subset
        settings = {k: v for k, v in vars(m.config).items()}
        if name == "uniinfo":
            from vlmlab.tta.uniinfo import scaled_threshold
            settings["I0_used"] = round(scaled_threshold(m.config.info_threshold, n_classes,
                                                         m.config.info_threshold_classes), 4)
        rows.append({"method": name, "shots": shots, "images_per_corruption": n_multi if multi else n_images,
                     "views": n_views if multi else m.n_views, "regime": m.regime,
                     "cost_images": P.n_cost_images_multiview if m.n_views > 1 else P.n_cost_images,
                     "shots_source": (P.shots_source if shots is not None else ""),
                     "settings": ", ".join(f"{k}={v}" for k, v in settings.items())})
    return pd.DataFrame(rows)


def row_label(method: str, shots) -> str:
    return LABELS.get(method, method) + ("" if shots is None or pd.isna(shots) else f" ({int(shots)})")


def poster_table(table: pd.DataFrame, shots_source: str | None = None) -> pd.DataFrame:
    """Methods as rows (poster order), corruptions as columns (poster order, abbreviated), mean last.

    Accuracy is averaged over seeds; the mean is the unweighted mean over the corruptions present.
    Column ``images``: the images per corruption each row was scored on (a range if they differ).
    With ``shots_source``, a last column says where the few-shot rows' shots came from.
    """
    t = table.copy()
    t["row"] = [row_label(m, s) for m, s in zip(t.method, t.shots)]
    order = list(dict.fromkeys(t.sort_values(["method", "shots"], key=_method_key).row))
    wide = t.pivot_table(index="row", columns="corruption", values="accuracy", aggfunc="mean")
    cols = [c for c in POSTER_ORDER if c in wide.columns] + sorted(c for c in wide.columns if c not in POSTER_ORDER)
    wide = wide[cols]
    wide["Mean"] = wide.mean(axis=1)
    wide = wide.rename(columns=POSTER_COLUMNS).reindex(order)
    wide.index.name = "method"
    if "n_images" in t.columns:
        counts = t.groupby("row").n_images.agg(["min", "max"]).reindex(order)
        wide["images"] = [str(int(lo)) if lo == hi else f"{int(lo)}-{int(hi)}" for lo, hi in counts.itertuples(index=False)]
    if shots_source:
        shots = t.drop_duplicates("row").set_index("row").shots.reindex(order)
        where = {"clean": "clean train split", "target": "corrupted train split"}.get(shots_source, shots_source)
        wide["shots from"] = [where if pd.notna(k) else "" for k in shots]
    return wide


def _method_key(col: pd.Series) -> pd.Series:
    if col.name == "method":
        return col.map({m: i for i, m in enumerate(METHODS)})
    return col.fillna(-1)


def compare_published(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Ours (seed mean, plus the mean over corruptions) beside the poster's numbers, matched on method/shots/corruption."""
    ours = table.groupby(["method", "shots", "corruption"], dropna=False, as_index=False)["accuracy"].mean()
    means = ours.groupby(["method", "shots"], dropna=False, as_index=False)["accuracy"].mean().assign(corruption="mean")
    ours = pd.concat([ours, means], ignore_index=True)
    pub = published.dropna(subset=["corruption"]).copy()
    for df in (ours, pub):
        df["shots"] = df["shots"].astype("Int64")
    merged = ours.merge(pub[["method", "shots", "corruption", "accuracy"]].rename(columns={"accuracy": "published"}),
                        on=["method", "shots", "corruption"], how="left")
    merged["difference"] = merged["accuracy"] - merged["published"]
    return merged.rename(columns={"accuracy": "ours"})
