# Source of notebooks/01_uniformity_analysis.ipynb; rebuild with `python scripts/make_notebook.py`.

# %% [markdown]
# # 01 · Uniformity of CLIP image embeddings under corruption (UniInfo poster, Table 1)
#
# Adachi, Yamaguchi & Hamagami, *Uniformity First: Uniformity-aware Test-time Adaptation of
# Vision-language Models against Image Corruption* (arXiv:2505.12912; seed `000`).
#
# For clean images, each ImageNet-C corruption × severity and domain-shift sets, we measure zero-shot
# accuracy with three prompt kinds (plain, ensemble, corruption-aware), prediction entropy, the
# **uniformity loss** of the image embeddings (mean over pairs of exp(−t‖zᵢ − zⱼ‖²), lower = more
# uniform) and the **modality gap** as the EMD between image and class-text embeddings.
# The poster's point: *corruptions, unlike domain shifts, destroy the uniformity of image embeddings,
# and accuracy falls with it.* The last section checks each of the poster's findings on this run's tables
# (the claims ledger, `tables/claims.csv`).
#
# Profiles: `embedded` (the shipped world CLIP on world objects; shifts = renditions and thermal),
# `paper` (OpenCLIP ViT-B-16 `laion2B-s34B-b88K`, ImageNet val, ImageNet-C severity 5, ImageNet-A/R),
# `tiny` (test suite). Rerun with other parameters, e.g.
# `papermill notebooks/01_uniformity_analysis.ipynb out.ipynb -f params/embedded/01_uniformity_analysis.yaml -p n_images 200`.

# %% tags=["parameters"]
profile = "embedded"  # embedded | paper | tiny
device = "auto"  # auto | cpu | cuda
precision = "fp32"  # fp32 | fp16 | bf16: autocast dtype (the CPU autocasts bf16 only, where it has bf16 kernels; fp16 runs fp32 there); paper: fp32 (the UniInfo code runs open_clip in fp32)
out_dir = ""  # empty: results/<profile>/01_uniformity_analysis/
seed = 0  # type: int; world seed and image-subset seed (corruption noise uses it too)
model = "embedded"  # "embedded" or an open_clip architecture, e.g. "ViT-B-16"
pretrained = None  # open_clip tag or local weight file (None for the embedded model)
data_root = ""  # root of real datasets (paper profile); empty: $VLMLAB_DATA
source = "world:objects"  # clean evaluation set (vlmlab.data.load_source)
classnames = ""  # ImageNet class names: empty for classnames.txt (CoOp's curated names), synsets for every WordNet synonym of a class, comma-joined (UniInfo's; paper profile), or a file of '<wnid> <name>' lines
shift_sources = ["world:renditions", "world:thermal"]  # shifted sets with the same classes
uniformity_kept_by = ["renditions"]  # shifted sets standing for the poster's domain-shift columns (claims)
corruptions = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression"]  # type: list[str]; non-empty
severities = [1, 2, 3, 4, 5]  # type: list[int]; range 1..5; non-empty
n_images = 400  # type: int | None; range 1..; images per condition (None: all)
template = "a photo of a {}."  # the plain prompt
ensemble = "world"  # "world" (16 world templates) or "imagenet80" (CLIP's 80 ImageNet templates)
corruption_prompts = {
    "gaussian_noise": "a noisy photo of a {}.", "shot_noise": "a noisy photo of a {}.",
    "impulse_noise": "a noisy photo of a {}.", "defocus_blur": "a blurry photo of a {}.",
    "glass_blur": "a blurry photo of a {}.", "motion_blur": "a blurry photo of a {}.",
    "zoom_blur": "a blurry photo of a {}.", "snow": "a snowy photo of a {}.", "frost": "a frosty photo of a {}.",
    "fog": "a foggy photo of a {}.", "brightness": "a bright photo of a {}.",
    "contrast": "a low contrast photo of a {}.", "elastic_transform": "a distorted photo of a {}.",
    "pixelate": "a pixelated photo of a {}.", "jpeg_compression": "a jpeg compressed photo of a {}.",
    "speckle_noise": "a noisy photo of a {}.", "gaussian_blur": "a blurry photo of a {}.",
    "spatter": "a dirty photo of a {}.", "saturate": "a saturated photo of a {}.",
}
temperature = None  # softmax temperature for the entropy; None: 1 / the model's logit scale
uniformity = {"t": 1.0, "log": False, "include_self": False, "batch_size": 0}  # poster metric; batch_size 0: whole set
emd_samples = 1000  # type: int; range 1..; image embeddings subsampled (seeded) for the EMD
emd_seed = 0  # type: int; seed of the EMD subsample
text_mode = "clip"  # "clip": normalise each template embedding then average; "mean_then_norm": UniInfo's code
batch_size = 256  # type: int; range 1..
pca_condition = "gaussian_noise"  # corruption shown against clean in the PCA view (at the highest severity)
compare_published = False  # print the poster's Table 1 beside ours (paper profile)

