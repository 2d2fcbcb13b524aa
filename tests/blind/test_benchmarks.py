"""The paper profile's benchmark loaders on small fake trees laid out like the Hugging Face downloads."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import vlmlab.blind.experiment as BX
from vlmlab.blind.benchmarks import (answer_index, letterbox, load_benchmark, load_blink, load_cvbench_depth,
                                     load_mochi, split)
from vlmlab.blind.readouts import box_features
from vlmlab.data.base import DatasetNotFound

pytest.importorskip("pyarrow")


def _png(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _image(w: int, h: int, spots=(), seed: int = 0) -> np.ndarray:
    """A grey image with 6x6 coloured squares centred on ``spots`` [(x, y, rgb)]."""
    img = np.full((h, w, 3), 90, np.uint8)
    for x, y, rgb in spots:
        img[y - 3:y + 3, x - 3:x + 3] = rgb
    return img


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # CV-Bench: 8 Depth rows (wide images, two boxes) and 2 rows of another task
    (root / "cv-bench").mkdir()
    rows = []
    for i in range(10):
        rows.append({"idx": i, "type": "3D", "task": "Depth" if i < 8 else "Count", "image": _png(_image(80, 40)),
                     "question": "Which object is closer to the camera, the lamp (red box) or the desk (blue box)?",
                     "choices": ["lamp", "desk"], "answer": "(A)" if i % 2 == 0 else "(B)",
                     "bbox": [[0.0, 0.0, 40.0, 40.0], [40.0, 10.0, 80.0, 30.0]] if i < 8 else None})
    pd.DataFrame(rows).to_parquet(root / "cv-bench" / "test.parquet")
    # BLINK: Visual_Correspondence (2 images, A-D) with keypoints, Art_Style (3 images)
    vc = root / "blink" / "Visual_Correspondence"
    vc.mkdir(parents=True)
    rows, keypoints = [], {}
    rng = np.random.default_rng(0)
    for i in range(8):
        answer = i % 4
        cand = [(10 + 25 * j, 15 + 10 * j) for j in range(4)]
        ref = (30, 20)
        spots2 = [(x, y, COLOURS[answer if j == answer else 4]) for j, (x, y) in enumerate(cand)]
        rows.append({"idx": f"val_Visual_Correspondence_{i}", "question": "Which point matches REF?",
                     "sub_task": "Visual_Correspondence", "image_1": _png(_image(60, 40, [(*ref, COLOURS[answer])])),
                     "image_2": _png(_image(100, 60, spots2)), "image_3": None, "image_4": None,
                     "choices": ["(A) Point A", "(B) Point B", "(C) Point C", "(D) Point D"],
                     "answer": "ABCD"[answer]})
        keypoints[f"val_Visual_Correspondence_{i}"] = {"ref": ref, "candidates": cand}
    pd.DataFrame(rows).to_parquet(vc / "val-00000-of-00001.parquet")
    (root / "blink" / "keypoints").mkdir()
    for sub in ("Visual_Correspondence", "Semantic_Correspondence", "Functional_Correspondence"):
        (root / "blink" / "keypoints" / f"{sub}.json").write_text(json.dumps(keypoints))
        if sub != "Visual_Correspondence":
            (root / "blink" / sub).mkdir()
            pd.DataFrame(rows).to_parquet(root / "blink" / sub / "val-00000-of-00001.parquet")
    art = root / "blink" / "Art_Style"
    art.mkdir()
    rows = [{"idx": f"val_Art_Style_{i}", "question": "Which image shares the reference's style?",
             "sub_task": "Art_Style", "image_1": _png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)),
             "image_2": _png(_image(32, 32)), "image_3": _png(_image(32, 48)), "image_4": None,
             "choices": ["the first image", "the second image"], "answer": "(A)" if i % 2 else "(B)"} for i in range(4)]
    pd.DataFrame(rows).to_parquet(art / "val-00000-of-00001.parquet")
    # MOCHI: trials of 3 and of 4 images
    (root / "mochi" / "data").mkdir(parents=True)
    rows = []
    for i in range(7):
        n = 3 if i < 4 else 4
        rows.append({"dataset": "shapegen", "condition": "abstract2", "trial": f"t{i}", "n_objects": n,
                     "oddity_index": i % n, "images": [_png(_image(40, 40, [(20, 20, COLOURS[int(j == i % n)])]))
                                                       for j in range(n)]})
    pd.DataFrame(rows).to_parquet(root / "mochi" / "data" / "train-00000-of-00001.parquet")
    return root


def test_letterbox_keeps_the_aspect_and_maps_pixels():
    img = _image(80, 40, [(60, 10, (255, 0, 0))])
    out, scale, (ox, oy) = letterbox(Image.fromarray(img), 64)
    assert out.shape == (64, 64, 3) and scale == pytest.approx(0.8) and (ox, oy) == (0, 16)
    x, y = round(60 * scale + ox), round(10 * scale + oy)
    assert tuple(out[y, x]) == pytest.approx((255, 0, 0), abs=40)
    assert tuple(out[2, 2]) == (122, 116, 104)                       # padding is CLIP's mean colour


@pytest.mark.parametrize("text, index", [("(A)", 0), ("B", 1), (" (D) ", 3)])
def test_answer_letters_are_read(text, index):
    assert answer_index(text) == index


def test_an_unreadable_answer_is_an_error():
    with pytest.raises(ValueError, match="option letter"):
        answer_index("the lamp")


def test_cvbench_depth_keeps_depth_rows_and_maps_boxes(root):
    task = load_cvbench_depth(root, size=64)
    assert len(task) == 8 and task.images.shape == (8, 1, 64, 64, 3) and task.n_options == 2
    assert task.answers.tolist() == [0, 1] * 4
    np.testing.assert_allclose(task.boxes[0], [[0, 16, 32, 48], [32, 24, 64, 40]])   # scale 0.8, offset (0, 16)
    assert "(A) lamp (B) desk" in task.question_texts()[0]
    train, test = split(task, 3, seed=0)
    assert len(train) == 3 and len(test) == 5 and test.boxes.shape == (5, 2, 4)
    assert sorted(train.meta + test.meta, key=lambda m: m["idx"]) == task.meta


def test_box_features_average_a_linear_ramp_to_the_box_centre():
    maps = torch.arange(8.0).repeat(2, 3, 8, 1)                     # value = column index, (2, 3, 8, 8)
    boxes = torch.tensor([[[16.0, 0, 48, 64], [40, 8, 56, 24]]] * 2)   # pixels of a 64-pixel image
    f = box_features(maps, boxes, 64)
    assert f.shape == (2, 2, 3)
    torch.testing.assert_close(f[:, 0], torch.full((2, 3), 32 / 8 - 0.5))          # pixel centres: x / 8 - 0.5
    torch.testing.assert_close(f[:, 1], torch.full((2, 3), 48 / 8 - 0.5))


def test_blink_correspondence_maps_keypoints_and_the_readout_finds_the_match(root):
    task = load_blink("visual_correspondence", root, size=64)
    assert task.images.shape == (8, 2, 64, 64, 3) and task.n_options == 4 and task.readout_kind == "correspondence"
    s1, s2 = 64 / 60, 64 / 100
    np.testing.assert_allclose(task.points[0, 0], [30 * s1, 20 * s1 + (64 - round(40 * s1)) // 2])
    np.testing.assert_allclose(task.points[0, 1], [10 * s2, 15 * s2 + (64 - round(60 * s2)) // 2])
    # colour features: the reference point's colour appears only at the true candidate
    maps = torch.from_numpy(task.images).permute(0, 1, 4, 2, 3).float()
    pred = BX.readout(task, maps)
    assert (pred == task.answers).all()


def test_blink_without_keypoints_loads_and_the_readout_says_what_is_missing(root, tmp_path):
    import shutil
    shutil.copytree(root / "blink" / "Visual_Correspondence", tmp_path / "blink" / "Visual_Correspondence")
    task = load_blink("visual_correspondence", tmp_path, size=32)
    assert task.points is None
    with pytest.raises(ValueError, match="keypoints"):
        BX.readout(task, torch.zeros(8, 2, 3, 4, 4))


def test_blink_art_style_has_a_reference_and_two_candidates(root):
    task = load_blink("art_style", root, size=32)
    assert task.images.shape == (4, 3, 32, 32, 3) and task.n_options == 2 and task.readout_kind == "style"
    assert task.answers.tolist() == [1, 0, 1, 0]


def test_mochi_keeps_trials_of_one_size_with_the_oddity_index_as_answer(root):
    three = load_mochi(root, size=32)
    assert three.images.shape == (4, 3, 32, 32, 3) and three.answers.tolist() == [0, 1, 2, 0]
    assert "other two" in three.question
    four = load_mochi(root, size=32, n_objects=4)
    assert len(four) == 3 and four.n_options == 4 and four.answers.tolist() == [0, 1, 2]
    assert "other three" in four.question
    assert (three.name, four.name) == ("odd_one_out", "odd_one_out_4")
    assert three.readout_kind == four.readout_kind == "odd_one_out"
    assert load_benchmark("odd_one_out_4", root, size=32).images.shape == (3, 4, 32, 32, 3)
    with pytest.raises(DatasetNotFound, match="n_objects == 5"):
        load_benchmark("odd_one_out_5", root, size=32)


def test_a_missing_benchmark_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound, match="never downloads"):
        load_blink("art_style", tmp_path)


def test_llava_benchmark_run_end_to_end(root, tiny_llava):
    runs = BX.prepare_benchmarks(tiny_llava, ["depth", "visual_correspondence", "art_style", "odd_one_out",
                                              "odd_one_out_4"], root, train_fraction=0.75, seed=0, size=32)
    assert len(runs["depth"].train) == 6 and len(runs["depth"].test) == 2 and len(runs["art_style"].train) == 3
    assert runs["depth"].train_maps is not None and runs["art_style"].train_maps is None
    assert runs["odd_one_out"].test_cls.shape[:2] == (1, 3) and runs["odd_one_out_4"].test_cls.shape[:2] == (1, 4)
    table, preds = BX.benchmark_readout_vs_vlm(tiny_llava, runs, "tiny-llava")
    assert list(table.task) == list(runs) and table.readout_acc.between(0, 100).all()
    chance = table.set_index("task").chance
    assert chance["odd_one_out"] == pytest.approx(100 / 3) and chance["odd_one_out_4"] == 25
    freq, agree = BX.benchmark_blind_test(tiny_llava, runs, "tiny-llava", preds)
    sums = freq.groupby(["task", "condition"]).frequency.sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    layers = BX.benchmark_layer_probe(tiny_llava, runs, "tiny-llava", layers=[0, 2], pool=2)
    assert layers.groupby("task").layer.apply(list).to_dict() == {n: [-1, 0, 2] for n in runs}
    assert layers.accuracy.between(0, 100).all()
    from vlmlab.blind.finetune import FinetuneConfig
    acc, tv = BX.benchmark_finetune_variants(tiny_llava, runs, "tiny-llava", preds, soft_tokens=[1], components=["lora"],
                                             config=FinetuneConfig(steps=1, batch_size=2))
    assert list(acc.variant[:3]) == ["original", "prompt", "lora"] and len(acc) == 15 and len(tv) == 15
    assert tv.tv.between(0, 1).all() and (tv.variant == "original").sum() == 5
    original = acc[acc.variant == "original"].set_index("task").accuracy
    assert (original == table.set_index("task").vlm_acc).all()


def test_llava_fine_tunings_are_cached_by_the_checkpoints_files_and_load_on_a_rerun(root, tiny_llava_path, tmp_path,
                                                                                    monkeypatch):
    """A second run with the same cache loads every variant's predictions (nothing trains) and gives the same
    tables; the key moves with a weight file's bytes and the dtype, and not with the folder's place."""
    import shutil

    import vlmlab.blind.finetune as FT
    from vlmlab.blind.llava import LlavaScorer
    from vlmlab.features import FeatureCache

    scorer = LlavaScorer(tiny_llava_path)
    runs = BX.prepare_benchmarks(scorer, ["depth", "art_style"], root, train_fraction=0.75, seed=0, size=32)
    preds = {name: BX.scorer_predictions(scorer, r.test) for name, r in runs.items()}
    cache = FeatureCache(tmp_path / "cache")
    args = (runs, "tiny-llava", preds, [1], 8, ["lora", "projector"], FT.FinetuneConfig(steps=1, batch_size=2))
    first = BX.benchmark_finetune_variants(scorer, *args, cache=cache)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 6               # 2 tasks x 3 variants
    with monkeypatch.context() as patch:
        patch.setattr(FT, "finetune_llava", lambda *a, **k: pytest.fail("a cached variant trained"))
        moved = tmp_path / "elsewhere" / "tiny-llava"
        shutil.copytree(tiny_llava_path, moved)
        again = BX.benchmark_finetune_variants(LlavaScorer(str(moved)), *args, cache=cache)
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a, b, check_exact=True)

    assert scorer.identity.endswith("-float32") and LlavaScorer(str(moved)).identity == scorer.identity
    assert LlavaScorer(tiny_llava_path, dtype=torch.bfloat16).identity != scorer.identity
    weights = next(moved.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                                                 # one bit of one weight
    weights.write_bytes(bytes(data))
    assert LlavaScorer(str(moved)).identity != scorer.identity


@pytest.mark.timeout(900)
def test_notebook_05_paper_profile_runs_on_fake_benchmarks(root, tiny_llava_path, kernel_name, tmp_path):
    """The paper profile as a user runs it (its params file, a local checkpoint folder, a data root)."""
    import papermill

    import vlmlab.params
    from vlmlab.runtime import REPO_ROOT

    out = tmp_path / "out"
    params = vlmlab.params.load("05_vlm_blind_tests", "paper", {
        "vlm": tiny_llava_path, "data_root": str(root), "device": "cpu", "dtype": "float32", "image_size": 32,
        "train_fraction": 0.75, "out_dir": str(out), "soft_tokens": [1],
        "components": ["lora", "projector", "vision"], "finetune_steps": 1, "finetune_batch": 2})
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / "05_vlm_blind_tests.ipynb"), str(tmp_path / "executed.ipynb"),
        parameters=dict(params),
        kernel_name=kernel_name, cwd=str(REPO_ROOT / "notebooks"), progress_bar=False, start_timeout=180)
    table = pd.read_csv(out / "tables" / "readout_vs_vlm.csv")
    assert list(table.task) == ["depth", "semantic_correspondence", "visual_correspondence",
                                "functional_correspondence", "art_style", "odd_one_out", "odd_one_out_4"]
    assert table.readout_acc.between(0, 100).all() and (table.chance > 0).all()
    blind = pd.read_csv(out / "tables" / "blind.csv")
    assert set(blind.condition) == {"image", "blank", "labels"}
    assert len(pd.read_csv(out / "tables" / "tv.csv")) == 7 * 5
    assert len(pd.read_csv(out / "tables" / "finetune.csv")) == 7 * 5
    assert set(pd.read_csv(out / "tables" / "layers.csv").layer) == {-1, 0, 2}      # the tiny LLaVA has 2 blocks
    claims = pd.read_csv(out / "tables" / "claims.csv", keep_default_na=False)
    assert claims.claim_id.str.startswith("blind.").all() and set(claims.verdict) <= {"holds", "fails", "not_measured"}
