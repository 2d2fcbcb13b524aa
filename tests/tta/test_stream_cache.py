"""Cached TTA streams (``run_stream_cached``): a stored run gives back what running it gives, and its key moves with
everything the run reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from vlmlab.features import FeatureCache
from vlmlab.tta import build, run_stream
from vlmlab.tta.base import ArrayImages, Context, DatasetImages, Stream, encode_single, run_stream_cached, stream_key

from tta_helpers import CLASSNAMES, FAST, evaluate_module


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
    from vlmlab.params import load
    E = evaluate_module()
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
    from vlmlab.params import load
    from vlmlab.tta.base import stream_digest
    E = evaluate_module()
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



class _Stop(Exception):
    pass


def _stop_after(monkeypatch, method, calls: int) -> list:
    """Make ``method``'s class's ``predict`` raise at its ``calls + 1``-th call (an interrupted stream); returns
    the items it was called on."""
    made, predict = [], type(method).predict

    def stopping(self, batch):
        if len(made) == calls:
            raise _Stop
        made.append(int(batch.index[0]))
        return predict(self, batch)

    monkeypatch.setattr(type(method), "predict", stopping)
    return made


def _run(monkeypatch, calls: int, make, **kw) -> tuple[list, Tensor | None]:
    """Run ``run_stream(make(), **kw)`` stopped at predict call ``calls + 1``: (items visited, logits or None)."""
    m = make()
    with monkeypatch.context() as patch:
        visited = _stop_after(patch, m, calls)
        try:
            return visited, run_stream(m, **kw)
        except _Stop:
            return visited, None


@pytest.mark.parametrize("name", ["tpt", "zero"])
def test_an_episodic_stream_stopped_part_way_resumes_to_the_logits_of_a_run_never_stopped(
        name, bundle, text, toy_stream, tmp_path, monkeypatch):
    """Stopped in its third fetch group of two images, a stream resumes after the four images it saved and visits
    only the last two; another run's checkpoint (another seed) is not resumed."""
    from vlmlab.checkpoints import Checkpoint

    make = lambda: _method(name, bundle, text)                                     # noqa: E731

    def ckpt(seed):                                                                # written after every group
        return Checkpoint(tmp_path / "stream.pt", stream_key(make(), toy_stream, seed=seed, fetch=2), "test", every_s=0)

    whole = run_stream(make(), toy_stream, seed=3, fetch=2)
    visited, out = _run(monkeypatch, 5, make, stream=toy_stream, seed=3, fetch=2, checkpoint=ckpt(3))
    assert out is None and len(visited) == 5
    visited, resumed = _run(monkeypatch, 99, make, stream=toy_stream, seed=3, fetch=2, checkpoint=ckpt(3))
    assert visited == torch.randperm(6, generator=torch.Generator().manual_seed(3))[4:].tolist()
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)

    visited, _ = _run(monkeypatch, 99, make, stream=toy_stream, seed=4, fetch=2, checkpoint=ckpt(4))
    assert len(visited) == 6                                                       # started afresh


@pytest.mark.parametrize("views", ["single", "augmix"])
def test_a_tda_stream_stopped_part_way_resumes_from_its_caches(views, bundle, text, toy_stream, tmp_path,
                                                               monkeypatch):
    """TDA (online) keeps its two caches in the checkpoint: resumed after 3 of 6 images it visits the other 3 and
    gives the logits of a run never stopped; without its caches the resumed logits differ."""
    from vlmlab.checkpoints import Checkpoint

    stream = toy_stream if views == "augmix" else Stream(
        toy_stream.labels, toy_stream.images, encode_single(bundle, toy_stream.images(torch.arange(6))))
    over = {"views": "augmix", "n_views": 10} if views == "augmix" else {}
    make = lambda: _method("tda", bundle, text, **over)                            # noqa: E731
    ckpt = Checkpoint(tmp_path / "stream.pt", {"run": views}, "test", every_s=0)
    whole = run_stream(make(), stream, seed=3)
    assert _run(monkeypatch, 3, make, stream=stream, seed=3, checkpoint=ckpt)[1] is None
    visited, resumed = _run(monkeypatch, 99, make, stream=stream, seed=3, checkpoint=ckpt)
    assert len(visited) == 3
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)

    ckpt = Checkpoint(tmp_path / "again.pt", {"run": views}, "test", every_s=0)
    assert _run(monkeypatch, 3, make, stream=stream, seed=3, checkpoint=ckpt)[1] is None
    monkeypatch.setattr(type(make()), "load_resume_state", lambda self, state: None)    # caches not restored
    assert not torch.equal(_run(monkeypatch, 99, make, stream=stream, seed=3, checkpoint=ckpt)[1], whole)


