"""The notebook's table helpers and the poster's Table 2 stored as data."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from vlmlab.results import published
from vlmlab.tta.evaluate import (POSTER_ORDER, TABLE_COLUMNS, balanced_subset, compare_published, method_runs,
                                 poster_table)

from tta_helpers import evaluate_module


class _P(dict):
    __getattr__ = dict.__getitem__


def _table():
    rows = []
    for method, shots, base in (("uniinfo", None, 30.0), ("no_adapt", None, 20.0), ("linear_probe", 5, 10.0),
                                ("linear_probe", 1, 5.0)):
        for k, c in enumerate(("fog", "defocus_blur")):
            rows.append({"method": method, "corruption": c, "severity": 5, "shots": shots, "seed": 0,
                         "accuracy": base + k, "n_images": (60 if method == "uniinfo" else 400) - 10 * k})
    t = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    t["shots"] = t["shots"].astype("Int64")
    return t


def test_poster_layout_orders_rows_and_columns_and_means_last():
    wide = poster_table(_table(), "clean")
    assert list(wide.index) == ["No-adapt", "Linear probing (1)", "Linear probing (5)", "UniInfo"]
    assert list(wide.columns) == ["Def.", "Fog", "Mean", "images", "shots from"]
    assert wide.loc["No-adapt", "images"] == "390-400" and wide.loc["UniInfo", "images"] == "50-60"
    assert wide.loc["UniInfo", "Mean"] == pytest.approx(30.5)
    assert wide.loc["Linear probing (5)", "shots from"] == "clean train split" and wide.loc["UniInfo", "shots from"] == ""


def test_compare_published_matches_zero_shot_and_few_shot_rows():
    side = compare_published(_table(), published("02_uniinfo_tta"))
    row = side[(side.method == "no_adapt") & (side.corruption == "fog")].iloc[0]
    assert row.published == 34.55 and row.difference == pytest.approx(20.0 - 34.55)
    lp5 = side[(side.method == "linear_probe") & (side.shots == 5) & (side.corruption == "mean")].iloc[0]
    assert lp5.published == 17.28 and lp5.ours == pytest.approx(10.5)
    lp1 = side[(side.method == "linear_probe") & (side.shots == 1)]
    assert lp1.published.isna().all()                      # LP(1) is never aligned to a column


def test_published_table2_is_complete_and_keeps_the_lp1_irregularity():
    pub = published("02_uniinfo_tta")
    lp1 = pub[(pub.method == "linear_probe") & (pub.shots == 1)]
    assert len(lp1) == 15 and lp1.corruption.isna().all() and lp1.note.str.contains("column unknown").all()
    full = pub.dropna(subset=["corruption"])
    assert set(full.corruption) == set(POSTER_ORDER) | {"mean"}
    for (method, shots), g in full.groupby(["method", "shots"], dropna=False):
        per = g[g.corruption != "mean"].accuracy
        assert len(per) == 15, (method, shots)
        assert per.mean() == pytest.approx(float(g[g.corruption == "mean"].accuracy.iloc[0]), abs=0.006)
    uni, base = (float(full[(full.method == m) & (full.corruption == "mean")].accuracy.iloc[0])
                 for m in ("uniinfo", "no_adapt"))
    assert round(uni - base, 2) == 4.01


def test_method_runs_expand_shots_and_reject_unknown_methods():
    P = _P(methods=["no_adapt", "tip_adapter"], shots=[1, 5], no_adapt={}, tip_adapter={"beta": 2.0})
    assert method_runs(P) == [("no_adapt", None, {}), ("tip_adapter", 1, {"beta": 2.0, "shots": 1}),
                              ("tip_adapter", 5, {"beta": 2.0, "shots": 5})]
    with pytest.raises(KeyError, match="unknown method 'tent'"):
        method_runs(_P(methods=["tent"], shots=[1]))


def test_balanced_subset_takes_the_same_count_per_class():
    labels = torch.arange(100) % 5
    idx = balanced_subset(labels, 20, seed=0)
    assert torch.equal(torch.bincount(labels[idx]), torch.full((5,), 4))
    assert torch.equal(balanced_subset(labels, None, 0), torch.arange(100))
    few = balanced_subset(labels, 3, seed=0)
    assert len(few) == 3 and len(set(labels[few].tolist())) == 3


def test_geometry_unif_loss_is_uniinfos_offline_evaluator_value():
    """``unif_loss`` = UniInfo's ``util/loss.py`` value on each batch of 128 in dataset order (the last one
    smaller), averaged over batches as ignite's ``Average`` does; a straightforward recomputation here."""
    from vlmlab.tta.evaluate import geometry_rows
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(300, 8, generator=g), dim=-1)
    after = torch.nn.functional.normalize(z + 0.3 * torch.randn(300, 8, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    labels = torch.arange(300) % 4

    def official(batch):
        zz = batch @ batch.T
        rz = zz.diag().unsqueeze(0).expand_as(zz)
        return torch.exp(-0.5 * (rz + rz.T - 2 * zz)).mean().log()

    for batch, sizes in ((128, [128, 128, 44]), (64, [64] * 4 + [44])):
        rows = geometry_rows("fog", z, after, labels, text, unif_batch=batch)
        for row, emb in zip(rows, (z, after)):
            parts = emb.double().split(batch)
            assert [len(p) for p in parts] == sizes
            ref = float(torch.stack([official(p) for p in parts]).mean())
            assert row["unif_loss"] == pytest.approx(ref, rel=1e-9)
            assert row["accuracy"] == pytest.approx(100 * float(((emb @ text.T).argmax(1) == labels).double().mean()))
    assert rows[0]["unif_loss"] != geometry_rows("fog", z, after, labels, text)[0]["unif_loss"]   # batch matters


def test_evaluate_searches_tip_adapter_on_each_streams_labels_under_the_switch(monkeypatch):
    """search_on: test: before each corruption's stream the runner hands Tip-Adapter that stream's features and
    labels; the row's accuracy is then the grid's best on that stream (search_test's return value)."""
    from vlmlab.params import load
    from vlmlab.tta.evaluate import evaluate
    from vlmlab.tta.tip_adapter import TipAdapter

    best = []
    search = TipAdapter.search_test
    monkeypatch.setattr(TipAdapter, "search_test", lambda self, f, y: best.append((len(y), search(self, f, y))) or best[-1][1])
    over = {"methods": ["tip_adapter"], "tip_adapter": {"augment_epochs": 0, "search_on": "test"}, "n_cost_images": 0}
    P = load("02_uniinfo_tta", "tiny", over)
    table = evaluate(P, cache=False).table
    assert [n for n, _ in best] == [P.n_images] * len(P.corruptions)
    assert table.accuracy.tolist() == pytest.approx([b for _, b in best])
    best.clear()
    evaluate(load("02_uniinfo_tta", "tiny", {**over, "tip_adapter": {"augment_epochs": 0}}), cache=False)
    assert best == []                                                    # the default never reads test labels


def test_paper_profile_reads_uniinfo_class_names(bundle, tmp_path, monkeypatch, fake_imagenet):
    """params/paper's classnames: synsets gives every method UniInfo's ", "-joined WordNet lists; "" CoOp's file."""
    from vlmlab.params import load
    E = evaluate_module()
    synonyms = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus"}
    root = fake_imagenet(tmp_path / "data", synonyms)
    (root / "imagenet" / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\n")
    seen, real = [], E.zero_shot_weights
    monkeypatch.setattr(E, "zero_shot_weights", lambda b, names, *a, **k: seen.append(list(names)) or real(b, names, *a, **k))
    small = {"data_root": str(root), "corruptions": ["fog"], "methods": ["no_adapt"], "n_cost_images": 0,
             "n_cost_images_multiview": 0, "pca_corruption": "fog", "compare_published": False}
    P = load("02_uniinfo_tta", "paper", small)
    assert P.classnames == "synsets"
    ev = E.evaluate(P, bundle=bundle, cache=False)
    assert seen == [list(synonyms.values())] and len(ev.table) == 1 and ev.table.n_images.iloc[0] == 4
    E.evaluate(load("02_uniinfo_tta", "paper", small | {"classnames": ""}), bundle=bundle, cache=False)
    assert seen[-1] == ["tench", "goldfish"]


def test_tda_augmix_scores_the_whole_stream_with_its_own_views(monkeypatch):
    """tda: {views: augmix} (the reference's A/V/R/S setting) runs online over every image of each corruption,
    not the multi-view subset, and the setup table names its view count."""
    from vlmlab.params import load
    from vlmlab.tta.base import ArrayImages
    from vlmlab.tta.evaluate import evaluate

    drawn, augmix = [], ArrayImages.augmix
    monkeypatch.setattr(ArrayImages, "augmix", lambda self, idx, views, seed: drawn.append(len(idx)) or
                        augmix(self, idx, views, seed))
    over = {"methods": ["tda"], "tda": {"views": "augmix", "n_views": 10}, "corruptions": ["fog"]}
    ev = evaluate(load("02_uniinfo_tta", "tiny", over), cache=False)
    P = load("02_uniinfo_tta", "tiny", over)
    assert ev.table.n_images.tolist() == [P.n_images] and ev.paired.empty
    row = ev.setup.iloc[0]
    assert row["views"] == 10 and row["images_per_corruption"] == P.n_images and "views=augmix" in row["settings"]
    assert sum(drawn) == P.n_images * 9                                  # 9 AugMix views of every image, once
    single = evaluate(load("02_uniinfo_tta", "tiny", {**over, "tda": {}}), cache=False)
    assert single.setup.iloc[0]["views"] == 1 and sum(drawn) == P.n_images * 9


def test_views_from_raw_reaches_the_multi_view_methods(monkeypatch):
    """views_from: raw crops every multi-view method's views from the raw arrays; a bad value fails first."""
    from vlmlab.params import load
    E = evaluate_module()
    import vlmlab.tta.base as B
    seen, real = [], B.encode_raw_views
    monkeypatch.setattr(B, "encode_raw_views", lambda *a, **k: seen.append(len(a[2])) or real(*a, **k))
    over = {"methods": ["zero"], "corruptions": ["fog"], "views_from": "raw"}
    P = load("02_uniinfo_tta", "tiny", over)
    ev = E.evaluate(P, cache=False)
    assert sum(seen) == P.n_images_multiview and len(ev.table) == 1
    with pytest.raises(ValueError, match="raw"):
        E.evaluate(load("02_uniinfo_tta", "tiny", {**over, "views_from": "file"}), cache=False)


def test_raw_views_and_augmix_tda_read_image_files(bundle, tmp_path, fake_imagenet):
    """The paper profile's on-disk path: views_from: raw crops the decoded JPEGs and tda: {views: augmix} mixes
    AugMix views of them (DatasetImages.crops / .augmix on the files, before the model's preprocess)."""
    from vlmlab.params import load
    E = evaluate_module()
    root = fake_imagenet(tmp_path / "data", {"n01440764": "tench", "n01443537": "goldfish"})
    over = {"data_root": str(root), "corruptions": ["fog"], "methods": ["zero", "tda"], "n_cost_images": 1,
            "n_cost_images_multiview": 1, "pca_corruption": "fog", "compare_published": False, "views_from": "raw",
            "zero": {"n_views": 4}, "tda": {"views": "augmix", "n_views": 10}, "n_images_multiview": None}
    ev = E.evaluate(load("02_uniinfo_tta", "paper", over), bundle=bundle, cache=False)
    assert ev.table.method.tolist() == ["zero", "tda"] and ev.table.n_images.tolist() == [4, 4]
    assert ev.table.accuracy.between(0, 100).all() and ev.cost.ms_per_image.gt(0).all()
    assert ev.setup.set_index("method").loc["tda", "views"] == 10
