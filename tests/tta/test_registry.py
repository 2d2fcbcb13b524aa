"""The registry-wide contract (timm style): every method builds, runs a stream, leaves the model alone."""
from __future__ import annotations

import pytest
import torch

from vlmlab.tta import METHODS, build, run_stream
from vlmlab.tta.base import Batch, TTAMethod, make_views, random_resized_boxes, stream_order

from conftest import FAST, same_state, state_checksum


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, toy_stream, ctx):
    method = build(name, **FAST.get(name, {}) | ({"shots": 2} if name in ("linear_probe", "tip_adapter") else {}))
    assert type(method).__module__ == f"vlmlab.tta.{name}"               # registry key = module name
    before = state_checksum(ctx.bundle)
    method.setup(ctx)
    logits = run_stream(method, toy_stream, seed=0)
    assert logits.shape == (len(toy_stream), len(ctx.classnames))
    assert logits.isfinite().all()
    assert same_state(state_checksum(ctx.bundle), before), f"{name} modified the shared model"
    again = run_stream(method, toy_stream, seed=0)                       # a fresh stream starts from scratch
    torch.testing.assert_close(again, logits)


def test_build_rejects_unknown_names_and_keys():
    with pytest.raises(KeyError, match="unknown TTA method 'tent'"):
        build("tent")
    with pytest.raises(KeyError, match=r"TDAConfig has no field\(s\) \['pos_betta'\]"):
        build("tda", pos_betta=1.0)


class _Counter(TTAMethod):
    """Static toy method: logits = one-hot of the dataset index mod C; counts resets."""
    regime = "episodic"
    inputs = ()

    def reset(self):
        self.resets = getattr(self, "resets", 0) + 1
        self.seen = 0

    def predict(self, batch: Batch):
        self.seen += len(batch.index)
        assert self.seen == 1, "episodic methods must see one image between resets"
        return torch.nn.functional.one_hot(batch.index % 3, 3).float()


def test_runner_returns_dataset_order_and_resets_episodic_methods(toy_stream, ctx):
    m = _Counter()
    m.setup(ctx)
    out = run_stream(m, toy_stream, seed=3, shuffle=True)
    assert torch.equal(out.argmax(1), torch.arange(len(toy_stream)) % 3)
    assert m.resets == len(toy_stream) + 1                                 # stream start + every image
    assert not torch.equal(stream_order(6, 3), torch.arange(6))


def test_views_keep_the_original_and_are_seeded():
    x = torch.rand(2, 3, 16, 16)
    v = make_views(x, 5, seeds=[1, 2])
    assert v.shape == (2, 5, 3, 16, 16)
    torch.testing.assert_close(v[:, 0], x)
    torch.testing.assert_close(make_views(x, 5, seeds=[1, 2]), v)
    assert not torch.allclose(make_views(x, 5, seeds=[1, 3])[1], v[1])
    full = make_views(x, 2, seeds=[0, 0], scale=(1.0, 1.0))[:, 1]        # whole-image crop: x or its mirror
    for i in range(2):
        assert torch.allclose(full[i], x[i], atol=1e-5) or torch.allclose(full[i], x[i].flip(-1), atol=1e-5)


def test_random_resized_boxes_follow_the_area_and_ratio_rule():
    boxes = random_resized_boxes(200, 64, torch.Generator().manual_seed(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    area = w * h / 64 ** 2
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0
    ratio = w / h
    assert (ratio > 0.7).all() and (ratio < 1.45).all()


def test_measure_cost_reports_time_memory_and_device(toy_stream, ctx):
    from vlmlab.tta import measure_cost

    m = build("no_adapt")
    m.setup(ctx)
    cost = measure_cost(m, toy_stream)                      # no cached features: the encoder is timed
    assert set(cost) == {"ms_per_image", "peak_mem_mb", "device"}
    assert cost["ms_per_image"] > 0 and cost["peak_mem_mb"] >= 0 and cost["device"].startswith("cpu")
