# Source of notebooks/05_vlm_blind_tests.ipynb; rebuild with `python scripts/make_notebook.py notebooks/src/05_vlm_blind_tests.py`.

# %% [markdown]
# # 05 · VLMs overlook their visual representations
#
# Fu, Bonnen, Guillory & Darrell, *Hidden in plain sight: VLMs overlook their visual representations*
# (arXiv:2506.08008; seed `003`). On vision-centric multiple-choice tasks a LLaVA-style VLM does much
# worse than a simple **readout of its own vision encoder**, often near chance; its answers barely
# change when the image is replaced by a **white image**; its answer-letter distribution is far, in
# **total variation**, from the labels'; the information is still present in the LM's hidden states
# (**layer-wise probing**); **prompt tuning** helps little, **LoRA on the LM** helps most, tuning the
# **projector** or the **vision encoder** little (`../shared/papers/hidden_in_plain_sight.md`).
#
# * **embedded**: the world's four tasks -- relative **depth** (two objects, the closer one larger,
#   lower and in front; A/B), low-level **correspondence** (a shifted, relit second view with four
#   marked points; A-D), **odd-one-out** (one of four images shows another shape under other
#   renderings; A-D) and rendition **style** (which of two candidates shares the reference's style;
#   A/B) -- asked to the embedded VLM (`vlmlab.blind.vlm`: the embedded CLIP's frozen image tower, its
#   `layer3` and upsampled `layer4` maps as 16 tokens per image, an MLP projector, a 4-block Llama
#   trained by `make train-embedded-vlm` as LLaVA is built: language pre-training on text, projector
#   alignment on captions, instruction tuning on captions and single- and multi-image questions, never
#   on these tasks). Readouts use the very patch tokens the LM receives.
# * **paper**: a `transformers` LLaVA-family checkpoint (`vlm`, from local files only) on CV-Bench
#   Depth, BLINK val (semantic / visual / functional correspondence, art style) and MOCHI (its 3- and
#   4-image trials as two tasks, `odd_one_out` and `odd_one_out_4`) under `data_root`
#   (`vlmlab.blind.benchmarks` gives the layouts). The readouts use the checkpoint's own vision tower;
#   layer probing reads each image's block of the canvas's image tokens (every 4th LM layer, pooled to
#   8 x 8); each benchmark is split in half, the first half training the depth probe
#   and the fine-tuning variants (`vlmlab.blind.finetune.finetune_llava`), the second measuring.
# * **tiny**: seconds, for the test suite.
#
# Answers are scored by the likelihood of each option letter as the next token (no free-text parsing).
#
# **Control rows (embedded).** Whether the VLM is competent on the answer format at all is measured, not
# assumed: §1b asks it questions in each task's format (2 or 4 labelled images, A/B or A-D) about
# attributes it was trained on (colour, style, background, shape; `vlmlab.blind.tasks.control_task`) and
# states, from this run's numbers, how far above chance it answers them. Read each readout-VLM gap beside
# its control row: a gap means blindness on the vision-centric judgement only where the control is well
# above chance (claim `vlm_competent_general`). The paper profile has no control rows (LLaVA is scored on
# the real benchmarks only), so that claim stays `not_measured` there.

# %% tags=["parameters"]
profile = "embedded"  # embedded | paper | tiny
device = "cpu"  # the embedded VLM runs on the CPU; paper: cuda
out_dir = ""  # empty: results/<profile>/05_vlm_blind_tests/
seed = 0  # type: int; task draws and fine-tuning order
vlm = "embedded"  # "embedded" (vlmlab/assets/embedded_vlm.safetensors) or a LLaVA checkpoint name or folder
dtype = "float32"  # LLaVA checkpoints: float32 | bfloat16 | float16
readout_layer = None  # type: int | None; LLaVA checkpoints: the vision tower's hidden state the patch readouts read; None: vision_feature_layer (-2 in LLaVA-1.5, what the projector reads), -1: the last block
data_root = ""  # root of CV-Bench, BLINK and MOCHI (paper profile); empty: $VLMLAB_DATA
tasks = ["depth", "correspondence", "odd_one_out", "style"]  # type: list[str]; non-empty
n_train = 240  # type: int; range 1..; training questions per task (depth probe, fine-tuning)
train_fraction = 0.5  # type: float; range 0..1; paper profile: share of each benchmark's questions used for training (probe, fine-tuning)
n_test = 200  # type: int | None; range 1..; test questions per task (None: all of a benchmark)
n_control = 200  # type: int; range 1..; questions per control task
image_size = 64  # type: int; range 1..; side of each (letterboxed) task image
soft_tokens = [1, 5, 10]  # type: list[int]; range 1..; prompt-tuning lengths (the paper: 1, 5, 10)
lora_rank = 8  # type: int; range 1..; LoRA rank on q, k, v, o of every LM block
components = ["lora", "projector", "vision"]  # component fine-tuning variants (§9)
finetune_steps = 100  # type: int; range 1..; optimiser steps per variant and task
finetune_batch = 16  # type: int; range 1..; questions per step
finetune_lrs = {}  # per-variant learning rates (prompt, lora, projector, vision) replacing FinetuneConfig's
workers = 2  # type: int; range 1..; CPU processes training embedded variants at once (1: in this process; LLaVA runs use 1)

