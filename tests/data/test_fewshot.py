"""Seeded K-shot sampling: exact counts, determinism, no duplicates, nesting, support split."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vlmlab.data import sample_few_shot, split_support


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(5).repeat_interleave(torch.tensor([20, 7, 16, 30, 9]))[torch.randperm(82, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("shots", [1, 2, 4])
def test_exact_per_class_counts_without_duplicates(labels, shots):
    idx = sample_few_shot(labels, shots, seed=1)
    assert torch.bincount(labels[idx], minlength=5).tolist() == [shots] * 5
    assert len(torch.unique(idx)) == len(idx) and idx.dtype == torch.long
    assert torch.equal(idx, torch.sort(idx).values)


def test_deterministic_per_seed_and_seeds_differ(labels):
    a, b = sample_few_shot(labels, 4, seed=3), sample_few_shot(labels.numpy(), 4, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_few_shot(labels, 4, seed=4))


def test_nested_across_shots(labels):
    small, big = sample_few_shot(labels, 2, seed=5), sample_few_shot(labels, 8, seed=5)
    assert set(small.tolist()) <= set(big.tolist())


@pytest.mark.parametrize("shots", [1, 2, 4])
def test_independent_draws_count_exactly_and_are_deterministic(labels, shots):
    idx = sample_few_shot(labels, shots, seed=1, nested=False)
    assert torch.bincount(labels[idx], minlength=5).tolist() == [shots] * 5
    assert len(torch.unique(idx)) == len(idx) and torch.equal(idx, torch.sort(idx).values)
    assert torch.equal(idx, sample_few_shot(labels.numpy(), shots, seed=1, nested=False))


def test_independent_draws_do_not_nest_and_match_their_own_permutation(labels):
    """CoOp draws each K on its own: the 2-shot set is not the start of the 8-shot permutation."""
    from vlmlab.data.fewshot import _class_perm
    small, big = (sample_few_shot(labels, k, seed=5, nested=False) for k in (2, 8))
    assert not set(small.tolist()) <= set(big.tolist())
    members = torch.nonzero(labels == 3).flatten()
    mine = set(small[labels[small] == 3].tolist())
    assert mine == set(_class_perm(members, 5, 3, 2)[:2].tolist())
    assert mine != set(_class_perm(members, 5, 3)[:2].tolist())           # the nested draw's two


def test_draws_are_named():
    from vlmlab.data.fewshot import check_draws
    assert check_draws("nested") is True and check_draws("independent") is False
    with pytest.raises(ValueError, match="few-shot draws"):
        check_draws("fresh")


def test_small_class_takes_all_and_warns(labels, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("vlmlab"), "propagate", True)   # let caplog see vlmlab's records
    with caplog.at_level(logging.WARNING, logger="vlmlab"):
        idx = sample_few_shot(labels, 8, seed=0)
    counts = torch.bincount(labels[idx], minlength=5).tolist()
    assert counts == [8, 7, 8, 8, 8]
    assert "fewer than 8" in caplog.text


def test_class_draw_independent_of_other_classes(labels):
    """Removing class 4 does not change the picks of classes 0..3 (per-class seeded streams)."""
    keep = torch.nonzero(labels != 4).flatten()
    sub = keep[sample_few_shot(labels[keep], 3, seed=9)]
    full = sample_few_shot(labels, 3, seed=9)
    assert set(sub.tolist()) == {i for i in full.tolist() if labels[i] != 4}


def test_n_classes_with_empty_class(labels):
    idx = sample_few_shot(labels, 2, seed=0, n_classes=7)
    assert torch.bincount(labels[idx], minlength=7).tolist() == [2] * 5 + [0, 0]


def test_split_support(labels):
    support = sample_few_shot(labels, 4, seed=2)
    train, val = split_support(support, labels, val_per_class=1, seed=0)
    assert set(train.tolist()) | set(val.tolist()) == set(support.tolist())
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val], minlength=5).tolist() == [1] * 5
    assert torch.bincount(labels[train], minlength=5).tolist() == [3] * 5
    again = split_support(support, np.asarray(labels), val_per_class=1, seed=0)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    one_shot = sample_few_shot(labels, 1, seed=2)
    tr, va = split_support(one_shot, labels, val_per_class=2, seed=0)
    assert torch.equal(tr, one_shot) and len(va) == 0                 # each class keeps its one shot
