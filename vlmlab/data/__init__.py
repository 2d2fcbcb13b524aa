"""Datasets: real-data loaders (paper profile), few-shot sampling, corruptions.

The procedural world of the embedded profile lives in ``vlmlab.world``.
"""
from __future__ import annotations

# ---- base ---------------------------------------------------------------------------------
from vlmlab.data.base import DatasetNotFound, ImageDataset, ImageReadError, load_rgb

# ---- real datasets (paper profile) ---------------------------------------------------------
from vlmlab.data.real import (
    COOP_DATASETS,
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA,
    coop_dataset,
    imagenet_1k_wnids,
    imagenet_a,
    imagenet_c,
    imagenet_r,
    imagenet_sketch,
    imagenet_v2,
    imagenet_val,
    read_classnames,
)

# ---- few-shot ------------------------------------------------------------------------------
from vlmlab.data.fewshot import sample_few_shot, split_support

# ---- corruptions (vlmlab/data/corruptions.py; add its imports below) -----------------------

from vlmlab.data.corruptions import ALL as CORRUPTIONS_ALL
from vlmlab.data.corruptions import COMMON as CORRUPTIONS
from vlmlab.data.corruptions import EXTRA as CORRUPTIONS_EXTRA
from vlmlab.data.corruptions import corrupt_dataset, corrupt_image, corrupt_images
from vlmlab.data.sources import corrupted, load_source