# %%
import pandas as pd

import vlmlab
import vlmlab.analysis.claims
from vlmlab.analysis import uniformity as U
from vlmlab.analysis import uniformity_figures as UF

P = vlmlab.params.resolve("01_uniformity_analysis", globals())
run = vlmlab.results.Run("01_uniformity_analysis", P)
vlmlab.plots.set_style()
bundle = vlmlab.models.load_clip(P.model, P.pretrained, device=P.device, precision=P.precision)
bundle.identity

# %% [markdown]
# ## One pass of the image encoder per condition; every metric reuses the cached features

# %%
res = U.run_from_params(bundle, P, cache=vlmlab.features.FeatureCache())
top = max(P.severities)
poster = U.poster_table(res.table, list(P.corruptions), top)
run.save_table(res.table, "metrics", markdown=poster.reset_index(names="metric"))
run.save_json(res.notes, "metrics_notes")
poster.round(3)

# %% [markdown]
# ## Accuracy and uniformity per corruption and severity

# %%
run.save_figure(UF.heatmaps(res.table, list(P.corruptions)), "heatmaps")

# %% [markdown]
# ## Accuracy against uniformity across conditions

# %%
corr = U.correlations(res.table)
run.save_table(pd.DataFrame([corr]), "correlation")
run.log_metric(**{f"acc_vs_uniformity_{k}": v for k, v in corr.items()})
run.save_figure(UF.accuracy_vs_uniformity(res.table), "accuracy_vs_uniformity")
corr

# %% [markdown]
# ## The collapse, seen: clean vs corrupted image embeddings with the class texts (PCA)

# %%
groups = {f"{c} (sev {s})" if s else c: f.feats for (c, s), f in res.feats.items()}
run.save_figure(UF.pca_scatter(U.pca_2d(groups, res.text)), "pca_embeddings")

# %% [markdown]
# ## Published numbers beside ours (paper profile)

# %%
published = vlmlab.results.published("01_uniformity_analysis")
comparison = U.compare_published(res.table, published, top) if P.compare_published and published is not None else None
run.save_table(comparison, "published_vs_reproduced") if comparison is not None else None
comparison

# %% [markdown]
# ## Structural check
# Every condition of the grid has its row and no metric is missing (the corruption prompt exists only for
# corruptions): a defect of the run, not a finding, so it fails the run. The poster's findings are claims below.

# %%
expected = ({("clean", 0)} | {(c, s) for c in P.corruptions for s in P.severities}
            | {(spec.split(":")[-1], 0) for spec in P.shift_sources})
missing = sorted(expected - set(zip(res.table.condition, res.table.severity)))
assert not missing, f"tables/metrics.csv lacks rows {missing}"
nan = res.table[U.METRIC_COLUMNS].isna()
nan["acc_corruption_prompt"] &= res.table.severity > 0
assert not nan.any(axis=None), f"tables/metrics.csv has NaN metrics in {res.table[nan.any(axis=1)].condition.tolist()}"

# %% [markdown]
# ## Claims
# The poster's Table 1 findings (`vlmlab/analysis/claims.py`), each checked on this run's saved tables:
# `holds`, `fails` (a finding, reported here, never a failed run) or `not_measured` (this profile lacks what
# the claim needs), with the numbers compared. Written to `tables/claims.csv` and `claims.md`;
# `make claims` merges every notebook's.

# %%
ledger = vlmlab.claims.evaluate(vlmlab.analysis.claims.CLAIMS, vlmlab.claims.Evidence.load(run.dir, P))
vlmlab.claims.save(run, ledger)
ledger[["claim_id", "verdict", "paper_value", "ours", "note"]]

# %%
run.finish()
