"""Real-data loaders on fake trees: counts, labels, names, 200-class mapping, errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vlmlab.data import (COOP_DATASETS, DatasetNotFound, ImageDataset, ImageReadError, coop_dataset, imagenet_a,
                         imagenet_c, imagenet_r, imagenet_val)


def test_imagenet_val_counts_labels_names(data_root, tree):
    ds = imagenet_val(data_root)
    assert len(ds) == 15 and ds.classnames == tree.names
    assert ds.labels.tolist() == [c for c in range(5) for _ in range(3)]
    assert ds.labels.dtype == torch.long
    img, label = ds[4]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == 1
    assert "/n00000002/" in ds.paths[4]


def test_imagenet_val_without_classnames_uses_wnids(data_root, tree):
    (data_root / "imagenet" / "classnames.txt").unlink()
    assert imagenet_val(data_root).classnames == tree.wnids


def test_imagenet_c_layout_key_and_transform(data_root, tree):
    ds = imagenet_c(data_root, "fog", 5, transform=lambda im: torch.tensor(im.size))
    assert len(ds) == 10 and ds.classnames == tree.names
    assert ds[0][0].tolist() == [8, 8]
    other = imagenet_c(data_root, "gaussian_noise", 3)
    assert "fog" in ds.key and "severity=5" in ds.key and ds.key != other.key
    assert ds.key == imagenet_c(data_root, "fog", 5).key            # stable across loads
    with pytest.raises(ValueError, match="severity"):
        imagenet_c(data_root, "fog", 6)


def test_imagenet_c_missing_names_path_and_present_corruptions(data_root):
    with pytest.raises(DatasetNotFound) as err:
        imagenet_c(data_root, "snow", 5)
    msg = str(err.value)
    assert str(data_root / "imagenet-c" / "snow" / "5") in msg and "fog" in msg and "zenodo" in msg
    assert "vlmlab data status --profile paper" in msg and "vlmlab data fetch" in msg


@pytest.mark.parametrize("loader,which", [(imagenet_a, "a_wnids"), (imagenet_r, "r_wnids")])
def test_imagenet_a_r_subset_labels_and_1000_class_mapping(data_root, tree, loader, which):
    wnids, all_wnids, names = getattr(tree, which), tree.wnids, tree.names
    ds = loader(data_root)
    assert len(ds) == 2 * len(wnids)
    assert ds.labels.tolist() == [c for c in range(len(wnids)) for _ in range(2)]   # 200-class subset labels
    assert ds.classnames == [names[all_wnids.index(w)] for w in wnids]
    assert ds.imagenet_indices.tolist() == [all_wnids.index(w) for w in wnids]
    logits1000 = torch.randn(3, len(all_wnids))
    assert logits1000[:, ds.imagenet_indices].shape == (3, len(wnids))
    sub = ds.subset([0, 3])
    assert sub.imagenet_indices.tolist() == ds.imagenet_indices.tolist() and len(sub) == 2


def test_imagenet_a_coop_layout_and_no_wnid_list(data_root, tree):
    shutil.move(data_root / "imagenet-a", data_root / "imagenet-adversarial" / "imagenet-a")
    shutil.rmtree(data_root / "imagenet")
    ds = imagenet_a(data_root)
    assert len(ds) == 4 and ds.imagenet_indices is None and ds.classnames == tree.a_wnids


def test_coop_split_json(data_root):
    train, val, test = (coop_dataset(data_root, "DTD", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (9, 3, 6)
    assert train.classnames == ["banded", "zigzagged", "woven"]
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.paths[2].endswith("dtd/images/zigzagged/zigzagged_0004.jpg")
    assert test[5][1] == 2 and test.split == "test" and train.key != test.key


def test_coop_table_has_the_11_datasets():
    assert len(COOP_DATASETS) == 11
    assert COOP_DATASETS["EuroSAT"] == ("eurosat", "2750", "split_zhou_EuroSAT.json")


def test_coop_missing_split_file_names_path(data_root):
    (data_root / "dtd" / "split_zhou_DescribableTextures.json").unlink()
    with pytest.raises(DatasetNotFound, match="split_zhou_DescribableTextures.json"):
        coop_dataset(data_root, "DTD", "test")
    with pytest.raises(DatasetNotFound, match=str(data_root / "eurosat" / "2750")):
        coop_dataset(data_root, "EuroSAT", "test")


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        imagenet_val(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "imagenet" / "val") in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def _corrupt_one(data_root, tree):
    bad = data_root / "imagenet" / "val" / tree.wnids[1] / "img_1_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return bad


def test_corrupt_jpeg_raise_mode_names_file(data_root, tree):
    bad = _corrupt_one(data_root, tree)
    ds = imagenet_val(data_root)
    with pytest.raises(ImageReadError, match="img_1_1.JPEG"):
        ds[4]
    with pytest.raises(ImageReadError, match=str(bad)):
        imagenet_val(data_root, verify=True)


def test_corrupt_jpeg_skip_mode(data_root, tree):
    _corrupt_one(data_root, tree)
    verified = imagenet_val(data_root, on_error="skip", verify=True)
    assert len(verified) == 14 and verified.n_skipped == 1 and verified.labels.tolist().count(1) == 2
    lazy = imagenet_val(data_root, on_error="skip")
    _, label = lazy[4]                                   # bad file -> the next sample instead
    assert len(lazy) == 15 and lazy.n_skipped == 1 and label == 1 and lazy.skipped[0].endswith("img_1_1.JPEG")


def test_seeded_subsets(data_root):
    full = imagenet_val(data_root)
    a, b = imagenet_val(data_root, n=6, seed=1), imagenet_val(data_root, n=6, seed=1)
    assert a.paths == b.paths and len(a) == 6 and a.key == b.key != full.key
    assert imagenet_val(data_root, n=6, seed=2).paths != a.paths
    per = imagenet_val(data_root, max_per_class=2, seed=0)
    assert torch.bincount(per.labels).tolist() == [2] * 5


def test_subset_and_key_change(data_root):
    ds = imagenet_val(data_root)
    sub = ds.subset(torch.tensor([0, 5, 14]))
    assert sub.labels.tolist() == [0, 1, 4] and sub.classnames == ds.classnames and sub.key != ds.key
    assert isinstance(sub, ImageDataset) and len(ds) == 15


def test_key_survives_moving_the_root(data_root, tmp_path):
    key = imagenet_val(data_root).key
    moved = tmp_path / "moved"
    shutil.move(data_root, moved)
    assert imagenet_val(moved).key == key


def test_split_json_labels_must_be_contiguous(data_root):
    f = data_root / "dtd" / "split_zhou_DescribableTextures.json"
    table = json.loads(f.read_text())
    table["test"].append(["banded/banded_0000.jpg", 7, "ghost"])
    f.write_text(json.dumps(table))
    with pytest.raises(ValueError, match="labels are not"):
        coop_dataset(data_root, "DTD", "test")


def _jpeg(path, seed: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _folders(base, wnids, ext=".JPEG"):
    for c, w in enumerate(wnids):
        _jpeg(base / w / f"img_{c}{ext}", 700 + c)


def _v2_tree(root, n_classes: int, per_class: int = 2):
    base = root / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for k in range(n_classes):
        for i in range(per_class):
            _jpeg(base / str(k) / f"{i:03d}.jpeg", 500 + 10 * k + i)
    return base


def test_imagenet_v2_labels_are_folder_numbers_and_names_the_sorted_wnids(data_root, tree):
    """CoOp's ``imagenetv2.py``: folder ``k`` is class ``k`` (numeric order, so "10" is not between "1" and "2"),
    named by the k-th wnid of ``classnames.txt``."""
    from vlmlab.data import imagenet_v2
    rows = [(w, n) for w, n in zip(tree.wnids, tree.names)]
    extra = [(f"n0000{k:04d}", f"class {k}") for k in range(6, 13)]         # 12 classes: folders 0..11
    (data_root / "imagenet" / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in rows + extra))
    _v2_tree(data_root, 12)
    ds = imagenet_v2(data_root)
    assert len(ds) == 24 and ds.labels.tolist() == [k for k in range(12) for _ in range(2)]
    assert ds.classnames == tree.names + [n for _, n in extra]
    assert all(f"/{k}/" in p for p, k in zip(ds.paths, ds.labels.tolist()))
    assert getattr(ds, "imagenet_indices", None) is None                    # the 1000-class index itself


def test_imagenet_v2_and_sketch_errors_and_layouts(data_root, tree, tmp_path):
    from vlmlab.data import imagenet_sketch, imagenet_v2
    for loader, what in ((imagenet_v2, "ImageNet-V2 not found"), (imagenet_sketch, "ImageNet-Sketch not found")):
        with pytest.raises(DatasetNotFound, match=what):
            loader(tmp_path)
    bad = data_root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / "n0001"
    bad.mkdir(parents=True)
    with pytest.raises(DatasetNotFound, match="class folders 0..999"):
        imagenet_v2(data_root)
    # Sketch: the release's own sketch/ folder, wnid folders, labels in sorted wnid order as ImageNet's
    _folders(data_root / "imagenet-sketch" / "sketch", list(reversed(tree.wnids)))
    ds = imagenet_sketch(data_root)
    assert ds.classnames == tree.names and ds.labels.tolist() == list(range(5))
    assert [p.split("/")[-2] for p in ds.paths] == tree.wnids


def test_load_source_names_the_two_new_targets(data_root, tree):
    from vlmlab.data import load_source
    _v2_tree(data_root, 5, per_class=1)
    _folders(data_root / "imagenet-sketch" / "images", tree.wnids)
    assert len(load_source("imagenet_v2", root=data_root)) == 5
    assert load_source("imagenet_sketch", root=data_root).classnames == tree.names


def test_tip_adapter_keys_from_a_coop_train_split_crop_the_files(data_root):
    """The paper path of Tip-Adapter's support: a CoOp train split on disk, served through DatasetImages; its raw
    crops decode each file (8 x 8 here) and resize the crop to the model's side, and the keys are built from them."""
    import torch.nn.functional as F

    from vlmlab.models.embedded import build_embedded
    from vlmlab.prompts import zero_shot_weights
    from vlmlab.tta import build
    from vlmlab.tta.base import Context, Support, encode_single, image_source

    bundle = build_embedded("cpu")
    train = coop_dataset(data_root, "DTD", "train")
    src = image_source(bundle, train)
    crops = src.crops(torch.arange(len(train)), [0] * len(train), 3, (0.5, 1.0))
    assert crops.shape == (9, 3, bundle.image_size, bundle.image_size)
    unit = F.normalize(encode_single(bundle, src(torch.arange(9))), dim=-1)
    text = zero_shot_weights(bundle, train.classnames, "a photo of a {}.").cpu()
    ctx = Context(bundle, train.classnames, text, "a photo of a {}.", Support(unit, train.labels, src, unit[:3],
                                                                            train.labels[:3], shots=3), seed=3)
    m = build("tip_adapter", shots=3, augment_epochs=2, search=False)
    m.setup(ctx)
    want = sum(encode_single(bundle, src.crops(torch.arange(9), [e] * 9, 3, (0.5, 1.0)), normalize=False)
               for e in range(2))
    torch.testing.assert_close(m.keys, F.normalize(want / 2, dim=-1), rtol=1e-4, atol=1e-5)


