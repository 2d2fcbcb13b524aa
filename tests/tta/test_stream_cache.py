"""Cached TTA streams (``run_stream_cached``): a stored run gives back what running it gives, and its key moves with
everything the run reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vlmlab.features import FeatureCache
from vlmlab.tta import build, run_stream
from vlmlab.tta.base import ArrayImages, Context, DatasetImages, Stream, encode_single, run_stream_cached, stream_key

from conftest import CLASSNAMES, FAST


def _method(name, bundle, text, support=None, **over):
    m = build(name, **{**FAST.get(name, {}), **over})
    m.setup(Context(bundle, CLASSNAMES, text, "a photo of a {}.", support, seed=0))
    return m


@pytest.mark.parametrize("name", ["uniinfo", "tpt", "tda"])
def test_a_stored_stream_gives_back_the_runs_logits_and_state_without_running(name, bundle, text, toy_stream,
                                                                               tmp_path, monkeypatch):
    stream = toy_stream
    if name == "tda":                                   # reads cached single-view features
        stream = Stream(toy_stream.labels, toy_stream.images, encode_single(bundle, toy_stream.images(torch.arange(6))))
    cache = FeatureCache(tmp_path)
    m = _method(name, bundle, text)
    logits, hit = run_stream_cached(m, stream, cache=cache, seed=3)
    assert not hit
    torch.testing.assert_close(logits, run_stream(_method(name, bundle, text), stream, seed=3), rtol=0, atol=0)
    state = {k: v.clone() for k, v in m.stream_state().items()}
    history = getattr(m, "history", None)

    fresh = _method(name, bundle, text)
    monkeypatch.setattr(type(fresh), "predict", lambda *a: pytest.fail("a cached stream ran"))
    again, hit = run_stream_cached(fresh, stream, cache=cache, seed=3)
    assert hit and torch.equal(again, logits)
    assert fresh.stream_state().keys() == state.keys()
    assert all(torch.equal(fresh.stream_state()[k], v) for k, v in state.items())
    if name == "uniinfo":
        assert torch.equal(fresh.embeddings, m.embeddings) and len(history) == 2       # 6 images, batches of 4
        pd.testing.assert_frame_equal(pd.DataFrame(fresh.history), pd.DataFrame(history), check_exact=True)
        assert list(fresh.history[0]) == list(history[0]) and isinstance(fresh.history[1]["batch"], int)


def test_the_key_moves_with_what_the_run_reads(bundle, text, toy_stream, support):
    base = stream_key(_method("tpt", bundle, text), toy_stream, seed=0)
    other = np.array(toy_stream.images.images)
    other[0, 0, 0, 0] ^= 1                                                   # one pixel of one image
    moved = {
        "seed": stream_key(_method("tpt", bundle, text), toy_stream, seed=1),
        "config": stream_key(_method("tpt", bundle, text, lr=1e-3), toy_stream, seed=0),
        "method": stream_key(_method("mta", bundle, text), toy_stream, seed=0),
        "text": stream_key(_method("tpt", bundle, text.flip(0)), toy_stream, seed=0),
        "images": stream_key(_method("tpt", bundle, text),
                             Stream(toy_stream.labels, ArrayImages(bundle, other)), seed=0),
        "subset": stream_key(_method("tpt", bundle, text), toy_stream.subset(torch.tensor([0, 1, 2])), seed=0),
        "views": stream_key(_method("tpt", bundle, text), Stream(toy_stream.labels, toy_stream.images,
                                                                 views=torch.zeros(6, 4, 8)), seed=0),
        "view seed": stream_key(_method("tpt", bundle, text),
                                Stream(toy_stream.labels, toy_stream.images, view_seed=1), seed=0),
        "order": stream_key(_method("tpt", bundle, text), toy_stream, seed=0, shuffle=False),
    }
    assert base is not None and base == stream_key(_method("tpt", bundle, text), toy_stream, seed=0)
    assert all(FeatureCache.canonical(k) != FeatureCache.canonical(base) for k in moved.values()), \
        [n for n, k in moved.items() if k == base]
    assert len({FeatureCache.canonical(k) for k in moved.values()}) == len(moved)


def test_runs_that_cannot_be_keyed_are_not_cached(bundle, text, toy_stream, support, tmp_path):
    """Static methods (a product of features), few-shot contexts, datasets without a key and classes without a
    source file run every time."""
    on_disk = Stream(toy_stream.labels, DatasetImages(bundle, [(None, 0)] * 6))
    assert stream_key(_method("no_adapt", bundle, text), toy_stream) is None
    assert stream_key(_method("uniinfo", bundle, text), on_disk) is None
    assert stream_key(_method("tpt", bundle, text, support), toy_stream) is None
    notebook_class = type("MyTPT", (type(_method("tpt", bundle, text)),), {"__module__": "__main__"})
    mine = notebook_class(_method("tpt", bundle, text).config)
    mine.setup(Context(bundle, CLASSNAMES, text))
    assert stream_key(mine, toy_stream) is None                          # its code is a cell's, not a file's
    elsewhere = type("MyTPT", (type(mine),), {"__module__": "no_such_module_here"})(mine.config)
    elsewhere.setup(Context(bundle, CLASSNAMES, text))
    assert stream_key(elsewhere, toy_stream) is None                     # no source file to fingerprint
    cache = FeatureCache(tmp_path)
    m = _method("no_adapt", bundle, text)
    stream = Stream(toy_stream.labels, toy_stream.images, encode_single(bundle, toy_stream.images(torch.arange(6))))
    assert run_stream_cached(m, stream, cache=cache)[1] is False and run_stream_cached(m, stream, cache=cache)[1] is False
    assert not list(tmp_path.glob("*.safetensors"))


def test_notebook_02_reruns_from_the_cache_with_the_same_tables(tmp_path):
    """Second evaluate with the same cache: every adapting method's stream loads, and every table is equal."""
    import importlib

    from vlmlab.params import load
    E = importlib.import_module("vlmlab.tta.evaluate")          # the package's ``evaluate`` is the function
    P = load("02_uniinfo_tta", "tiny", {"methods": ["no_adapt", "tda", "zero", "uniinfo"]})
    first = E.evaluate(P, cache=FeatureCache(tmp_path))
    second = E.evaluate(P, cache=FeatureCache(tmp_path))
    assert first.notes["streams_from_cache"] == 0
    assert second.notes["streams_from_cache"] == 3 * len(P.corruptions) * len(P.seeds)
    for name in ("table", "paired", "geometry", "history", "pca"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)