def test_a_resumed_stream_continues_torchs_random_draws(bundle, text, toy_stream, tmp_path, monkeypatch):
    """A method drawing from torch's global generator gets the draws of a run never stopped after a resume."""
    from vlmlab.checkpoints import Checkpoint

    zero = type(_method("zero", bundle, text))
    predict = zero.predict
    monkeypatch.setattr(zero, "predict", lambda self, batch: predict(self, batch) + torch.rand(1, 3))
    make = lambda: _method("zero", bundle, text)                                   # noqa: E731
    ckpt = Checkpoint(tmp_path / "stream.pt", {"run": 1}, "test", every_s=0)
    whole = run_stream(make(), toy_stream, seed=3, fetch=2)
    assert _run(monkeypatch, 3, make, stream=toy_stream, seed=3, fetch=2, checkpoint=ckpt)[1] is None
    visited, resumed = _run(monkeypatch, 99, make, stream=toy_stream, seed=3, fetch=2, checkpoint=ckpt)
    assert len(visited) == 4
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)


def test_run_stream_cached_keeps_an_episodic_streams_progress_beside_its_entry_and_deletes_it_once_stored(
        bundle, text, toy_stream, tmp_path, monkeypatch):
    from vlmlab.checkpoints import checkpoint_path

    cache, make = FeatureCache(tmp_path), lambda: _method("tpt", bundle, text)     # noqa: E731
    whole = run_stream(make(), toy_stream, seed=3, fetch=2)
    key = stream_key(make(), toy_stream, seed=3, fetch=2)
    for calls in (3, 99):                                                          # stopped in group 2, then whole
        m = make()
        with monkeypatch.context() as patch:
            visited = _stop_after(patch, m, calls)
            try:
                logits, hit = run_stream_cached(m, toy_stream, cache=cache, seed=3, fetch=2, checkpoint_every_s=0)
            except _Stop:
                assert checkpoint_path(cache, key).is_file() and key not in cache
    assert not hit and len(visited) == 4                                           # the first group was saved
    torch.testing.assert_close(logits, whole, rtol=0, atol=0)
    assert key in cache and not checkpoint_path(cache, key).exists()


def test_online_streams_without_a_resume_state_ignore_the_checkpoint(bundle, text, toy_stream, tmp_path):
    """UniInfo (minutes per stream on a GPU) has no ``resume_state``: no progress file is written."""
    from vlmlab.checkpoints import Checkpoint

    path = tmp_path / "stream.pt"
    logits = run_stream(_method("uniinfo", bundle, text), toy_stream, seed=3,
                        checkpoint=Checkpoint(path, {"run": 1}, "test", every_s=0))
    assert not path.exists()
    torch.testing.assert_close(logits, run_stream(_method("uniinfo", bundle, text), toy_stream, seed=3),
                               rtol=0, atol=0)


def test_view_encoding_stopped_part_way_resumes_to_the_same_views(bundle, toy_stream, tmp_path, monkeypatch):
    """``cached_views`` writes the views so far; a rerun encodes only the chunks after the saved ones, gives the
    features of a run never stopped, and deletes the file once they are stored."""
    E = evaluate_module()

    class _Data:
        images, key, name = toy_stream.images.images, "toy", "toy"

    idx, cache, encode = torch.tensor([0, 1, 2, 3, 5]), FeatureCache(tmp_path), E.encode_item_views
    whole = E.cached_views(bundle, _Data, idx, 4, 3, None, chunk=2)
    for stop in (2, None):                                          # stopped at the third chunk, then whole
        chunks = []

        def counting(bundle, src, part, *a, **k):
            if len(chunks) == stop:
                raise _Stop
            chunks.append(part.tolist())
            return encode(bundle, src, part, *a, **k)

        with monkeypatch.context() as patch:
            patch.setattr(E, "encode_item_views", counting)
            try:
                views = E.cached_views(bundle, _Data, idx, 4, 3, cache, chunk=2, checkpoint_every_s=0)
            except _Stop:
                assert len(list(tmp_path.glob("*.training.pt"))) == 1 and not list(tmp_path.glob("*.safetensors"))
    assert chunks == [[5]]                                          # the first two chunks came from the file
    torch.testing.assert_close(views, whole, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.training.pt")) and len(list(tmp_path.glob("*.safetensors"))) == 1
