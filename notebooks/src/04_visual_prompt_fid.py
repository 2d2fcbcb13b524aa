# Source of notebooks/04_visual_prompt_fid.ipynb; rebuild with `python scripts/make_notebook.py notebooks/src/04_visual_prompt_fid.py`.

# %% [markdown]
# # 04 · Visual prompting: gain over zero-shot, and the distribution gap
#
# Bahng, Jahanian, Sankaranarayanan & Isola, *Exploring Visual Prompts for Adapting Large-Scale
# Models* (arXiv:2203.17274; seed `001`). One learned perturbation (a **visual prompt**) is added to
# every normalised input of a frozen CLIP whose text classifier stays fixed: a **padding** frame, a
# **fixed patch** (top-left) or a **random patch** (moved on every pass). We measure, per dataset,
# text-prompt zero-shot accuracy (**TP**), **VP+TP**, their difference (the **gain**) and a linear
# probe (**LP**), then relate the gain to the dataset's **distribution gap** from the pretraining data,
# measured by **FID** and an **LPIPS-style** distance. The paper reports that larger gaps go with larger
# gains; its per-dataset numbers are not verified here (`../shared/papers/visual_prompting.md` §6), so
# no published table is shown.
#
# * **embedded**: the world CLIP on eleven world datasets from near (objects, colours, ...) to far
#   (thermal, digits, terrain); reference set = the first images of the model's own training pool.
#   Inception and AlexNet weights would have to be downloaded, so **FID and the LPIPS-style distance
#   use the world CLIP's own image encoder**: FID on its unit image embeddings, the LPIPS-style
#   distance on its four ResNet stage outputs (forward hooks), channel-normalised and averaged
#   without learned weights. Their values are not comparable with Inception-FID or LPIPS.
# * **paper**: CLIP ViT-B/32 (OpenAI), the paper's datasets under `data_root`, Inception-v3 FID
#   (pytorch-fid) and LPIPS (AlexNet, `lpips`) from local weight files only; reference = ImageNet val.
# * **tiny**: seconds, for the test suite.
#
# The set-level LPIPS-style distance (`vlmlab.visual_prompts.gap`): with d the per-pair distance,
# `cross` = mean d over all pairs (test image, reference image), `within` = the same inside one set, and
# **lpips = cross − (within_dataset + within_reference)/2**, which is 0 for identical sets, symmetric
# and ≥ 0 (an energy distance). `cross` alone, the plain "mean over random pairs" that
# `../shared/papers/visual_prompting.md` §8 proposes (the paper publishes no protocol), is in `tables/gap.csv`,
# and `lpips_form = "cross"` puts it in the `lpips` column and the correlation (`docs/fidelity.md`).

# %% tags=["parameters"]
profile = "embedded"  # embedded | paper | tiny
device = "auto"  # auto | cpu | cuda
precision = "fp32"  # fp32 | fp16 | bf16: autocast dtype (the CPU autocasts bf16 only, where it has bf16 kernels; fp16 runs fp32 there); paper: fp16 (the reference's autocast + GradScaler)
out_dir = ""  # empty: results/<profile>/04_visual_prompt_fid/
seed = 0  # type: int; world seed, few-shot draw, reference sample and LPIPS pairs
model = "embedded"  # "embedded" or an open_clip architecture, e.g. "ViT-B-32"
pretrained = None  # open_clip tag or local weight file (None for the embedded model)
data_root = ""  # root of real datasets (paper profile); empty: $VLMLAB_DATA
datasets = ["world:objects", "world:colours", "world:textures", "world:counts", "world:positions",
            "world:backgrounds", "world:styles", "world:renditions", "world:thermal", "world:digits",
            "world:terrain"]  # type: list[str]; non-empty; specs, or the paper's bare names ("CIFAR100", "EuroSAT", ...)