SYNONYMS = [["tench", "Tinca tinca"], ["goldfish", "Carassius auratus"],
            ["great white shark", "white shark", "man-eater", "man-eating shark", "Carcharodon carcharias"],
            ["tiger shark", "Galeocerdo cuvieri"], ["hammerhead", "hammerhead shark"]]


def _synset_text(wnids, synonyms) -> str:
    """The devkit's synset words as Caffe's synset_words.txt and Kaggle's LOC_synset_mapping.txt write them."""
    return "".join(f"{w} {', '.join(s)}\n" for w, s in zip(wnids, synonyms))


@pytest.mark.parametrize("name", ["synset_words.txt", "LOC_synset_mapping.txt", "meta.bin"])
def test_synsets_give_uniinfo_class_names_from_each_file(data_root, tree, name):
    """classnames='synsets': every WordNet synonym joined by ", " (UniInfo's ", ".join(IDX_TO_CLASSES[i])),
    from either text file or torchvision's meta.bin, for the clean, corrupted and 200-class sets alike."""
    from vlmlab.data import corrupted, load_source
    folder = data_root / "imagenet"
    shuffled = [3, 0, 4, 2, 1]                      # file order must not matter: names follow the sorted wnids
    if name == "meta.bin":
        torch.save(({tree.wnids[i]: tuple(SYNONYMS[i]) for i in shuffled}, []), folder / name)
    else:
        (folder / name).write_text(_synset_text([tree.wnids[i] for i in shuffled], [SYNONYMS[i] for i in shuffled]))
    want = [", ".join(s) for s in SYNONYMS]
    assert want[0] == "tench, Tinca tinca"
    clean = load_source("imagenet_val", root=data_root, classnames="synsets")
    assert clean.classnames == want
    assert imagenet_val(data_root).classnames == tree.names               # the default stays classnames.txt
    fog = corrupted("imagenet_val", clean, "fog", 5, root=data_root, classnames="synsets")
    assert fog.classnames == want
    a = imagenet_a(data_root, classnames="synsets")
    assert a.classnames == [want[tree.wnids.index(w)] for w in tree.a_wnids]