# %%
import IPython.display
import torch

import vlmlab
import vlmlab.blind.claims
import vlmlab.blind.experiment as BX
import vlmlab.blind.figures as BF
from vlmlab.blind.finetune import FinetuneConfig
from vlmlab.blind.llava import LlavaScorer
from vlmlab.blind.vlm import load_vlm

P = vlmlab.params.resolve("05_vlm_blind_tests", globals())
run = vlmlab.results.Run("05_vlm_blind_tests", P)
vlmlab.plots.set_style()
vlmlab.runtime.seed_everything(P.seed)
LLAVA = P.vlm != "embedded"      # the paper profile: a LLaVA-family checkpoint on the real benchmarks
if LLAVA:
    model = LlavaScorer(P.vlm, device=vlmlab.runtime.resolve_device(P.device), dtype=getattr(torch, P.dtype),
                        readout_layer=P.readout_layer)
    MODEL = P.vlm
    runs = BX.prepare_benchmarks(model, P.tasks, P.data_root or None, P.train_fraction, P.seed, P.image_size, P.n_test)
else:
    model = load_vlm()
    MODEL = "embedded-vlm"
    runs = BX.prepare_tasks(model, P.tasks, P.n_train, P.n_test, P.seed, P.image_size)
{name: (len(r.train or []), len(r.test), r.test.n_options) for name, r in runs.items()}

# %% [markdown]
# ## The questions, as the VLM sees them
# Each image enters the LM as its label (A, B, REF, ...) followed by its 16 patch tokens; the question
# and its options follow.

# %%
fig = BF.task_examples(runs)
run.save_figure(fig, "task_examples")

# %% [markdown]
# ## 1 · Vision encoder readout vs the VLM's answer
# The readout answers from the trunk's patch tokens alone (depth: a logistic probe on left/right patch
# features fitted on the training questions; correspondence: cosine similarity of the features at the
# points; odd-one-out: the least similar mean feature; style: the closest Gram matrix).

# %%
readout_table, vlm_preds = (BX.benchmark_readout_vs_vlm if LLAVA else BX.readout_vs_vlm)(model, runs, MODEL)
run.save_table(readout_table, "readout_vs_vlm", floatfmt=".1f")
run.save_figure(BF.readout_vs_vlm_bars(readout_table), "readout_vs_vlm")
readout_table.round(1)

# %% [markdown]
# ## 1b · Control rows: the same answer formats, about attributes the VLM was trained on
# One control per format: 2 labelled world images and "which image has a {colour} object ?" beside depth,
# "which image is a {style} ?" beside style; 4 images and "which image has a {background} background ?"
# beside correspondence, "which image shows a {shape} ?" beside odd-one-out (the training questions' own
# words, `vlmlab.blind.corpus.MULTI_QUESTIONS`; exactly one image matches; held-out scenes). Scored like the VLM
# column above; saved as `general_questions`.

# %%
if LLAVA:
    IPython.display.display(IPython.display.Markdown(
        "*No control rows: they are world questions for the embedded VLM; a LLaVA checkpoint is scored on the "
        "real benchmarks only, so `vlm_competent_general` stays not measured.*"))
else:
    controls = BX.control_table(model, list(BX.CONTROLS), P.n_control, P.seed, P.image_size)
    run.save_table(controls, "general_questions", floatfmt=".1f")
    IPython.display.display(IPython.display.Markdown(
        BX.control_summary(controls, vlmlab.blind.claims.NEAR_CHANCE_PTS)))
    IPython.display.display(BX.controls_beside(readout_table, controls).round(1))

