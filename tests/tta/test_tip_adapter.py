from __future__ import annotations

import torch
import torch.nn.functional as F

from vlmlab.tta import build
from vlmlab.tta.base import Batch, Context, Support
from vlmlab.tta.tip_adapter import grid


def _setup(bundle, text, **kw):
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(6, text.shape[1], generator=g), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    m = build("tip_adapter", shots=2, augment_epochs=0, **kw)
    m.setup(Context(bundle, ["a", "b", "c"], text, support=Support(keys, labels, None, keys[:3], labels[:3], shots=2)))
    return m, keys


def test_alpha_zero_is_zero_shot(bundle, text):
    m, _ = _setup(bundle, text, alpha=0.0, search=False)
    f = F.normalize(torch.randn(4, text.shape[1]), dim=-1)
    torch.testing.assert_close(m.predict(Batch(torch.arange(4), feats=f)), 100.0 * f @ text.T)


def test_a_cached_key_adds_alpha_to_its_class(bundle, text):
    m, keys = _setup(bundle, text, alpha=1.5, beta=200.0, search=False)   # large beta: only the identical key counts
    out = m.predict(Batch(torch.arange(1), feats=keys[1:2]))
    torch.testing.assert_close(out - 100.0 * keys[1:2] @ text.T, torch.tensor([[0.0, 1.5, 0.0]]), atol=1e-3, rtol=0)


def test_search_grid_is_the_references_and_picks_best_on_validation(bundle, text):
    assert grid(0.1, 7.0, 200)[:2] == [0.1, 0.1 + 6.9 / 200] and len(grid(0.1, 3.0, 20)) == 20
    m, keys = _setup(bundle, text, beta_search=(0.1, 7.0, 10), alpha_search=(0.1, 3.0, 5))
    clip = 100.0 * keys[:3] @ text.T
    best = max((float(((clip + a * m.cache_logits(keys[:3], b)).argmax(1) == torch.arange(3)).float().mean()), -i, -j)
               for i, b in enumerate(grid(0.1, 7.0, 10)) for j, a in enumerate(grid(0.1, 3.0, 5)))
    assert m.val_acc == best[0] * 100
    assert (m.beta, m.alpha) == (grid(0.1, 7.0, 10)[-best[1]], grid(0.1, 3.0, 5)[-best[2]])


def test_keys_average_the_raw_view_features_then_normalise(ctx, monkeypatch):
    """build_cache_model: mean of the raw encoder outputs over the augment epochs, then L2 (not a mean of unit vectors)."""
    import vlmlab.tta.tip_adapter as tip

    n, d = len(ctx.support.labels), ctx.text.shape[1]
    g = torch.Generator().manual_seed(3)
    raw = [torch.randn(n, d, generator=g) * s for s in (1.0, 5.0)]           # epoch 2's features are 5x longer
    calls = []

    def fake_encode(bundle, views, normalize=True):
        out = raw[len(calls)]
        calls.append(normalize)
        return F.normalize(out, dim=-1) if normalize else out

    monkeypatch.setattr(tip, "encode_single", fake_encode)
    expected = {"raw": F.normalize(raw[0] + raw[1], dim=-1),
                "normalized": F.normalize(F.normalize(raw[0], dim=-1) + F.normalize(raw[1], dim=-1), dim=-1)}
    assert not torch.allclose(expected["raw"], expected["normalized"], atol=1e-3)
    for average in ("raw", "normalized"):
        calls.clear()
        m = build("tip_adapter", shots=2, augment_epochs=2, search=False, key_average=average)
        m.setup(ctx)
        torch.testing.assert_close(m.keys, expected[average], rtol=1e-5, atol=1e-6)
        assert calls == [average == "normalized"] * 2


def test_search_on_test_sets_the_grid_best_on_the_test_labels(bundle, text):
    """main_imagenet.py's protocol: search_hp on the test features and labels; the reported accuracy is its best."""
    import pytest
    from vlmlab.tta.tip_adapter import SEARCH_ON
    kw = dict(beta_search=(0.1, 7.0, 10), alpha_search=(0.1, 3.0, 5))
    m, keys = _setup(bundle, text, search_on="test", **kw)
    assert (m.alpha, m.beta) == (1.17, 1.0) and not hasattr(m, "val_acc")          # no validation search
    g = torch.Generator().manual_seed(1)
    f = F.normalize(keys.repeat(4, 1) + 0.8 * torch.randn(24, text.shape[1], generator=g), dim=-1)
    y = torch.randint(0, 3, (24,), generator=g)
    clip = 100.0 * f @ text.T
    brute = max(float(((clip + a * m.cache_logits(f, b)).argmax(1) == y).float().mean()) * 100
                for b in grid(0.1, 7.0, 10) for a in grid(0.1, 3.0, 5))
    assert m.search_test(f, y) == brute
    assert float((m.predict(Batch(torch.arange(24), feats=f)).argmax(1) == y).float().mean()) * 100 == brute
    val, _ = _setup(bundle, text, **kw)
    assert not val.searches_on_test and m.searches_on_test and SEARCH_ON == ("val", "test")
    with pytest.raises(RuntimeError, match="search_on='test'"):
        val.search_test(f, y)
    with pytest.raises(ValueError, match="search_on='train'"):
        _setup(bundle, text, search_on="train")


