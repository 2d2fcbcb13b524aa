"""Notebook 05's paper-profile tasks, read from the real benchmarks under the data root.

Fu et al. ask their VLMs CV-Bench Depth, four BLINK val subtasks and MOCHI (``hidden_in_plain_sight.md``
§3). Each loader returns an ``MCTask`` like the world's tasks, so the readouts and the tables run
unchanged: every image is letterboxed to a ``size``-pixel square (aspect kept, padded with CLIP's mean
colour, as Prismatic's letterbox does), and boxes and keypoints are mapped into that square.

Layouts (``<root>`` = the data root, ``$VLMLAB_DATA`` or ``~/data``; vlmlab never downloads):

    CV-Bench  <root>/cv-bench/test.parquet  (nyu-visionx/CV-Bench; the rows with task == "Depth")
    BLINK     <root>/blink/<Subtask>/val-*.parquet  (BLINK-Benchmark/BLINK; test answers are hidden)
    MOCHI     <root>/mochi/data/train-*.parquet  (tzler/MOCHI)
    keypoints <root>/blink/keypoints/<Subtask>.json  (optional, see below)

BLINK ships its correspondence questions only as images with the points drawn on them; the vision
readout needs the points' coordinates. Put them, from the source annotations (SPair-71k, HPatches,
FunKPoint), in ``keypoints/<Subtask>.json`` as ``{"<idx>": {"ref": [x, y], "candidates": [[x, y] x 4]}}``
in pixels of ``image_1`` and ``image_2``; without that file the task loads (the VLM can be asked) and
the readout says what is missing.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vlmlab.blind.tasks import LETTERS, MCTask
from vlmlab.data.base import DatasetNotFound
from vlmlab.runtime import FETCH_HINT, data_root

BLINK_SUBTASKS = {"semantic_correspondence": "Semantic_Correspondence", "visual_correspondence": "Visual_Correspondence",
                  "functional_correspondence": "Functional_Correspondence", "art_style": "Art_Style"}
BENCHMARK_TASKS = ("depth", *BLINK_SUBTASKS, "odd_one_out", "odd_one_out_4")   # MOCHI's 3- and 4-image trials
HOW_TO_GET = {
    "cv-bench": "hf download nyu-visionx/CV-Bench --repo-type dataset --local-dir <root>/cv-bench",
    "blink": "hf download BLINK-Benchmark/BLINK --repo-type dataset --local-dir <root>/blink",
    "mochi": "hf download tzler/MOCHI --repo-type dataset --local-dir <root>/mochi",
}
FILL = (122, 116, 104)   # CLIP's mean colour, 255 * (0.481, 0.458, 0.408)


def letterbox(img: Image.Image, size: int, fill=FILL) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit ``img`` into a ``size`` square, aspect kept, centred on ``fill``.

    Returns the (size, size, 3) uint8 image, the scale and the (x, y) offset: a pixel (x, y) of ``img``
    lands at (x * scale + ox, y * scale + oy).
    """
    img = img.convert("RGB")
    scale = size / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    out = Image.new("RGB", (size, size), tuple(fill))
    ox, oy = (size - w) // 2, (size - h) // 2
    out.paste(img.resize((w, h), Image.BICUBIC), (ox, oy))
    return np.asarray(out), scale, (ox, oy)


def _decode(cell) -> Image.Image:
    """A parquet image cell (HF ``Image`` struct with ``bytes``/``path``, or raw bytes) -> PIL image."""
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return Image.open(io.BytesIO(cell))
    return Image.open(cell)


def answer_index(answer: str) -> int:
    """'(A)' or 'A' -> 0, '(B)' -> 1, ..."""
    letter = str(answer).strip().strip("()").strip()
    if len(letter) != 1 or letter not in LETTERS:
        raise ValueError(f"cannot read an option letter from answer {answer!r}")
    return LETTERS.index(letter)