def test_synsets_file_order_of_preference(data_root, tree):
    folder = data_root / "imagenet"
    (folder / "LOC_synset_mapping.txt").write_text(_synset_text(tree.wnids, [[f"loc {i}"] for i in range(5)]))
    (folder / "synset_words.txt").write_text(_synset_text(tree.wnids, [[f"words {i}"] for i in range(5)]))
    assert imagenet_val(data_root, classnames="synsets").classnames[0] == "words 0"
    (folder / "synset_words.txt").unlink()
    assert imagenet_val(data_root, classnames="synsets").classnames[0] == "loc 0"


def test_synsets_missing_says_where_to_get_them_and_how_to_opt_out(data_root):
    with pytest.raises(DatasetNotFound) as err:
        imagenet_val(data_root, classnames="synsets")
    msg = str(err.value)
    assert str(data_root / "imagenet") in msg and "LOC_synset_mapping.txt" in msg and "meta.bin" in msg
    assert "classnames to ''" in msg


def test_synsets_missing_a_class_names_it(data_root, tree):
    (data_root / "imagenet" / "synset_words.txt").write_text(_synset_text(tree.wnids[:4], SYNONYMS[:4]))
    with pytest.raises(KeyError, match="n00000005"):
        imagenet_val(data_root, classnames="synsets")