prompters = ["padding", "fixed_patch", "random_patch"]  # type: list[str]; non-empty; the first one runs on every dataset and is correlated
prompt_sizes = {"padding": 8, "fixed_patch": 8, "random_patch": 8}  # pad width / patch side in input pixels
compare_on = ["world:objects", "world:colours", "world:styles", "world:digits", "world:terrain"]  # datasets for the other prompters ([]: all)
shots = 16  # type: int | None; range 1..; training images per class (None: the whole train split, as in the paper)
n_val = 4  # type: int; range 1..; validation images per class (linear-probe C search; select "val")
n_test = 200  # type: int | None; range 1..; test images per dataset (None: all); the gap uses the same images
epochs = 8  # type: int; range 1..; the paper: 1000
batch_size = 32  # type: int; range 1..; the paper: 256
lr = 10.0  # SGD learning rate (the paper: 40; the world's value from benchmarks/sweep_visual_prompt.py)
warmup = 10  # type: int; range 0..; linear warm-up steps (the paper: 1000), then cosine to 0
init = "randn"  # prompt init: "randn" (the paper) or "zeros" (starts at zero-shot)
select = "last"  # report the "last" epoch, the best "val" epoch, or the best "test" epoch (the paper's: selected on test)
eval_precision = "fp32"  # fp32 | bundle: evaluation passes in fp32 with an fp32 text head, as the reference's validate; bundle: under `precision`'s autocast (vlmlab before 2026-12-04)
vp = {}  # other VPConfig overrides, e.g. {"patch_positions": "all", "cap_warmup": True} (docs/fidelity.md)
seeds = [0]  # type: list[int]; non-empty; prompt seeds (init, batch order, patch locations); tables average over them
template = ""  # empty: each dataset's own template; the paper uses "This is a photo of a {}" for all
linear_probe = True  # fit the LP baseline (C searched on the validation split)
lp_dtype = "float64"  # float64 | float32: the linear probes' fit (lpclip: float64; float32: vlmlab before 2026-12-04)
lp_features = "raw"  # raw | normalized: the LP baseline's features (lpclip: the encoder's output; normalized: vlmlab until fidelity row #17)
vision_only_source = "world:objects"  # source task of the vision-only classifier (empty: skip the row)
vision_only_shots = 16  # type: int; range 1..; source images per class for its linear head
vision_only_datasets = ["world:colours", "world:digits", "world:terrain"]  # where the vision-only row runs ([]: all)
gap_metrics = ["fid", "lpips"]
gap_extractor = "encoder"  # "encoder" (the model's own image encoder) or "paper" (Inception FID + lpips AlexNet)
reference = "world:pool"  # "world:pool" (the embedded CLIP's training images) or "imagenet_val"
n_reference = 1000  # type: int; range 1..; reference images
n_gap = None  # type: int | None; range 1..; test images per dataset used for the gap (None: all n_test)
lpips_form = "energy"  # energy | cross: the lpips column; energy: cross - (within + within_ref)/2 (vlmlab); cross: the plain cross-pair mean (papers §8's proposal)
lpips_pairs = None  # type: int | None; range 1..; None: exact all-pairs means (encoder maps); k: k random pairs per term
gap_image_size = 224  # type: int; range 1..; side real images are resized to for the paper's gap extractors
torch_home = ""  # folder holding hub/checkpoints/ with the Inception / AlexNet files (empty: $TORCH_HOME)
num_workers = 0  # type: int; range 0..; DataLoader workers for real datasets

# %%
import vlmlab
import vlmlab.visual_prompts as VP
import vlmlab.visual_prompts.claims
import vlmlab.visual_prompts.figures as VPF

P = vlmlab.params.resolve("04_visual_prompt_fid", globals())
run = vlmlab.results.Run("04_visual_prompt_fid", P)
vlmlab.plots.set_style()
vlmlab.runtime.seed_everything(P.seed)
bundle = vlmlab.models.load_clip(P.model, P.pretrained, device=P.device, precision=P.precision)
bundle.identity

# %% [markdown]
# ## The distribution gap of every dataset to the reference set
# No prompt changes these numbers, so they are computed once (the prompt is in pixel space, so nothing
# the prompt touches is cached).

