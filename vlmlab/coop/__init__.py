"""CoOp: context optimisation for prompting CLIP (Zhou et al., IJCV 2022, arXiv:2109.01134).

    learner   vlmlab.prompts.PromptLearner (shared with TPT)
    train     CoOpConfig, train_coop (modes "exact" and "cached"), lr_at, coop_logits
    batched   train_coop_batched: R cached-mode runs at once, one text-tower pass per step
    augment   CoOp's random-resized-crop + flip views, cached view features
    variants  Variant / parse_variant ("M16_end", "M16_middle_csc", "M4_end_photo@16")
    data      load_splits, CUSTOM_TEMPLATES, dg_target
    sweep     run_sweep: datasets x shots x seeds x variants + zero-shot and linear probe
    report    mean ± std tables, domain generalization, the grid figure
    words     nearest_words, nearest_words_table
"""
from __future__ import annotations

from vlmlab.coop.augment import eval_features, view_features
from vlmlab.coop.batched import train_coop_batched
from vlmlab.coop.data import CUSTOM_TEMPLATES, Splits, dg_target, load_splits
from vlmlab.coop.report import domain_generalization, grid_figure, summary_tables
from vlmlab.coop.sweep import COLUMNS, Sweep, run_sweep
from vlmlab.coop.train import CoOpConfig, CoOpResult, TrainSet, coop_logits, lr_at, train_coop
from vlmlab.coop.variants import Variant, parse_variant
from vlmlab.coop.words import nearest_words, nearest_words_table

__all__ = ["CoOpConfig", "CoOpResult", "TrainSet", "train_coop", "train_coop_batched", "coop_logits", "lr_at", "Variant", "parse_variant",
           "load_splits", "Splits", "dg_target", "CUSTOM_TEMPLATES", "run_sweep", "Sweep", "COLUMNS",
           "summary_tables", "domain_generalization", "grid_figure", "nearest_words", "nearest_words_table",
           "eval_features", "view_features"]