# %% [markdown]
# ## 2 · Blind test: the same questions with a white image

# %%
blind, agreement = (BX.benchmark_blind_test if LLAVA else BX.blind_test)(model, runs, MODEL, vlm_preds)
run.save_table(blind, "blind", floatfmt=".3f")
run.save_figure(BF.blind_bars(blind), "blind")
run.save_table(agreement, "blind_agreement", floatfmt=".1f")
blind.pivot_table(index=["task", "option"], columns="condition", values="frequency", sort=False).round(3)

# %%
agreement.round(1)

# %% [markdown]
# ## 3 · Layer-wise probing: is the information still in the LM?
# The same readouts on the LM's hidden states at the image-token positions, at every layer (-1: the
# trunk's tokens themselves). Odd-one-out is read here from the mean token of each image, not from the
# encoder's [CLS] embedding of the table above, so it starts lower.

# %%
layers = (BX.benchmark_layer_probe if LLAVA else BX.layer_probe)(model, runs, MODEL)
run.save_table(layers, "layers", floatfmt=".1f")
run.save_figure(BF.layer_lines(layers, readout_table), "layers")
layers.pivot_table(index="task", columns="layer", values="accuracy", sort=False).round(1)

# %% [markdown]
# ## 4 · Prompt tuning and component fine-tuning, and the letter bias (TV)
# Each variant is trained on the task's training questions (cross-entropy of the correct letter) and
# evaluated on its test questions; the base model is never modified.

# %%
ft_config = FinetuneConfig(steps=P.finetune_steps, batch_size=P.finetune_batch, lora_rank=P.lora_rank, seed=P.seed,
                           **{f"lr_{k}": v for k, v in P.finetune_lrs.items()})
if LLAVA:
    finetune_table, tv = BX.benchmark_finetune_variants(model, runs, MODEL, vlm_preds, P.soft_tokens, P.lora_rank,
                                                        P.components, ft_config, cache=vlmlab.features.FeatureCache())
else:
    finetune_table, tv = BX.finetune_variants(model, runs, MODEL, vlm_preds, P.soft_tokens, P.lora_rank, P.components,
                                              ft_config, workers=P.workers, cache=vlmlab.features.FeatureCache())
run.save_table(finetune_table, "finetune", floatfmt=".1f")
run.save_table(tv, "tv", floatfmt=".3f")
run.save_figure(BF.finetune_bars(finetune_table, readout_table), "finetune")
run.save_figure(BF.tv_bars(tv), "tv")
finetune_table.assign(variant=[BX.variant_label(v, n) for v, n in
                               zip(finetune_table.variant, finetune_table.n_tokens_or_rank)]
                      ).pivot_table(index="task", columns="variant", values="accuracy", sort=False).round(1)

# %%
tv.pivot_table(index="task", columns="variant", values="tv", sort=False).round(3)

# %% [markdown]
# ## Structural check
# Every task has its rows and no number is missing; the paper's findings are checked as claims below.

# %%
gap = float((readout_table.readout_acc - readout_table.vlm_acc).mean())
same = float(agreement.same_answer_blank.mean())
run.log_metric(mean_readout_minus_vlm=gap, mean_same_answer_blank=same)
assert len(readout_table) == len(P.tasks) and len(finetune_table) == len(P.tasks) * (1 + len(P.soft_tokens) + len(P.components))
assert not readout_table[["readout_acc", "vlm_acc"]].isna().any().any() and not finetune_table.accuracy.isna().any()
assert LLAVA or (len(controls) == len(BX.CONTROLS) and not controls.accuracy.isna().any())

# %% [markdown]
# ## Claims
# Each finding of the paper (`vlmlab/blind/claims.py`), checked on this run's saved tables: `holds`, `fails`
# or `not_measured` (with why), and the numbers compared. A failing claim is a finding, reported here and in
# `tables/claims.csv` / `claims.md`; it never fails the run.

# %%
ledger = vlmlab.claims.evaluate(vlmlab.blind.claims.CLAIMS, vlmlab.claims.Evidence.load(run.dir, P))
vlmlab.claims.save(run, ledger)
ledger[["claim_id", "verdict", "paper_value", "ours", "note"]]

# %%
run.finish()
