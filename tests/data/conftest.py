"""Small fake data roots of tiny JPEGs, laid out like the real releases."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

# 5 fake "ImageNet" classes; A uses 2 of them, R 3 (sorted wnid order = class index).
WNIDS = ["n00000001", "n00000002", "n00000003", "n00000004", "n00000005"]
NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]
A_WNIDS = ["n00000002", "n00000005"]
R_WNIDS = ["n00000001", "n00000003", "n00000004"]


def write_jpeg(path: Path, seed: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def image_folder(base: Path, wnids: list[str], per_class: int, ext: str = ".JPEG") -> None:
    for c, w in enumerate(wnids):
        for i in range(per_class):
            write_jpeg(base / w / f"img_{c}_{i}{ext}", seed=100 * c + i)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """<root>/imagenet/{val,classnames.txt}, imagenet-c/{fog,gaussian_noise}/..., imagenet-a, imagenet-r, dtd."""
    root = tmp_path / "data"
    image_folder(root / "imagenet" / "val", WNIDS, per_class=3)
    (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES)))
    image_folder(root / "imagenet-c" / "fog" / "5", WNIDS, per_class=2)
    image_folder(root / "imagenet-c" / "gaussian_noise" / "3", WNIDS, per_class=2)
    image_folder(root / "imagenet-a", A_WNIDS, per_class=2, ext=".jpg")
    image_folder(root / "imagenet-r", R_WNIDS, per_class=2, ext=".png")
    # CoOp DTD: images/<class>/<file>.jpg + split_zhou_DescribableTextures.json
    dtd, classes, split = root / "dtd", ["banded", "zigzagged", "woven"], {"train": [], "val": [], "test": []}
    for c, name in enumerate(classes):
        for i in range(6):
            rel = f"{name}/{name}_{i:04d}.jpg"
            write_jpeg(dtd / "images" / rel, seed=1000 + 10 * c + i)
            part = "train" if i < 3 else "val" if i == 3 else "test"
            split[part].append([rel, c, name])
    (dtd / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return root


@pytest.fixture
def tree() -> SimpleNamespace:
    """The fake trees' class lists."""
    return SimpleNamespace(wnids=WNIDS, names=NAMES, a_wnids=A_WNIDS, r_wnids=R_WNIDS)
