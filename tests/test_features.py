"""Feature extraction and the on-disk cache, on a tiny random-init open_clip model."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

import vlmlab.features as features
from vlmlab.data import ImageDataset
from vlmlab.features import FeatureCache, extract, extract_arrays, transform_id



@pytest.fixture(scope="module")
def bundle(tiny_clip):
    return tiny_clip


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """(10, 48, 48, 3) uint8, smooth enough that resampling differences stay small."""
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.integers(0, 256, (10, 3, 6, 6)).astype(np.float32))
    big = F.interpolate(small, size=(48, 48), mode="bilinear", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


class PILDataset(Dataset):
    def __init__(self, arrays, labels, key="pil-toy"):
        self.arrays, self.labels, self.key = arrays, labels, key

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return Image.fromarray(self.arrays[i]), int(self.labels[i])


@pytest.fixture
def folder_ds(tmp_path, images) -> ImageDataset:
    samples = []
    for i, arr in enumerate(images[:6]):
        path = tmp_path / "imgs" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(path)
        samples.append((path, i % 3))
    return ImageDataset(samples, ["a", "b", "c"], "toy", root=tmp_path / "imgs")


def counting(monkeypatch, bundle) -> list[int]:
    calls, inner = [], bundle.encode_images
    monkeypatch.setattr(bundle, "encode_images", lambda x, **kw: calls.append(len(x)) or inner(x, **kw))
    return calls


def test_shape_normalised_and_labels(bundle, folder_ds):
    out = extract(bundle, folder_ds, batch_size=4)
    assert out.feats.shape == (6, bundle.embed_dim) and out.feats.dtype == torch.float32
    torch.testing.assert_close(out.feats.norm(dim=-1), torch.ones(6))
    assert out.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_matches_direct_encoding(bundle, folder_ds):
    out = extract(bundle, folder_ds, batch_size=4)
    x = torch.stack([bundle.preprocess(Image.open(p).convert("RGB")) for p in folder_ds.paths])
    with torch.no_grad():
        ref = F.normalize(bundle.model.encode_image(x), dim=-1)
    torch.testing.assert_close(out.feats, ref, atol=1e-5, rtol=1e-4)


def test_cache_hit_is_identical_and_skips_the_model(bundle, folder_ds, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    calls = counting(monkeypatch, bundle)
    first = extract(bundle, folder_ds, batch_size=4, cache=cache)
    assert sum(calls) == 6
    second = extract(bundle, folder_ds, batch_size=4, cache=cache)
    assert sum(calls) == 6                                   # no new model call
    assert torch.equal(first.feats, second.feats) and torch.equal(first.labels, second.labels)
    assert first.key == second.key
    sidecar = json.loads((tmp_path / "cache" / f"{first.key}.json").read_text())
    assert sidecar["model"] == bundle.identity and sidecar["dataset"] == folder_ds.key


def test_key_changes_with_dataset_model_transform_seed(bundle, folder_ds, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    base = extract(bundle, folder_ds, cache=cache).key
    variants = {
        "dataset": extract(bundle, folder_ds.subset([0, 1, 2]), cache=cache).key,
        "model": extract(dataclasses.replace(bundle, weights_id="other"), folder_ds, cache=cache).key,
        "transform": extract(bundle, folder_ds.with_transform(lambda im: bundle.preprocess(im.rotate(90))),
                             cache=cache).key,
        "seed": extract(bundle, folder_ds, cache=cache, seed=1).key,
    }
    assert len({base, *variants.values()}) == 5, variants
    assert extract(bundle, folder_ds, cache=cache).key == base


def test_transform_id_is_stable_and_explicit():
    f = lambda im: im  # noqa: E731
    assert "0x" not in transform_id(f) and transform_id("resize224") == "resize224"
    assert transform_id(None) == "none"


def test_atomic_write_leaves_no_file_on_crash(bundle, folder_ds, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")

    def crash(tensors, path, **kw):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt("killed midway")

    monkeypatch.setattr(features, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        extract(bundle, folder_ds, cache=cache)
    assert not list((tmp_path / "cache").glob("*.safetensors")) and not list((tmp_path / "cache").glob(".tmp-*"))
    monkeypatch.undo()
    out = extract(bundle, folder_ds, cache=cache)
    assert cache.get(out.spec) is not None


def test_damaged_cache_file_is_a_miss(bundle, folder_ds, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    out = extract(bundle, folder_ds, cache=cache)
    cache.path(out.spec).write_bytes(b"garbage")
    assert cache.get(out.spec) is None
    torch.testing.assert_close(extract(bundle, folder_ds, cache=cache).feats, out.feats)


def test_tensor_items_and_autograd(bundle, images, tmp_path):
    x = torch.stack([bundle.preprocess(Image.fromarray(a)) for a in images[:5]])
    out = extract(bundle, TensorDataset(x, torch.arange(5)), batch_size=2, key="tensors")
    with torch.no_grad():
        torch.testing.assert_close(out.feats, F.normalize(bundle.model.encode_image(x), dim=-1), atol=1e-5, rtol=1e-4)
    w = torch.zeros(bundle.embed_dim, 3, requires_grad=True)
    (out.feats @ w).sum().backward()                         # not an inference tensor
    assert w.grad is not None
    with pytest.raises(ValueError, match="key"):
        extract(bundle, TensorDataset(x, torch.arange(5)), cache=FeatureCache(tmp_path / "cache"))


@pytest.mark.parametrize("crop", ["resize", "same-size", "non-square"])
def test_extract_arrays_matches_pil_pipeline(bundle, images, crop):
    """Same features as PIL + bundle.preprocess (Resize bicubic, CenterCrop) within 5e-3;
    features of different images differ by ~1e-1 on this model."""
    arrs = {"resize": images, "same-size": images[:, 8:40, 8:40], "non-square": images[:, :, 4:44]}[crop]
    labels = np.arange(len(arrs)) % 4
    fast = extract_arrays(bundle, arrs, labels, key="toy", batch_size=4)
    slow = extract(bundle, PILDataset(arrs, labels), batch_size=4)
    assert fast.feats.shape == (len(arrs), bundle.embed_dim) and torch.equal(fast.labels, slow.labels)
    cos = (fast.feats * slow.feats).sum(-1)
    assert cos.min() > 0.9999, cos
    torch.testing.assert_close(fast.feats, slow.feats, atol=5e-3, rtol=0)


def test_extract_arrays_cache_and_torch_input(bundle, images, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    calls = counting(monkeypatch, bundle)
    a = extract_arrays(bundle, images, np.zeros(10), key="toy", cache=cache, batch_size=4)
    b = extract_arrays(bundle, torch.from_numpy(images), torch.zeros(10), key="toy", cache=cache, batch_size=4)
    assert len(calls) == 3 and torch.equal(a.feats, b.feats)
    c = extract_arrays(bundle, images[:, :40], np.zeros(10), key="toy", cache=cache)
    assert c.key != a.key                                    # the shape is part of the key
    with pytest.raises(ValueError, match="labels"):
        extract_arrays(bundle, images, np.zeros(3), key="toy")


def test_norms_give_back_the_encoders_output_and_the_unit_rows_are_unchanged(bundle, folder_ds, images):
    """Features keep the norms of the encoder output, so ``raw`` (lpclip's probe input) is that output to float
    rounding; the unit rows are what ``encode_images`` returns."""
    for out, x in ((extract(bundle, folder_ds, batch_size=4),
                    torch.stack([bundle.preprocess(Image.open(p).convert("RGB")) for p in folder_ds.paths])),
                   (extract_arrays(bundle, images, np.zeros(10), key="toy", batch_size=4),
                    features.arrays_to_input(bundle, torch.from_numpy(images)))):
        with torch.no_grad():
            z = bundle.model.encode_image(x).float()
            unit = bundle.encode_images(x)
        assert out.norms.shape == (len(x),) and not torch.allclose(out.norms, torch.ones(len(x)))
        torch.testing.assert_close(out.raw, z, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.norms, z.norm(dim=-1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.feats, unit, atol=1e-6, rtol=0)


def test_cache_keeps_norms_and_recomputes_a_file_written_without_them(bundle, folder_ds, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    calls = counting(monkeypatch, bundle)
    first = extract(bundle, folder_ds, batch_size=4, cache=cache)
    hit = extract(bundle, folder_ds, batch_size=4, cache=cache)
    assert sum(calls) == 6 and torch.equal(hit.norms, first.norms)
    # a file from before the norms were kept: same key, feats and labels only -> recomputed, then complete
    cache.put(first.spec, {"feats": first.feats, "labels": first.labels})
    again = extract(bundle, folder_ds, batch_size=4, cache=cache)
    assert sum(calls) == 12 and torch.equal(again.norms, first.norms) and torch.equal(again.feats, first.feats)
    assert "norms" in cache.get(first.spec)


def test_raw_without_norms_says_so():
    f = features.Features(torch.ones(2, 3), torch.zeros(2, dtype=torch.long), "k")
    with pytest.raises(ValueError, match="no norms"):
        f.raw