# %%
gaps = VP.measure_gaps(P, bundle)
run.save_table(gaps, "gap")
gaps.round(4)

# %% [markdown]
# ## Visual prompts against zero-shot and the linear probe
# Every run starts from the same frozen model and the same fixed text classifier; only the prompt learns.

# %%
vpr = VP.run_visual_prompting(P, bundle, cache=vlmlab.features.FeatureCache())
run.save_table(vpr.table, "visual_prompting_runs")
run.save_table(vpr.history, "training_history")
table = VP.assemble(vpr.table, gaps)
run.save_table(table, "visual_prompting", floatfmt=".4g")  # lpips values are ~1e-4
table.round(2)

# %% [markdown]
# ## Does the gain grow with the gap?
# One point per dataset (the first prompter); Pearson r with its two-sided p, and Spearman ρ.

# %%
corr = VP.correlation(table, P.prompters[0], P.gap_metrics)
run.save_table(corr, "correlation", floatfmt=".3f")
run.log_metric(**{f"{m}_{k}": corr.set_index("gap_metric").loc[m, k] for m in P.gap_metrics for k in ("pearson_r", "spearman_r")})
for m in P.gap_metrics:
    run.save_figure(VPF.gain_vs_gap(table, corr, m, P.prompters[0], P.gap_extractor, P.lpips_form), f"gain_vs_{m}")
corr.round(3)

# %% [markdown]
# ## Prompter comparison, and the mean gain near and far

# %%
run.save_figure(VPF.prompter_bars(table), "prompter_comparison")
groups = {name: task.distance for name, task in vlmlab.world.TASKS.items()}
summary = VP.gain_summary(table, groups)
run.save_table(summary, "gain_summary", floatfmt=".2f")
summary.round(2)

# %% [markdown]
# ## The learned padding prompts
# Top: the prompt as a change of pixel values (grey = no change, each scaled to its own range);
# bottom: added to one test image of the dataset.

# %%
fig = VPF.prompt_images(vpr.prompts, bundle.mean, bundle.std, P.prompters[0])
run.save_figure(fig, "learned_prompts")

# %% [markdown]
# ## The same prompt on a vision-only classifier
# The paper's control: a frozen classifier whose head was trained on another task (here a linear head on
# the source task's image features), with downstream class i mapped to its output i. The paper finds
# visual prompts help CLIP far more than such models.

# %%
vision_only = vpr.vision_only.reindex(columns=["dataset", "model", "prompter", "seed", "base_acc", "vp_acc", "gain"])
run.save_table(vision_only, "vision_only")  # with its header when empty, so the claims can read it back
vpr.vision_only.pivot_table(index="dataset", columns="model", values=["base_acc", "vp_acc", "gain"]).round(2) \
    if len(vpr.vision_only) else vpr.vision_only

# %% [markdown]
# ## Structural check
# The table must have one row per dataset for the first prompter and one per `compare_on` dataset for
# the others (a missing row is a defect of the run, not a finding).

# %%
expected = len(P.datasets) + (len(P.prompters) - 1) * (len(P.compare_on) or len(P.datasets))
assert len(table) == expected, f"table has {len(table)} rows, expected {expected}"
mean_gain = float(table[table.prompter == P.prompters[0]].gain.mean())
run.log_metric(mean_gain=mean_gain)

# %% [markdown]
# ## Claims
# The paper's findings (seed `001`, `../shared/papers/visual_prompting.md`) checked on this run's own
# tables (`vlmlab/visual_prompts/claims.py`): each `holds`, `fails` or is `not_measured` (with why), with
# the numbers it compared. A failing claim is reported here and in `tables/claims.csv`, never raised.
# `paper_value` quotes the summary's recalled, unverified per-dataset numbers ([M]) as text only.

# %%
ledger = vlmlab.claims.evaluate(vlmlab.visual_prompts.claims.CLAIMS, vlmlab.claims.Evidence.load(run.dir, P))
vlmlab.claims.save(run, ledger)
ledger[["claim_id", "verdict", "paper_value", "ours", "note"]]

# %%
run.finish()