def _parquet(folder: Path, pattern: str, dataset: str):
    import pandas as pd

    files = sorted(folder.glob(pattern))
    if not files:
        raise DatasetNotFound(f"no {pattern} under {folder}; get {dataset} with `{HOW_TO_GET[dataset]}` "
                              f"(vlmlab never downloads at run time; {FETCH_HINT})")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _with_choices(question: str, choices) -> str:
    """The question and its options: 'Which ...? (A) lamp (B) desk'."""
    opts = " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return f"{question} {opts}" if len(choices) else question


def load_cvbench_depth(root=None, size: int = 336, bbox_format: str = "xyxy") -> MCTask:
    """CV-Bench Depth (which of the two boxed objects is closer): one image, options A/B, the boxes.

    ``bbox_format``: how the ``bbox`` column holds each box, ``xyxy`` (x1, y1, x2, y2) or ``xywh``.
    """
    folder = data_root(root) / "cv-bench"
    pattern = "test.parquet" if (folder / "test.parquet").exists() else "test_3d.parquet"   # 3D: Depth lives there
    df = _parquet(folder, pattern, "cv-bench")
    df = df[df["task"] == "Depth"].reset_index(drop=True)
    if "bbox" not in df:
        raise DatasetNotFound("CV-Bench has no 'bbox' column here; the depth readout needs the two boxes "
                              "(use the nyu-visionx/CV-Bench test.parquet)")
    images, boxes = np.empty((len(df), 1, size, size, 3), np.uint8), np.empty((len(df), 2, 4), np.float32)
    for i, row in df.iterrows():
        images[i, 0], scale, (ox, oy) = letterbox(_decode(row["image"]), size)
        b = np.asarray([np.asarray(x, np.float32) for x in row["bbox"]])[:2]
        if bbox_format == "xywh":
            b[:, 2:] += b[:, :2]
        if (b[:, 2:] < b[:, :2]).any():
            raise ValueError(f"CV-Bench idx {row['idx']}: box {b.tolist()} is not {bbox_format}; pass bbox_format=")
        boxes[i] = b * scale + np.array([ox, oy, ox, oy], np.float32)
    return MCTask("depth", images, np.array([answer_index(a) for a in df["answer"]]), 2,
                  "Which object is closer to the camera?", [{"idx": int(i)} for i in df["idx"]],
                  questions=[_with_choices(q, c) for q, c in zip(df["question"], df["choices"])], boxes=boxes)


def load_blink(task: str, root=None, size: int = 336, split: str = "val") -> MCTask:
    """A BLINK subtask: correspondence (REF image, then the candidates' image; A-D) or Art_Style (REF, A, B)."""
    sub = BLINK_SUBTASKS[task]
    folder = data_root(root) / "blink"
    df = _parquet(folder / sub, f"{split}-*.parquet", "blink")
    cols = [c for c in ("image_1", "image_2", "image_3", "image_4") if df[c].notna().all()]
    n, k = len(df), len(cols)
    images = np.empty((n, k, size, size, 3), np.uint8)
    transforms = []
    for i, row in df.iterrows():
        t = []
        for j, c in enumerate(cols):
            images[i, j], scale, off = letterbox(_decode(row[c]), size)
            t.append((scale, off))
        transforms.append(t)
    n_options = 2 if task == "art_style" else 4
    kind = "style" if task == "art_style" else "correspondence"
    points = _keypoints(folder / "keypoints" / f"{sub}.json", df["idx"], transforms) if kind == "correspondence" else None
    return MCTask(task, images, np.array([answer_index(a) for a in df["answer"]]), n_options, sub.replace("_", " "),
                  [{"idx": str(i)} for i in df["idx"]], questions=[_with_choices(q, c) for q, c in
                                                                   zip(df["question"], df["choices"])],
                  kind=kind, points=points, labels=("REF",) + tuple(LETTERS[:k - 1]))