def test_classnames_apply_to_imagenet_sources_only(data_root):
    from vlmlab.data import corrupted, load_source
    with pytest.raises(ValueError, match="ImageNet sources"):
        load_source("world:objects", n=4, classnames="synsets")
    with pytest.raises(ValueError, match="ImageNet sources"):
        load_source("coop:DTD", root=data_root, classnames="synsets")
    with pytest.raises(ValueError, match="ImageNet sources"):
        corrupted("world:objects", None, "fog", 5, classnames="synsets")
    assert len(load_source("world:objects", n=4, classnames="")) == 4


def test_a_class_name_file_given_by_name_must_exist(data_root, tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="typo.txt"):
        imagenet_val(data_root, classnames=tmp_path / "typo.txt")
    mine = tmp_path / "mine.txt"
    mine.write_text("".join(f"{w} class {i}\n" for i, w in enumerate(tree.wnids)))
    assert imagenet_c(data_root, "fog", 5, classnames=mine).classnames == [f"class {i}" for i in range(5)]


def test_coop_exact_runs_on_a_data_tree_resume_from_the_cache_after_the_tree_moves(data_root, tiny_clip, tmp_path):
    """The paper profile's CoOp (exact mode, images decoded from files): a rerun loads every finished run, also
    from a copy of the tree under another root (runs are keyed by the files' relative paths and labels)."""
    import pandas as pd

    from vlmlab.coop import CoOpConfig, load_splits, run_sweep
    from vlmlab.features import FeatureCache
    cache = FeatureCache(tmp_path / "cache")
    kw = dict(shots=[1], seeds=[1], variants=["M2_end", "M2_end_csc"], methods=("coop",), cache=cache,
              cfg=CoOpConfig(mode="exact", epochs={1: 2}))
    first = run_sweep(tiny_clip, [load_splits("coop:DTD", root=data_root, n_test=None)], **kw)
    assert first.timing["runs_from_cache"] == 0 and len(first.runs) == 2
    moved = tmp_path / "elsewhere"
    shutil.copytree(data_root / "dtd", moved / "dtd")
    again = run_sweep(tiny_clip, [load_splits("coop:DTD", root=moved, n_test=None)], **kw)
    assert again.timing["runs_from_cache"] == 2
    pd.testing.assert_frame_equal(again.table, first.table)
    for k, ctx in first.contexts.items():
        assert torch.equal(again.contexts[k], ctx)
