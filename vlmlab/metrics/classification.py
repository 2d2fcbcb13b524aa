"""Classification metrics: top-1 accuracy, Shannon entropy, mutual information.

Notation (../shared/papers/uniinfo_tta.md §6): p_i = softmax(z_i T^T / tau), rows of (N, C).
    accuracy = 100 * mean_i [argmax_c logits_ic == y_i]                  (percent, top-1)
    H(p)     = -sum_c p_c ln p_c                                          (nats; 0 ln 0 := 0)
    MI       = H(mean_i p_i) - mean_i H(p_i)                              ("infomax")
MI follows ignite's ``MutualInformation`` and UniInfo's per-batch loss term. It is >= 0,
0 when all rows are equal, and at most ln C (C distinct one-hot rows in equal shares).
Everything but ``accuracy`` returns tensors and is differentiable, so TTA losses can use it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["accuracy", "entropy", "mutual_information", "softmax_entropy_from_logits"]


def accuracy(logits_or_pred: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent (0-100).

    Args:
        logits_or_pred: (N, C) scores (argmax over C is the prediction) or (N,) predicted
            class indices.
        labels: (N,) true class indices.

    Returns:
        100 * fraction of rows whose prediction equals the label, as a Python float.
    """
    labels = torch.as_tensor(labels)
    pred = torch.as_tensor(logits_or_pred)
    if pred.dim() == 2:
        pred = pred.argmax(dim=-1)  # (N,)
    elif pred.dim() != 1:
        raise ValueError(f"accuracy: logits_or_pred must be (N, C) logits or (N,) indices, "
                         f"got shape {tuple(pred.shape)}; reshape it first")
    if labels.dim() != 1 or labels.shape[0] != pred.shape[0]:
        raise ValueError(f"accuracy: labels must be (N,) with N = {pred.shape[0]} to match the "
                         f"predictions, got shape {tuple(labels.shape)}")
    if pred.shape[0] == 0:
        raise ValueError("accuracy: no samples (N = 0); pass at least one prediction")
    correct = pred.to(labels.device).long() == labels.long()
    return 100.0 * correct.double().mean().item()


def entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats of each row of probabilities, with 0 ln 0 = 0.

    Args:
        probs: (N, C) rows of probabilities (any leading shape (..., C) works).

    Returns:
        (N,) entropies, same dtype and device as ``probs``.
    """
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def softmax_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per row, stable for large logits (uses log_softmax).

    Args:
        logits: (N, C) unnormalised scores (any leading shape (..., C) works).

    Returns:
        (N,) entropies in nats.
    """
    log_p = F.log_softmax(logits, dim=-1)  # (N, C)
    return -(log_p.exp() * log_p).sum(dim=-1)


def mutual_information(probs: Tensor) -> Tensor:
    """Mutual information between input and prediction, H(mean_i p_i) - mean_i H(p_i).

    Args:
        probs: (N, C) rows of probabilities.

    Returns:
        0-dim tensor (nats), differentiable.
    """
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"mutual_information: probs must be (N, C) with N >= 1, got shape "
                         f"{tuple(probs.shape)}")
    return entropy(probs.mean(dim=0)) - entropy(probs).mean()
