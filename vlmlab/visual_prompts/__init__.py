"""Visual prompting (Bahng et al., "Exploring Visual Prompts for Adapting Large-Scale Models", arXiv:2203.17274).

    prompters  padding / fixed_patch / random_patch: a learned prompt added to the normalised image
    train      VPConfig (the reference's SGD lr 40, warm-up + cosine), train_prompt, heads, predict
    gap        fid, lpips (set-level LPIPS-style distance), EncoderFeatures / InceptionFeatures / LpipsNet
    data       load_splits (world, CoOp, torchvision, folder datasets), load_reference
    evaluate   run_visual_prompting, measure_gaps, assemble, correlation (notebook 04)
    figures    gain_vs_gap, prompter_bars, prompt_images
"""
from __future__ import annotations

from vlmlab.visual_prompts.data import Splits, load_reference, load_splits
from vlmlab.visual_prompts.evaluate import (COLUMNS, CORRELATION_COLUMNS, VPRun, assemble, correlation,
                                            gain_summary, measure_gaps, run_visual_prompting, vp_config)
from vlmlab.visual_prompts.gap import (EncoderFeatures, GapFeatures, InceptionFeatures, LpipsGap, LpipsNet, fid,
                                       gap_features, lpips, to_uint8)
from vlmlab.visual_prompts.prompters import (PROMPTERS, FixedPatchPrompter, PadPrompter, Prompter,
                                             RandomPatchPrompter, build_prompter, fixed_patch, padding, random_patch)
from vlmlab.visual_prompts.train import (LinearHead, TextHead, VPConfig, VPResult, clip_head, encode, eval_view, lr_at,
                                         model_inputs, predict, refine_classname, train_prompt, vision_head)

__all__ = ["PROMPTERS", "Prompter", "PadPrompter", "FixedPatchPrompter", "RandomPatchPrompter", "padding",
           "fixed_patch", "random_patch", "build_prompter", "VPConfig", "VPResult", "lr_at", "refine_classname",
           "TextHead", "LinearHead", "clip_head", "eval_view", "vision_head", "model_inputs", "encode", "predict",
           "train_prompt",
           "GapFeatures", "EncoderFeatures", "InceptionFeatures", "LpipsNet", "LpipsGap", "to_uint8", "gap_features",
           "fid", "lpips", "Splits", "load_splits", "load_reference", "COLUMNS", "CORRELATION_COLUMNS", "VPRun",
           "vp_config", "run_visual_prompting", "measure_gaps", "assemble", "correlation", "gain_summary"]
