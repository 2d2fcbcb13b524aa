"""open_clip tags and local weight files: the paper's tag spelling loads for real, offline, from a
Hugging Face cache laid out the way open_clip and huggingface_hub look for it; local files are
identified by content; damaged files name themselves."""
from __future__ import annotations

import hashlib
import os
import re

import open_clip
import pytest
import torch
from open_clip.constants import HF_WEIGHTS_NAME

import vlmlab.models.bundle as bundle_mod
from vlmlab.models import load_clip
from vlmlab.models.bundle import file_digest
from vlmlab.models.embedded import load_embedded
from vlmlab.models.openclip import WeightsNotFound, WeightsUnreadable, canonical_tag

PAPER_MODEL, PAPER_TAG = "ViT-B-16", "laion2B-s34B-b88K"     # params/paper: the paper's own spelling
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache in ``tmp_path`` (huggingface_hub reads its constants at import)."""
    import huggingface_hub.constants as C
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    return cache


def fill_hub_cache(cache, model: str, tag: str, state: dict) -> os.PathLike:
    """Save ``state`` where open_clip's pretrained config for (model, tag) points: the hub repo
    ``org/name`` and file named by its ``hf_hub`` entry, in huggingface_hub's cache layout
    ``models--org--name/{refs/main, snapshots/<rev>/<file>}``."""
    hf_hub = open_clip.get_pretrained_cfg(model, tag)["hf_hub"]
    repo_id, filename = os.path.split(hf_hub)      # 'org/name/' -> ('org/name', ''): the default file name
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    target = repo / "snapshots" / REVISION / (filename or HF_WEIGHTS_NAME)
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return target


def test_tags_resolve_like_open_clip():
    assert canonical_tag(PAPER_MODEL, PAPER_TAG) == "laion2b_s34b_b88k"
    assert canonical_tag("ViT-B-32", "openai") == "openai"
    with pytest.raises(WeightsNotFound, match="known tags"):
        canonical_tag(PAPER_MODEL, "laion2B-s99B")


@pytest.mark.slow
def test_paper_tag_loads_end_to_end_from_the_local_hub_cache(hf_cache):
    skeleton = open_clip.create_model(PAPER_MODEL, device="meta")     # shapes only, no memory
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g, dtype=torch.float16)  # fp16: half the bytes to write
             for k, v in skeleton.state_dict().items()}
    fill_hub_cache(hf_cache, PAPER_MODEL, PAPER_TAG, state)
    bundle = load_clip(PAPER_MODEL, PAPER_TAG, device="cpu")
    loaded = bundle.model.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        torch.testing.assert_close(loaded[k], v.float(), rtol=0, atol=0, msg=k)
    assert bundle.weights_id == "laion2b_s34b_b88k"        # the same cache key whatever the spelling


def test_a_tag_missing_from_the_cache_says_how_to_fetch_it(hf_cache):
    with pytest.raises(WeightsNotFound, match="fetch them once"):
        load_clip(PAPER_MODEL, PAPER_TAG, device="cpu")


def test_a_truncated_hub_file_names_its_path(hf_cache, tiny_clip):
    model, tag = "RN50", "openai"      # smaller than ViT-B-16; any cached tag takes the same path
    target = fill_hub_cache(hf_cache, model, tag, {"w": torch.zeros(1000)})
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(WeightsUnreadable, match=re.escape(str(target))):
        load_clip(model, tag, device="cpu")


def test_a_truncated_local_file_names_its_path(tmp_path, tiny_clip):
    from safetensors.torch import save_file
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(path))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsUnreadable, match=re.escape(str(path))):
        load_embedded("cpu", path)
    with pytest.raises(WeightsUnreadable, match=re.escape(str(path))):
        load_clip(tiny_clip.name, str(path), device="cpu")


def write_same_size(path, fill: int, old_ns: int = 1_600_000_000 * 10**9) -> None:
    """Overwrite ``path`` in place with 64 KiB of ``fill`` bytes, mtime pinned to an old time."""
    with open(path, "wb") as fh:           # in place: same inode
        fh.write(bytes([fill]) * 65536)
    os.utime(path, ns=(old_ns, old_ns))


def test_replacing_a_local_file_in_place_changes_its_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_mod, "_DIGESTS", {})
    path = tmp_path / "ckpt.bin"
    write_same_size(path, 1)
    first = file_digest(path)
    write_same_size(path, 2)                 # same name, size, path and even mtime: only the bytes differ
    second = file_digest(path)
    assert first != second
    assert second == hashlib.sha1(bytes([2]) * 65536).hexdigest()[:12]


def test_the_digest_is_memoised_by_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_mod, "_DIGESTS", {})
    path = tmp_path / "ckpt.bin"
    write_same_size(path, 3)
    monkeypatch.setattr(bundle_mod, "_RACY_NS", 0)             # as if the file were old: memoised
    first = file_digest(path)
    monkeypatch.setattr(bundle_mod, "_DIGESTS", {})            # a new process: the on-disk memo answers

    def no_hashing(path):
        raise AssertionError(f"hashed {path} again")

    monkeypatch.setattr(bundle_mod, "_hash_file", no_hashing)
    assert file_digest(path) == first


def test_a_local_checkpoint_replaced_in_place_gets_a_new_cache_identity(tmp_path, tiny_clip):
    from safetensors.torch import save_file
    path = tmp_path / "weights.safetensors"
    state = {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}
    save_file(state, str(path))
    before = load_clip(tiny_clip.name, str(path), device="cpu")
    size = path.stat().st_size
    save_file({k: v + 1 for k, v in state.items()}, str(path))      # other weights, same bytes count
    assert path.stat().st_size == size
    after = load_clip(tiny_clip.name, str(path), device="cpu")
    assert before.identity != after.identity
    assert after.identity == f"{tiny_clip.name}@weights.safetensors-{file_digest(path)}"


@pytest.mark.parametrize("allow, offline_inside", [("", True), ("1", False)])
def test_runs_read_the_hub_offline_unless_downloads_are_allowed(hf_cache, monkeypatch, allow, offline_inside):
    """Even with HF_HUB_OFFLINE unset, a run reads only the cache unless VLMLAB_ALLOW_DOWNLOAD=1."""
    import huggingface_hub.constants as C
    import vlmlab.models.openclip as oc

    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("VLMLAB_ALLOW_DOWNLOAD", allow)
    seen = []

    def fake_download(cfg, *args, **kwargs):                  # records the mode; never touches the network
        seen.append(C.HF_HUB_OFFLINE)
        raise FileNotFoundError("not in the cache")

    monkeypatch.setattr(oc.open_clip, "download_pretrained", fake_download)
    with pytest.raises(WeightsNotFound, match="VLMLAB_ALLOW_DOWNLOAD=1"):
        oc._tag_file(PAPER_MODEL, PAPER_TAG)
    assert seen == [offline_inside] and C.HF_HUB_OFFLINE is False   # restored after the call


@pytest.mark.parametrize("name, tag, quick", [("RN50", "openai", True), ("ViT-B-32", "openai", True),
                                              ("ViT-B-16", "laion2B-s34B-b88K", False)])
def test_openai_weights_are_built_with_quick_gelu(monkeypatch, tmp_path, name, tag, quick):
    """open_clip 3 builds nn.GELU for "RN50" / "ViT-B-32" and only warns when OpenAI's weights (trained with
    QuickGELU, as CoOp's and visual_prompting's clip.load builds them) are loaded into it."""
    import vlmlab.models.openclip as oc
    seen = {}

    class Built(Exception):
        pass

    def create(model_name, **kw):
        seen.update(kw)
        raise Built
    monkeypatch.setattr(oc, "_tag_file", lambda n, t: tmp_path / "weights.pt")
    monkeypatch.setattr(oc.open_clip, "create_model_and_transforms", create)
    with pytest.raises(WeightsUnreadable):
        oc.load_openclip(name, tag)
    assert seen.get("force_quick_gelu", False) is quick and oc.trained_with_quick_gelu(name, canonical_tag(name, tag)) is quick
    model = open_clip.create_model(name, force_quick_gelu=quick)              # random init: the activation it gets
    act = type(model.transformer.resblocks[0].mlp.gelu).__name__
    assert act == ("QuickGELU" if quick else "GELU")


def test_quick_gelu_is_part_of_the_cache_identity():
    """Features cached under nn.GELU must not be reused for the QuickGELU model of the same weights."""
    from vlmlab.models.openclip import load_openclip
    torch.manual_seed(0)
    plain = load_openclip("RN50", None, weights_id="w")
    torch.manual_seed(0)
    quick = load_openclip("RN50", None, weights_id="w", force_quick_gelu=True)
    assert plain.identity == "RN50@w" and quick.identity == "RN50@w+quickgelu"
