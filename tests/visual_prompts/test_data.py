"""Notebook 04's splits of a torchvision set (CIFAR, SVHN, CLEVR): disjoint train and val, none empty."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import vlmlab.visual_prompts.data as vpd


class _Fake:
    """A torchvision-like set: labels, class names, subsets by index."""

    def __init__(self, labels, idx=None):
        self.all_labels = torch.as_tensor(labels)
        self.idx = np.arange(len(labels)) if idx is None else np.asarray(idx)
        self.classnames = ["a", "b", "c"]

    @property
    def labels(self):
        return self.all_labels[self.idx]

    def subset(self, indices):
        return _Fake(self.all_labels, self.idx[np.asarray(indices)])

    def __len__(self):
        return len(self.idx)


@pytest.mark.parametrize("shots", [None, 5])
def test_torchvision_train_and_val_are_disjoint_and_val_is_never_empty(monkeypatch, shots):
    labels = np.repeat([0, 1, 2], 30)
    monkeypatch.setattr(vpd, "_torchvision", lambda name, root, train: _Fake(labels if train else labels[:12]))
    s = vpd.load_splits("CIFAR10", shots=shots, n_val=4, n_test=None, seed=0, root="/nowhere")
    tr, va = set(s.train.idx.tolist()), set(s.val.idx.tolist())
    assert not tr & va
    assert torch.bincount(s.val.labels).tolist() == [4, 4, 4]
    assert torch.bincount(s.train.labels).tolist() == ([26] * 3 if shots is None else [5] * 3)
    if shots is None:
        assert tr | va == set(range(90))                  # the whole train split: shots and val together


def test_clevr_counts_become_class_indices_of_its_count_names(monkeypatch):
    """torchvision's CLEVRClassification labels are object counts 3-10; class c is named str(c + 3)."""
    import torchvision.datasets as tvd
    from PIL import Image

    class FakeCLEVR:
        def __init__(self, root, split, download):
            self._labels = [3, 5, 10, 8]

        def __getitem__(self, i):
            return Image.new("RGB", (4, 4)), self._labels[i]

        def __len__(self):
            return 4

    monkeypatch.setattr(tvd, "CLEVRClassification", FakeCLEVR, raising=False)
    ds = vpd._torchvision("CLEVR", vpd.Path("/nowhere"), True)
    assert ds.labels.tolist() == [0, 2, 7, 5]
    assert [ds.classnames[c] for c in ds.labels.tolist()] == ["3", "5", "10", "8"]
    assert ds[2][1] == 7
    monkeypatch.setattr(FakeCLEVR, "__init__", lambda self, root, split, download: setattr(self, "_labels", [2, 3]))
    with pytest.raises(ValueError, match="outside its 8 classes"):
        vpd._torchvision("CLEVR", vpd.Path("/nowhere"), True)


def test_the_gap_sample_is_seeded_and_spans_the_classes_of_a_class_ordered_test_set():
    from vlmlab.visual_prompts.evaluate import gap_sample
    labels = np.repeat(np.arange(45), 140)                          # RESISC45's test split, class by class
    test = _Fake(labels)
    assert gap_sample(test, None, 0) is test and gap_sample(test, len(labels), 0) is test
    a, b = gap_sample(test, 5000, 0), gap_sample(test, 5000, 0)
    assert len(a) == 5000 and np.array_equal(a.idx, b.idx) and np.all(np.diff(a.idx) > 0)
    assert len(torch.unique(a.labels)) == 45                        # a prefix of 5,000 holds 36 classes
    assert len(np.unique(labels[:5000])) == 36
    assert not np.array_equal(gap_sample(test, 5000, 1).idx, a.idx)
