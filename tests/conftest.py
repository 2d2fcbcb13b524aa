"""Shared test setup: offline, batch-mode progress bars, headless plots, few threads, a private cache."""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("VLMLAB_BATCH", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("VLMLAB_THREADS", "2")        # the test machine is shared; kernels inherit this
os.environ.setdefault("OMP_NUM_THREADS", os.environ["VLMLAB_THREADS"])

import pytest  # noqa: E402

from vlmlab import runtime  # noqa: E402

runtime.set_threads()


@pytest.fixture(scope="session", autouse=True)
def _vlmlab_cache(tmp_path_factory):
    """Point VLMLAB_CACHE at a session temporary folder unless the caller set one."""
    if "VLMLAB_CACHE" in os.environ:
        yield runtime.cache_root()
        return
    path = tmp_path_factory.mktemp("vlmlab_cache")
    os.environ["VLMLAB_CACHE"] = str(path)
    yield path
    os.environ.pop("VLMLAB_CACHE", None)


@pytest.fixture
def load_benchmark():
    """``load_benchmark(name)``: ``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    from script_loader import load_script
    return lambda name: load_script(f"benchmarks/{name}.py")


TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def build_tiny_clip(folder, name: str = "vlmlab-test-tiny", context_length: int = 16, text_layers: int = 1):
    """A random-init open_clip ViT (32 px, one vision layer, seed 0) as a ClipBundle; well under a second."""
    import json

    import torch

    from vlmlab.models.openclip import load_openclip, register_config
    cfg = {**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], "context_length": context_length,
                                      "layers": text_layers}}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    register_config(path)
    torch.manual_seed(0)
    return load_openclip(name, None)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """The shared tiny random CLIP (context 16, one text layer)."""
    return build_tiny_clip(tmp_path_factory.mktemp("cfg"))


@pytest.fixture(scope="session")
def make_tiny_clip(tmp_path_factory):
    """``make_tiny_clip(name, context_length=..., text_layers=...)`` for tests that need another text tower."""
    return lambda name, **kw: build_tiny_clip(tmp_path_factory.mktemp("cfg"), name, **kw)


def write_fake_imagenet(root, synonyms: dict[str, str], parts=("imagenet/val", "imagenet-c/fog/5"), per_class: int = 2):
    """``parts`` of a fake ImageNet tree (``per_class`` random 8-px JPEGs per wnid) and ``imagenet/synset_words.txt``
    ("<wnid> <synonyms>" lines) under ``root``."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for part in parts:
        for w in synonyms:
            (root / part / w).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / part / w / f"{i}.JPEG")
    (root / "imagenet" / "synset_words.txt").write_text("".join(f"{w} {n}\n" for w, n in synonyms.items()))
    return root


@pytest.fixture
def fake_imagenet():
    """``write_fake_imagenet`` as a fixture, for test folders whose own conftest shadows this module's name."""
    return write_fake_imagenet


KERNEL = "vlmlab-pytest"


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """A kernel spec named ``vlmlab-pytest`` that runs ``sys.executable``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "vlmlab (pytest)", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    yield KERNEL
    mp.undo()
