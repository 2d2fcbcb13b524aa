"""vlmlab.data.catalog / check / fetch, offline: fake archives from a local HTTP server, a fake HF cache.

The server runs on 127.0.0.1 in a thread, answers from a dict, can drop a connection midway, and is shut
down at the end of each test. Nothing here reaches the network (HF_HUB_OFFLINE=1, see tests/conftest.py).
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from vlmlab import cli
from vlmlab.data import catalog, check
from vlmlab.data.catalog import ITEMS, Archive, File, HubCache, HubRepo, Item, Places, Tree
from vlmlab.data.fetch import FetchError, LayoutError, fetch_item
from vlmlab.runtime import REPO_ROOT

pytestmark = pytest.mark.timeout(120)


class _Server:
    """routes: URL path -> bytes; paths in ``drop`` send half their bytes, then close the connection."""

    def __init__(self):
        self.routes, self.drop, self.hits = {}, set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):                      # noqa: N802 - http.server's name
                server.hits.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.drop:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = _Server()
    yield s
    s.close()


def targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# a fake 2-class dataset: pkg/images/<class>/<i>.jpg inside the archive, ds/images/ in the data root
GOOD = targz({f"pkg/images/{c}/{i}.jpg": bytes([i]) * 50 for c in ("cat", "dog") for i in range(3)})
BAD = targz({f"pkg/pictures/{c}/{i}.jpg": b"x" for c in ("cat", "dog") for i in range(3)})


def toy_item(url: str, known_hash: str | None) -> Item:
    return Item("toy", "toy set", ("03_coop_shots",), Tree(("ds/images",), n_dirs=2, min_files=6),
                (Archive(url, known_hash, (("pkg/images", "ds/images"),)),), 0.001)


def test_fetch_unpacks_into_the_layout_and_skips_a_complete_item(server, tmp_path):
    server.routes["/toy.tar.gz"] = GOOD
    item, places = toy_item(server.url("/toy.tar.gz"), "sha256:" + sha256(GOOD)), Places(tmp_path / "root")
    assert check.status(item, places).state == "missing"
    assert fetch_item(item, places, progress=False) == "fetched"
    assert sorted(p.name for p in (tmp_path / "root" / "ds" / "images").iterdir()) == ["cat", "dog"]
    assert (tmp_path / "root" / "ds" / "images" / "dog" / "2.jpg").read_bytes() == bytes([2]) * 50
    assert sorted(os.listdir(tmp_path / "root")) == ["ds"], "no archive, staging or downloads folder left"
    assert fetch_item(item, places, progress=False) == "present, skipped"
    assert server.hits == ["/toy.tar.gz"], "a complete item is not downloaded twice"


def test_interrupted_download_is_not_taken_as_complete_and_a_rerun_finishes(server, tmp_path):
    server.routes["/toy.tar.gz"], server.drop = GOOD, {"/toy.tar.gz"}
    item, places = toy_item(server.url("/toy.tar.gz"), "sha256:" + sha256(GOOD)), Places(tmp_path / "root")
    with pytest.raises(FetchError, match="nothing partial was kept"):
        fetch_item(item, places, progress=False)
    downloads = tmp_path / "root" / ".downloads"
    assert not downloads.exists() or not any(downloads.iterdir()), list(downloads.iterdir())
    assert check.status(item, places).state == "missing"
    server.drop = set()                                       # the network is back
    assert fetch_item(item, places, progress=False) == "fetched"
    assert check.status(item, places).ok


def test_wrong_checksum_removes_the_download_and_says_so(server, tmp_path):
    server.routes["/toy.tar.gz"] = GOOD
    item, places = toy_item(server.url("/toy.tar.gz"), "sha256:" + "0" * 64), Places(tmp_path / "root")
    with pytest.raises(FetchError, match="checksum mismatch.*removed"):
        fetch_item(item, places, progress=False)
    left = [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    assert left == []


def test_wrong_layout_is_an_error_naming_what_is_missing_and_leaves_nothing(server, tmp_path):
    server.routes["/toy.tar.gz"] = BAD
    item, places = toy_item(server.url("/toy.tar.gz"), None), Places(tmp_path / "root")
    with pytest.raises(LayoutError, match=r"no pkg/images/ \(from toy.tar.gz\)"):
        fetch_item(item, places, progress=False)
    assert os.listdir(tmp_path / "root") == []


def test_single_file_with_a_hash_prefix(server, tmp_path):
    data = b"weights" * 100
    server.routes["/w.pth"] = data
    hub = tmp_path / "torch"
    good = Item("w", "w", ("04_visual_prompt_fid",), File("w.pth", "torch_hub", hash_prefix=sha256(data)[:8]),
                (Archive(server.url("/w.pth"), None, ((None, "w.pth"),)),), 0.001)
    assert fetch_item(good, Places(tmp_path, torch_hub=hub), progress=False) == "fetched"
    assert (hub / "checkpoints" / "w.pth").read_bytes() == data
    bad = Item("v", "v", ("04_visual_prompt_fid",), File("v.pth", "torch_hub", hash_prefix="00000000"),
               (Archive(server.url("/w.pth"), None, ((None, "v.pth"),)),), 0.001)
    with pytest.raises(FetchError, match="checksum mismatch.*removed"):
        fetch_item(bad, Places(tmp_path, torch_hub=hub), progress=False)
    assert not (hub / "checkpoints" / "v.pth").exists()


def test_status_on_a_fake_root_with_one_item_missing_and_one_corrupt(tmp_path, capsys, monkeypatch):
    root, hub = tmp_path / "root", tmp_path / "torch" / "hub"
    (root / "svhn").mkdir(parents=True)
    (root / "svhn" / "train_32x32.mat").write_bytes(b"m")                  # test_32x32.mat missing
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / catalog.INCEPTION_FILE).write_bytes(b"not inception")
    places = Places(root, torch_hub=hub)
    got = {n: check.status(ITEMS[n], places) for n in ("svhn", "cifar10", "inception-fid")}
    assert got["svhn"].state == "incomplete" and "test_32x32.mat" in got["svhn"].detail
    assert got["cifar10"].state == "missing"
    assert got["inception-fid"].state == "checksum mismatch"
    monkeypatch.setenv("TORCH_HOME", str(hub.parent))
    rc = cli.main(["data", "status", "--notebooks", "04_visual_prompt_fid", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "inception-fid" in out and "checksum mismatch" in out and "svhn " in out and "incomplete" in out
    assert "manual: extract NWPU-RESISC45" in out and "vlmlab data fetch cifar10" in out


def test_file_hash_is_memoised_by_path_size_and_mtime(tmp_path):
    f, memo = tmp_path / "f.bin", tmp_path / "memo.json"
    f.write_bytes(b"aaaa")
    first = check.file_hash(f, memo=memo)
    assert first == sha256(b"aaaa")
    st = f.stat()
    f.write_bytes(b"bbbb")                                                   # same size...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))                         # ...and mtime: the memo answers
    assert check.file_hash(f, memo=memo) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert check.file_hash(f, memo=memo) == sha256(b"bbbb")


def test_status_looks_where_the_real_loaders_look(data_root):
    """The fake root of tests/data/conftest.py, which vlmlab.data.real loads, is found (5 classes: incomplete)."""
    places = Places(data_root)
    got = {n: check.status(ITEMS[n], places) for n in
           ("imagenet-val", "imagenet-a", "imagenet-r", "imagenet-classnames", "coop/DTD", "coop/DTD-split")}
    assert got["imagenet-val"].state == "incomplete" and "5 class folders, expected 1000" in got["imagenet-val"].detail
    assert got["imagenet-a"].state == got["imagenet-r"].state == "incomplete"
    assert got["imagenet-classnames"].ok and got["coop/DTD-split"].ok
    assert got["coop/DTD"].state == "incomplete" and "18 images" in got["coop/DTD"].detail


@pytest.mark.parametrize("name", ["synset_words.txt", "LOC_synset_mapping.txt", "meta.bin"])
def test_synset_status_accepts_every_file_the_loader_reads(data_root, name):
    from vlmlab.data.real import SYNSET_FILES, synset_file
    places, item = Places(data_root), ITEMS["imagenet-synsets"]
    assert check.status(item, places).state == "missing"
    assert check.status(item, places).looked.split(" | ") == [str(data_root / "imagenet" / f) for f in SYNSET_FILES]
    (data_root / "imagenet" / name).write_bytes(b"x")
    got = check.status(item, places)
    assert got.ok and got.found == data_root / "imagenet" / name == synset_file(data_root)
    assert {Path(p).name for p in (item.where.path, *item.where.alternatives)} == set(SYNSET_FILES)


def test_cli_exit_codes(tmp_path, capsys):
    assert cli.main(["data", "status", "--profile", "embedded"]) == 0
    assert cli.main(["data", "fetch"]) == 2
    assert cli.main(["data", "status", "--notebooks", "99_nope"]) == 2
    assert cli.main(["data", "fetch", "imagenet-val", "--data-root", str(tmp_path)]) == 1   # manual: the steps


# ---- Hugging Face: a pre-populated cache, HF_HUB_OFFLINE=1 -----------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> None:
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = repo / "blobs" / sha256(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_hub_dataset_from_an_offline_cache_lands_in_the_data_root(tmp_path):
    cache, places = tmp_path / "hf", Places(tmp_path / "root", hf_cache=tmp_path / "hf")
    hf_cache(cache, "nyu-visionx/CV-Bench", {"test.parquet": b"PAR1", "README.md": b"x"}, "dataset")
    assert fetch_item(ITEMS["cv-bench"], places) == "fetched"
    assert (tmp_path / "root" / "cv-bench" / "test.parquet").read_bytes() == b"PAR1"
    assert not (tmp_path / "root" / "cv-bench" / "README.md").exists()          # only the declared files
    with pytest.raises(FetchError, match="HF_HUB_OFFLINE is set"):
        fetch_item(ITEMS["mochi"], places)                                     # not in the cache, offline
    assert sorted(os.listdir(tmp_path / "root")) == ["cv-bench"]


def test_hub_weights_status_and_fetch_from_the_cache(tmp_path):
    cache = tmp_path / "hf"
    places = Places(tmp_path, hf_cache=cache)
    tag = ITEMS["openclip/ViT-B-16/laion2B-s34B-b88K"]
    assert check.status(tag, places).state == "missing"
    hf_cache(cache, tag.get.repo_id, {"open_clip_pytorch_model.bin": b"w"})     # the older of open_clip's names
    assert check.status(tag, places).ok and fetch_item(tag, places) == "present, skipped"
    llava = Item("l", "l", ("05_vlm_blind_tests",), HubCache("org/vlm", (("config.json",), ("model.safetensors.index.json",))),
                 HubRepo("org/vlm"), 1.0)
    index = b'{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}'
    hf_cache(cache, "org/vlm", {"config.json": b"{}", "model.safetensors.index.json": index, "model-1.safetensors": b"1"})
    st = check.status(llava, places)
    assert st.state == "incomplete" and "model-2.safetensors" in st.detail


# ---- the catalog against the loaders and the paper profile --------------------------------------------
def test_torchvision_recipes_match_torchvision():
    import torchvision.datasets as tvd

    from vlmlab.visual_prompts.data import TORCHVISION
    a = {n: ITEMS[n.lower()].get for n in ("CIFAR10", "CIFAR100", "SVHN", "CLEVR")}
    assert a["CIFAR10"][0].url == tvd.CIFAR10.url and a["CIFAR10"][0].known_hash == "md5:" + tvd.CIFAR10.tgz_md5
    assert a["CIFAR100"][0].url == tvd.CIFAR100.url and a["CIFAR100"][0].known_hash == "md5:" + tvd.CIFAR100.tgz_md5
    for archive, split in zip(a["SVHN"], ("train", "test")):
        url, name, md5 = tvd.SVHN.split_list[split]
        assert (archive.url, archive.known_hash, archive.moves[0][1]) == (url, "md5:" + md5, f"svhn/{name}")
    assert (a["CLEVR"][0].url, a["CLEVR"][0].known_hash) == (tvd.CLEVRClassification._URL, "md5:" + tvd.CLEVRClassification._MD5)
    for name, (_, folder, _, _) in TORCHVISION.items():
        assert (ITEMS[name.lower()].where.candidates[0] + "/").startswith(folder + "/"), name


def test_blind_loaders_read_where_the_catalog_points(tmp_path, monkeypatch):
    from vlmlab.blind import benchmarks

    seen = []

    def record(folder, pattern, dataset):
        seen.append(str((folder / pattern).relative_to(tmp_path)))
        raise LookupError("recorded")

    monkeypatch.setattr(benchmarks, "_parquet", record)
    (tmp_path / "cv-bench").mkdir()
    (tmp_path / "cv-bench" / "test.parquet").write_bytes(b"")
    for load in [benchmarks.load_cvbench_depth, benchmarks.load_mochi,
                 *[lambda root, t=t: benchmarks.load_blink(t, root) for t in benchmarks.BLINK_SUBTASKS]]:
        with pytest.raises(LookupError):
            load(tmp_path)
    declared = {f"{ITEMS[n].where.candidates[0]}/{r}" for n in ("cv-bench", "blink", "mochi") for r in ITEMS[n].where.require}
    assert set(seen) == declared
    assert catalog.BLINK_FOLDERS == tuple(benchmarks.BLINK_SUBTASKS.values())


def _paper(nb: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "params" / "paper" / f"{nb}.yaml").read_text())


def _item_of(spec: str) -> str:
    from vlmlab.visual_prompts.data import PAPER_DATASETS
    spec = PAPER_DATASETS.get(spec, spec)
    fixed = {"imagenet_val": "imagenet-val", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r",
             "imagenet_v2": "imagenet-v2", "imagenet_sketch": "imagenet-sketch",
             "coop:ImageNet": "imagenet-train", "folder:RESISC45": "resisc45"}
    if spec in fixed:
        return fixed[spec]
    kind, _, name = spec.partition(":")
    return f"coop/{name}" if kind == "coop" else name.lower()


def test_every_paper_profile_need_is_declared_for_its_notebook():
    import open_clip

    needs = {"01_uniformity_analysis": ["source", "shift_sources"], "02_uniinfo_tta": ["source", "support_source"],
             "03_coop_shots": ["datasets", "dg_targets"], "04_visual_prompt_fid": ["datasets", "reference"]}
    for nb, keys in needs.items():
        p = _paper(nb)
        if p.get("classnames") == "synsets":
            assert nb in ITEMS["imagenet-synsets"].notebooks, nb
        specs = [s for k in keys for s in (p[k] if isinstance(p[k], list) else [p[k]])]
        for spec in specs:
            item = ITEMS[_item_of(spec)]
            assert nb in item.notebooks, f"{nb} needs {spec!r} but catalog item {item.name!r} does not list it"
        name = f"openclip/{p['model']}/{p['pretrained']}"
        assert nb in ITEMS[name].notebooks, name
        repo = open_clip.get_pretrained_cfg(p["model"], p["pretrained"])["hf_hub"]
        assert repo.rstrip("/") == ITEMS[name].get.repo_id
    assert _paper("05_vlm_blind_tests")["vlm"] == ITEMS["llava-1.5-7b"].get.repo_id
    assert {i.name for i in catalog.select("paper", ["05_vlm_blind_tests"])} == {
        "llava-1.5-7b", "cv-bench", "blink", "mochi", "blink-keypoints"}
    assert catalog.select("embedded") == []
