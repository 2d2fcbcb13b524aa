"""Seeded K-shot sampling (CoOp protocol, ``coop.md`` §4).

CoOp/Dassl draw K items per class from the train split with Python's ``random.sample`` after the
global seed is set, so the picks depend on Python's random state; they cannot be matched bit for
bit. Here each class ``c`` gets its own permutation from ``torch.Generator`` seeded with
``(seed, c)``, and the K shots are its first K entries. So the draw is deterministic per seed,
independent of the other classes and without replacement. With ``nested=True`` (the default) the
1-shot set is inside the 2-shot set, and so on, which makes shot curves less noisy; CoOp draws every K
on its own (Dassl's ``generate_fewshot_dataset`` after the run's seed), which ``nested=False`` does: the
permutation is seeded with ``(seed, K, c)``. CoOp's validation subset uses ``min(K, 4)`` shots per class
(``sample_few_shot(val_labels, min(K, 4), seed)``). CoOp's linear probe (lpclip) draws its own shots with
numpy instead; ``sample_lpclip`` makes that draw.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from vlmlab.runtime import get_logger

log = get_logger("vlmlab.data.fewshot")


def _as_labels(labels: Tensor | Sequence[int] | np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).long().cpu()


DRAWS = ("independent", "nested")


def _class_perm(members: Tensor, seed: int, c: int, shots: int | None = None) -> Tensor:
    """Class c's seeded permutation; ``shots`` given: a permutation of its own for that K."""
    s = int(seed) * 1_000_003 + int(c) + (0 if shots is None else int(shots) * 1_000_000_007)
    g = torch.Generator().manual_seed(s)
    return members[torch.randperm(len(members), generator=g)]


def check_draws(draws: str) -> bool:
    """``True`` for "nested" draws, ``False`` for "independent" (CoOp's); anything else raises."""
    if draws not in DRAWS:
        raise ValueError(f"few-shot draws {draws!r}; use one of {DRAWS}")
    return draws == "nested"


def sample_few_shot(labels: Tensor | Sequence[int] | np.ndarray, shots: int, seed: int,
                    n_classes: int | None = None, nested: bool = True) -> Tensor:
    """Indices of ``shots`` samples per class, drawn without replacement.

    Args:
        labels: (N,) integer labels of the pool (e.g. the train split).
        shots: K, samples per class; a class with fewer gives all it has (with a warning).
        seed: the draw's seed; the same seed gives the same indices.
        n_classes: number of classes (default ``labels.max() + 1``).
        nested: the first ``shots`` of one permutation per (seed, class), so a smaller K's draw lies inside a
            larger one's; ``False``: a permutation per (seed, K, class), every K drawn on its own (CoOp's).
    Returns:
        (sum_c min(K, N_c),) int64 indices into ``labels``, ascending.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    y = _as_labels(labels)
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    picks, short = [], []
    for c in range(n_classes):
        members = torch.nonzero(y == c).flatten()
        if len(members) < shots:
            short.append((c, len(members)))
        picks.append(_class_perm(members, seed, c, None if nested else shots)[:shots])
    if short:
        log.warning("%d class(es) have fewer than %d samples; taking all they have: %s",
                    len(short), shots, ", ".join(f"class {c}: {k}" for c, k in short[:10]))
    return torch.sort(torch.cat(picks)).values if picks else torch.zeros(0, dtype=torch.long)


def sample_lpclip(train_labels: Tensor | Sequence[int] | np.ndarray, val_labels: Tensor | Sequence[int] | np.ndarray,
                  shots: int, seed: int) -> tuple[Tensor, Tensor]:
    """The linear probe's own K-shot draw, as CoOp's ``lpclip/linear_probe.py`` makes it (KaiyangZhou/CoOp ff61507).

    numpy's legacy generator seeded with ``seed`` (``np.random.seed(seed)``), then for every class present in the
    train labels, in ascending order, ``choice(<its indices in dataset order>, K, replace=False)``; then, from the
    same stream, ``min(K, 4)`` per class of the validation labels (lpclip's ``val_shot_list``).

    Returns:
        ``(train_indices, val_indices)``: int64, class by class in draw order (the order lpclip fits them in).
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = np.random.RandomState(seed)                      # the state np.random.seed(seed) gives the global one
    y_train, y_val = _as_labels(train_labels).numpy(), _as_labels(val_labels).numpy()
    out = []
    for y, k in ((y_train, shots), (y_val, min(shots, 4))):
        picks = [rng.choice(np.where(y == c)[0], size=k, replace=False) for c in np.unique(y_train)]
        out.append(torch.from_numpy(np.concatenate(picks).astype(np.int64)))
    return out[0], out[1]


def split_support(indices: Tensor | Sequence[int], labels: Tensor | Sequence[int] | np.ndarray,
                  val_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split a support set into train and validation parts, per class, to tune hyperparameters.

    Args:
        indices: (M,) indices of the support set (e.g. from ``sample_few_shot``).
        labels: (N,) labels of the whole pool that ``indices`` point into.
        val_per_class: validation items per class; each class keeps at least one train item
            (a class with ``<= val_per_class`` items gives ``n_c - 1`` to validation, with a warning).
        seed: the split's seed.
    Returns:
        ``(train_indices, val_indices)``, both ascending subsets of ``indices``, disjoint.
    """
    idx = torch.as_tensor(indices).long().cpu()
    y = _as_labels(labels)[idx]
    train, val, short = [], [], []
    for c in torch.unique(y).tolist():
        members = _class_perm(idx[y == c], seed + 7919, c)
        k = min(val_per_class, len(members) - 1)
        if k < val_per_class:
            short.append(c)
        val.append(members[:k])
        train.append(members[k:])
    if short:
        log.warning("split_support: %d class(es) too small for %d validation items; each kept one for training",
                    len(short), val_per_class)
    cat = lambda xs: torch.sort(torch.cat(xs)).values if xs else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return cat(train), cat(val)
