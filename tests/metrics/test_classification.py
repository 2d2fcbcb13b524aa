"""Closed forms and independent computations for vlmlab.metrics.classification."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from vlmlab.metrics import accuracy, entropy, mutual_information, softmax_entropy_from_logits


def test_accuracy_from_logits_and_indices():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])  # rows 0 and 1 right
    assert accuracy(logits, labels) == pytest.approx(50.0)
    assert accuracy(torch.tensor([1, 1, 2]), torch.tensor([1, 0, 2])) == pytest.approx(200 / 3)
    assert accuracy(torch.tensor([0, 1]), torch.tensor([0, 1])) == 100.0
    assert isinstance(accuracy(logits, labels), float)


def test_accuracy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        accuracy(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="logits_or_pred"):
        accuracy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))


def test_entropy_closed_forms():
    c = 7
    assert entropy(torch.full((3, c), 1.0 / c)) == pytest.approx(torch.full((3,), math.log(c)))
    one_hot = torch.eye(c)
    h = entropy(one_hot)
    assert torch.isfinite(h).all() and torch.equal(h, torch.zeros(c))  # 0 ln 0 = 0
    assert entropy(torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(math.log(2))


def test_entropy_matches_scipy():
    p = torch.softmax(torch.randn(5, 9, generator=torch.Generator().manual_seed(0)), -1)
    ref = scipy.stats.entropy(p.numpy(), axis=-1)
    np.testing.assert_allclose(entropy(p).numpy(), ref, rtol=1e-5)


def test_softmax_entropy_from_logits_matches_and_is_stable():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(softmax_entropy_from_logits(logits),
                               entropy(torch.softmax(logits, -1)))
    big = torch.tensor([[1e4, 0.0, 0.0], [1e4, 1e4, -1e4]])
    h = softmax_entropy_from_logits(big)
    assert torch.isfinite(h).all()
    assert h[0].item() == pytest.approx(0.0, abs=1e-6)
    assert h[1].item() == pytest.approx(math.log(2), abs=1e-6)


def test_mutual_information_closed_forms():
    row = torch.softmax(torch.randn(4), -1)
    assert mutual_information(row.repeat(10, 1)).item() == pytest.approx(0.0, abs=1e-6)
    c = 5
    assert mutual_information(torch.eye(c)).item() == pytest.approx(math.log(c))
    assert mutual_information(torch.eye(c).repeat(3, 1)).item() == pytest.approx(math.log(c))


def test_mutual_information_independent_numpy():
    p = torch.softmax(3 * torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), -1)
    q = p.double().numpy()
    ref = scipy.stats.entropy(q.mean(0)) - scipy.stats.entropy(q, axis=-1).mean()
    mi = mutual_information(p)
    assert mi.dim() == 0 and mi.item() == pytest.approx(ref, rel=1e-5)
    assert mi.item() > 0


def test_mutual_information_is_differentiable():
    logits = torch.randn(4, 3, requires_grad=True)
    mutual_information(torch.softmax(logits, -1)).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
