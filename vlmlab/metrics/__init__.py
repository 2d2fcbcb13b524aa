"""Metrics: pure tensor -> number functions (layer L1; imports torch, numpy, scipy, POT only).

classification: accuracy, entropy, mutual information.
embedding: uniformity (poster / Wang & Isola / UniInfo variants), modality gap (centroid, EMD).
distribution: Frechet distance, total variation, answer histograms, LPIPS-style distance.
Formulas and sources: each module's docstring and ../shared/papers/uniinfo_tta.md §3, §6.
"""
from __future__ import annotations

from vlmlab.metrics.classification import (accuracy, entropy, mutual_information,
                                           softmax_entropy_from_logits)
from vlmlab.metrics.distribution import (answer_distribution, frechet_distance,
                                         perceptual_distance, total_variation)
from vlmlab.metrics.embedding import (modality_gap_centroid, modality_gap_emd, uniformity_loss,
                                      uniformity_per_batch)

__all__ = [
    "accuracy", "entropy", "mutual_information", "softmax_entropy_from_logits",
    "uniformity_loss", "uniformity_per_batch", "modality_gap_centroid", "modality_gap_emd",
    "frechet_distance", "total_variation", "answer_distribution", "perceptual_distance",
]