def test_the_paper_profiles_streams_on_disk_are_keyed_by_their_files_and_resume_from_the_cache(
        bundle, tmp_path, fake_imagenet):
    """Images on disk are keyed as the feature cache keys them (``ImageDataset.key``: relative paths and labels);
    a second run of the same grid (an interrupted one, rerun) loads every adapting stream, with equal tables."""
    import importlib

    from vlmlab.params import load
    from vlmlab.tta.base import stream_digest
    E = importlib.import_module("vlmlab.tta.evaluate")
    root = fake_imagenet(tmp_path / "data", {"n01440764": "tench", "n01443537": "goldfish"})
    over = {"data_root": str(root), "corruptions": ["fog"], "methods": ["no_adapt", "zero", "uniinfo"],
            "n_cost_images": 0, "pca_corruption": "fog", "compare_published": False, "zero": {"n_views": 4},
            "uniinfo": {"batch_size": 2}, "n_images_multiview": None}
    P = load("02_uniinfo_tta", "paper", over)
    first = E.evaluate(P, bundle=bundle, cache=FeatureCache(tmp_path / "cache"))
    second = E.evaluate(P, bundle=bundle, cache=FeatureCache(tmp_path / "cache"))
    assert first.notes["streams_from_cache"] == 0 and second.notes["streams_from_cache"] == 2
    for name in ("table", "paired", "geometry", "history"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name), check_exact=True)

    clean = E.load_source(P.source, root=str(root), n=None, seed=P.seed, classnames=P.classnames)
    ds = E.corrupted(P.source, clean, "fog", P.severity, root=str(root), n=None, seed=P.seed, corruption_seed=P.seed,
                     classnames=P.classnames)
    src = DatasetImages(bundle, ds)
    assert src.digest() is not None and src.digest() != src.digest(torch.arange(2))
    assert src.digest() != DatasetImages(bundle, ds.subset([0, 1, 2])).digest()
    labels = torch.zeros(len(ds), dtype=torch.long)
    stream = Stream(labels, src)
    before = stream_digest(stream)
    assert before is stream_digest(stream)                               # computed once per stream
    stream.feats = torch.zeros(len(ds), 4)                               # ... while it holds the same tensors
    assert stream_digest(stream)["feats"] != before["feats"] and stream_digest(stream) is stream_digest(stream)
