"""The registry-wide contract (timm style): every method builds, runs a stream, leaves the model alone."""
from __future__ import annotations

import pytest
import torch

from vlmlab.tta import METHODS, build, run_stream
from vlmlab.tta.base import Batch, TTAMethod, make_views, random_resized_boxes, stream_order

from tta_helpers import FAST, same_state, state_checksum


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


def test_raw_views_crop_the_file_as_the_references_random_resized_crop(bundle, toy_stream):
    """view_source "raw": view 0 is the served input, view v a bilinear RandomResizedCrop(S) and flip of the raw
    array drawn on view_rng(seed, item, v), i.e. torchvision's crop of those parameters; "served" is unchanged."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    from vlmlab.data.augment import crop_params, view_rng
    from vlmlab.tta.base import _fetch, encode_raw_views, encode_single, encode_views, view_seed

    src, idx = toy_stream.images, torch.tensor([1, 4])
    raw = encode_raw_views(bundle, src, idx, 5, seed=7)
    torch.testing.assert_close(raw[:, 0], encode_single(bundle, src(idx)), atol=1e-5, rtol=1e-5)
    pixels = torch.from_numpy(src.images[4]).permute(2, 0, 1).float() / 255
    rng = view_rng(7, 4, 3)
    top, left, h, w = crop_params(64, 64, rng, (0.08, 1.0))
    want = TF.resized_crop(pixels, top, left, h, w, [64, 64], interpolation=InterpolationMode.BILINEAR, antialias=True)
    want = TF.horizontal_flip(want) if rng.random() < 0.5 else want
    x = bundle.normalize_pixels(want.clamp(0, 1)[None])
    torch.testing.assert_close(raw[1, 3], encode_single(bundle, x)[0], atol=1e-5, rtol=1e-5)
    m = build("tpt", n_views=5)
    raw_stream = toy_stream.subset(torch.arange(6))
    raw_stream.view_source, raw_stream.view_seed = "raw", 7
    torch.testing.assert_close(_fetch(m, raw_stream, idx, bundle).views, raw)
    served = _fetch(m, toy_stream, idx, bundle).views
    torch.testing.assert_close(served, encode_views(bundle, src(idx), 5, [view_seed(0, i) for i in (1, 4)]))
    assert not torch.allclose(served[:, 1:], raw[:, 1:], atol=1e-3)
    assert toy_stream.view_source == "served" and raw_stream.subset(idx).view_source == "raw"
    with pytest.raises(ValueError, match="served"):
        type(toy_stream)(toy_stream.labels, view_source="file")


def test_cached_views_key_keeps_the_served_spec_and_separates_raw(bundle, toy_stream, tmp_path):
    """The served views' cache key is the one caches already hold; raw views get their own."""
    from vlmlab.features import FeatureCache
    from vlmlab.tta.evaluate import cached_views

    class _Cache(FeatureCache):
        specs = []

        def get(self, spec):
            self.specs.append(spec)

    class _Data:
        images, key = toy_stream.images.images, "toy"

    cache, idx = _Cache(tmp_path), torch.tensor([0, 2])
    served = cached_views(bundle, _Data, idx, 4, 3, cache)
    raw = cached_views(bundle, _Data, idx, 4, 3, cache, source="raw")
    assert cache.specs[0]["transform"] == "views:V=4:rrc(0.08,1)+hflip:roi_align-bilinear:64"
    assert cache.specs[1]["transform"] == "views:V=4:rrc(0.08,1)+hflip:raw-rrc-bilinear:64"
    torch.testing.assert_close(served[:, 0], raw[:, 0])
    assert not torch.allclose(served[:, 1:], raw[:, 1:], atol=1e-3)