def _keypoints(path: Path, ids, transforms) -> np.ndarray | None:
    """(n, 5, 2) reference point (in image 1) and candidates (in image 2), letterboxed; None without the file."""
    if not path.exists():
        return None
    table = json.loads(path.read_text())
    out = np.empty((len(ids), 5, 2), np.float32)
    for q, (idx, t) in enumerate(zip(ids, transforms)):
        if str(idx) not in table:
            raise KeyError(f"{path} has no keypoints for question {idx!r}")
        entry = table[str(idx)]
        (s1, (x1, y1)), (s2, (x2, y2)) = t[0], t[1]
        out[q, 0] = np.asarray(entry["ref"], np.float32) * s1 + (x1, y1)
        out[q, 1:] = np.asarray(entry["candidates"], np.float32) * s2 + (x2, y2)
    return out


def load_mochi(root=None, size: int = 224, n_objects: int = 3) -> MCTask:
    """MOCHI oddity trials with ``n_objects`` images: which image shows another object?

    Most trials have 3 images, the rest 4 (the paper pools them: its plotted chance, 0.328, puts about
    94 % of the trials at 3). An ``MCTask`` has one option count, so each size is a task of its own:
    ``odd_one_out`` (3) and ``odd_one_out_<n>``, both read out as ``odd_one_out``.
    """
    df = _parquet(data_root(root) / "mochi" / "data", "*.parquet", "mochi")
    df = df[df["n_objects"] == n_objects].reset_index(drop=True)
    if not len(df):
        raise DatasetNotFound(f"MOCHI has no trials with n_objects == {n_objects}")
    images = np.empty((len(df), n_objects, size, size, 3), np.uint8)
    for i, row in df.iterrows():
        for j, cell in enumerate(row["images"]):
            images[i, j] = letterbox(_decode(cell), size)[0]
    others = {2: "other two", 3: "other three"}.get(n_objects - 1, "others")
    meta = [{"dataset": d, "condition": c, "trial": t} for d, c, t in zip(df["dataset"], df["condition"], df["trial"])]
    name = "odd_one_out" if n_objects == 3 else f"odd_one_out_{n_objects}"
    return MCTask(name, images, df["oddity_index"].to_numpy().astype(int), n_objects,
                  f"Which image shows a different object from the {others}?", meta, labels=tuple(LETTERS[:n_objects]),
                  kind="odd_one_out")


def load_benchmark(name: str, root=None, size: int = 336) -> MCTask:
    """One of ``BENCHMARK_TASKS`` from the data root."""
    if name == "depth":
        return load_cvbench_depth(root, size)
    if name in BLINK_SUBTASKS:
        return load_blink(name, root, size)
    if name == "odd_one_out":
        return load_mochi(root, size)
    if (n_objects := name.removeprefix("odd_one_out_")) != name and n_objects.isdigit():
        return load_mochi(root, size, int(n_objects))
    raise KeyError(f"unknown benchmark task {name!r}; choose from {list(BENCHMARK_TASKS)}")


def split(task: MCTask, n_train: int, seed: int = 0) -> tuple[MCTask, MCTask]:
    """A seeded split into ``n_train`` training questions (the depth probe's) and the rest for testing."""
    order = np.random.default_rng(seed).permutation(len(task))
    if not 0 <= n_train < len(task):
        raise ValueError(f"n_train={n_train} must leave test questions out of {len(task)}")
    return subset(task, order[:n_train]), subset(task, order[n_train:])


def subset(task: MCTask, index) -> MCTask:
    """The questions at ``index`` (every per-question field sliced alike)."""
    import dataclasses

    index = np.asarray(index)

    def take(x):
        return None if x is None else x[index]

    return dataclasses.replace(task, images=task.images[index], answers=task.answers[index],
                               meta=[task.meta[i] for i in index] if task.meta else [], clean=take(task.clean),
                               points=take(task.points), boxes=take(task.boxes),
                               questions=None if task.questions is None else [task.questions[i] for i in index])