def _wide_images(tmp_path, n: int = 4):
    """(n, 24, 48, 3) uint8 images with a different colour in each eighth of the width, and the same images as
    PNG files in an ``ImageDataset`` without transform (the raw, non-square files a real support set reads)."""
    import numpy as np
    from PIL import Image

    from vlmlab.data.base import ImageDataset

    rng = np.random.default_rng(0)
    arrays = np.repeat(rng.integers(0, 255, (n, 1, 8, 3), dtype=np.uint8), 6, axis=2).repeat(24, axis=1)
    samples = []
    for i, arr in enumerate(arrays):
        path = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(path)
        samples.append((path, i % 3))
    return arrays, ImageDataset(samples, CLASSES, "wide", root=tmp_path)


CLASSES = ["a", "b", "c"]


def test_raw_crops_are_random_resized_crops_of_the_decoded_file(bundle, tmp_path):
    """DatasetImages.crops: torchvision's RandomResizedCrop(S, scale, bicubic) + flip on the PIL file (the reference's
    train transform), checked against PIL's own crop and resize with the same drawn parameters."""
    import numpy as np
    from PIL import Image

    from vlmlab.data.augment import crop_params, view_rng
    from vlmlab.tta.base import DatasetImages

    _, ds = _wide_images(tmp_path)
    s, seed, scale = bundle.image_size, 7, (0.5, 1.0)
    idx, views = torch.tensor([0, 1, 2, 3, 1]), [0, 0, 1, 2, 5]
    got = DatasetImages(bundle, ds, workers=3).crops(idx, views, seed, scale)
    want = []
    for i, v in zip(idx.tolist(), views):
        img, rng = Image.open(ds.paths[i]).convert("RGB"), view_rng(seed, i, v)
        top, left, h, w = crop_params(img.height, img.width, rng, scale)
        out = img.crop((left, top, left + w, top + h)).resize((s, s), Image.BICUBIC)
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        want.append(torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(got, bundle.normalize_pixels(torch.stack(want)), rtol=0, atol=1e-5)


def test_array_crops_take_the_same_region_of_the_raw_array_not_of_the_served_square(bundle, tmp_path):
    """ArrayImages.crops crops the whole (non-square) array as the file path does (bicubic on a tensor against
    PIL's: close, not equal); the served input is the centre square, so its crops miss the outer columns."""
    from vlmlab.tta.base import ArrayImages, DatasetImages, make_views, view_seed

    arrays, ds = _wide_images(tmp_path)
    idx, views = torch.arange(4), [3] * 4
    raw = ArrayImages(bundle, arrays).crops(idx, views, 1, (1.0, 1.0))
    files = DatasetImages(bundle, ds).crops(idx, views, 1, (1.0, 1.0))
    served = make_views(ArrayImages(bundle, arrays)(idx), 1, [view_seed(1, i) for i in range(4)], scale=(1.0, 1.0),
                        keep_original=False)[:, 0]
    # scale 1 of a 2:1 image: torchvision's fallback, the centred 4:3 crop (32 of 48 columns); the served input
    # is the centred 24 x 24 square, so the two see different columns
    assert (raw - files).abs().mean() < 0.05
    assert (served - files).abs().mean() > 4 * (raw - files).abs().mean()


def test_tip_adapter_raw_keys_average_the_encoded_raw_crops_of_each_epoch(bundle, text, tmp_path):
    """support_crops="raw" (default, the reference's): key = normalise(mean over epochs e of encode(crops(view e)));
    "served" crops the served input instead; another value is named."""
    import pytest

    from vlmlab.tta.base import ArrayImages, encode_single, make_views, view_seed

    arrays, _ = _wide_images(tmp_path)
    src, labels = ArrayImages(bundle, arrays[:3]), torch.tensor([0, 1, 2])
    unit = F.normalize(encode_single(bundle, src(torch.arange(3))), dim=-1)
    support = Support(unit, labels, src, unit, labels, shots=1)
    ctx = Context(bundle, CLASSES, text, "a photo of a {}.", support, seed=4)
    kw = dict(shots=1, augment_epochs=3, search=False)
    m = build("tip_adapter", **kw)
    assert m.config.support_crops == "raw"
    m.setup(ctx)
    raw = [encode_single(bundle, src.crops(torch.arange(3), [e] * 3, 4, (0.5, 1.0)), normalize=False) for e in range(3)]
    torch.testing.assert_close(m.keys, F.normalize(sum(raw) / 3, dim=-1), rtol=1e-4, atol=1e-5)
    served = build("tip_adapter", support_crops="served", **kw)
    served.setup(ctx)
    seeds = [[view_seed(4 * 1000 + e, i) for i in range(3)] for e in range(3)]
    views = [make_views(src(torch.arange(3)), 1, seeds[e], scale=(0.5, 1.0), keep_original=False)[:, 0] for e in range(3)]
    want = F.normalize(sum(encode_single(bundle, v, normalize=False) for v in views) / 3, dim=-1)
    torch.testing.assert_close(served.keys, want, rtol=1e-4, atol=1e-5)
    assert (served.keys - m.keys).abs().max() > 1e-5                     # other crops, other keys
    with pytest.raises(ValueError, match="support_crops='centre'"):
        build("tip_adapter", support_crops="centre", **kw).setup(ctx)
