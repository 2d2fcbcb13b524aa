"""``vlmlab data fetch``: download what ``vlmlab.data.catalog`` declares downloadable, checked and atomic.

URLs go through pooch (``pooch.retrieve``: its HTTP downloader with a progress bar, the published
checksum when the catalog has one, and a temporary file moved into place only once complete and verified,
so an interrupted download is never taken as complete; rerunning fetches it again). Archives are
unpacked into a hidden staging folder inside the data root (same file system), their folders moved into
the loaders' layout there, the result checked against the item's declaration, and only then renamed
into place: a wrong layout raises ``FetchError`` naming what is missing and leaves nothing in the data
root. Hugging Face files go through ``huggingface_hub`` into its own cache (resumable, ETag-checked);
datasets are then linked (or copied) from the cache into the data root the same atomic way. Items
already present are skipped. This module is the only place in vlmlab that downloads anything.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from vlmlab.data.catalog import File, HubRepo, Item, Manual, Places, Tree
from vlmlab.data.check import check_tree, status
from vlmlab.runtime import get_logger

log = get_logger("vlmlab.data.fetch")
DOWNLOADS = ".downloads"          # archives under the data root, deleted once their item is in place


class FetchError(RuntimeError):
    """A download or an unpacked layout that failed its check; the message names the item and the fix."""


class LayoutError(FetchError):
    """The unpacked archive is not what the catalog declares (nothing was placed, the archive is removed)."""


def _retrieve(url: str, known_hash: str | None, folder: Path, fname: str, progress: bool) -> Path:
    """pooch download of ``url`` to ``folder/fname`` (kept if already there with the right hash)."""
    import pooch
    import requests

    try:
        return Path(pooch.retrieve(url, known_hash, fname=fname, path=folder,
                                   downloader=pooch.HTTPDownloader(progressbar=progress, timeout=60)))
    except ValueError as err:        # pooch's hash check: the temporary file is already deleted
        raise FetchError(f"checksum mismatch for {url}: {err}. The download was removed; rerun to fetch it "
                         f"again, or report the new checksum if the file changed upstream") from err
    except requests.exceptions.RequestException as err:
        raise FetchError(f"download of {url} failed ({type(err).__name__}: {err}); nothing partial was kept, "
                         f"rerun `vlmlab data fetch` to start it again") from err


def _unpack(archive: Path, dest: Path) -> None:
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")      # no absolute paths, links out or devices
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        raise FetchError(f"{archive} is neither a tar nor a zip archive; delete it and rerun")


def _target(item: Item, places: Places, dest: str) -> Path:
    """Where a single downloaded file goes: the torch hub checkpoints or the data root."""
    if isinstance(item.where, File) and item.where.base == "torch_hub":
        return places.torch_checkpoints() / dest
    return Path(places.data_root) / dest


def _fetch_files(item: Item, places: Places, progress: bool) -> None:
    """Items whose archives are all single files (``moves`` with ``None``): pooch puts them in place."""
    for archive in item.get:
        for _, dest in archive.moves:
            path = _target(item, places, dest)
            _retrieve(archive.url, archive.known_hash, path.parent, path.name, progress)
    after = status(item, places)
    if after.state == "checksum mismatch":        # the hash_prefix check pooch cannot do
        after.found.unlink()
        raise FetchError(f"{item.name}: checksum mismatch ({after.detail}); removed {after.found}. "
                         f"Rerun to download it again")


def _check_staged(item: Item, stage: Path, missing: list[str]) -> None:
    if missing:
        raise LayoutError(f"{item.name}: the archive does not have the expected layout: no {', '.join(missing)} inside "
                         f"it. Nothing was placed in the data root; the catalog entry needs fixing")
    if isinstance(item.where, Tree):
        state, detail, _ = check_tree(item.where, stage)
        if state != "present":
            raise LayoutError(f"{item.name}: unpacked, but {state}: {detail or 'nothing at ' + str(item.where.candidates)}. "
                             f"Nothing was placed in the data root")


def _place(item: Item, stage: Path, root: Path, dests: list[str]) -> None:
    """Rename each staged destination into the data root, after checking none of them exists."""
    clash = [str(root / d) for d in dests if (root / d).exists()]
    if clash:
        raise FetchError(f"{item.name}: {clash} already exist(s) but the item is not complete "
                         f"({status(item, Places(root)).detail}); move it away and rerun")
    for d in dests:
        (root / d).parent.mkdir(parents=True, exist_ok=True)
        os.rename(stage / d, root / d)


def _staging(item: Item, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".fetch-{item.name.replace('/', '_')}-", dir=root))


def _fetch_archives(item: Item, places: Places, progress: bool, keep_archives: bool) -> None:
    root = Path(places.data_root)
    archives = [_retrieve(a.url, a.known_hash, root / DOWNLOADS, Path(a.url).name, progress) for a in item.get]
    tmp, drop = _staging(item, root), False
    try:
        stage, missing, dests = tmp / "root", [], []
        for i, (spec, path) in enumerate(zip(item.get, archives)):
            log.info("unpacking %s", path)
            _unpack(path, tmp / f"x{i}")
            for src, dest in spec.moves:
                if not (tmp / f"x{i}" / src).exists():
                    missing.append(f"{src}/ (from {path.name})")
                    continue
                (stage / dest).parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp / f"x{i}" / src, stage / dest)
                dests.append(dest)
        _check_staged(item, stage, missing)
        _place(item, stage, root, dests)
        drop = not keep_archives
    except LayoutError:
        drop = True                                 # a rerun would unpack the same wrong layout
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if drop:                                    # kept after other failures (a clash): no second download
            for path in archives:
                path.unlink(missing_ok=True)
            if not any((root / DOWNLOADS).iterdir()):
                (root / DOWNLOADS).rmdir()


def _hub_error(repo: HubRepo, err: Exception) -> FetchError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    hint = (" HF_HUB_OFFLINE is set: unset it to download (make data does not set it)" if offline
            else " Check the network, and `hf auth login` if the repo is gated")
    return FetchError(f"could not get {repo.repo_id} ({repo.repo_type}) from the Hugging Face hub or its cache: "
                      f"{type(err).__name__}: {err}.{hint}")


def _fetch_hub(item: Item, places: Places) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    repo, cache = item.get, places.hf_cache
    try:
        if repo.place is None and repo.allow_patterns and not any("*" in p for p in repo.allow_patterns):
            errors = []
            for name in repo.allow_patterns:       # open_clip's order: the first file the repo has
                try:
                    hf_hub_download(repo.repo_id, name, repo_type=repo.repo_type, cache_dir=cache)
                    return
                except Exception as err:            # noqa: BLE001 - the next name may exist
                    errors.append(err)
            raise errors[-1]
        snap = Path(snapshot_download(repo.repo_id, repo_type=repo.repo_type, cache_dir=cache,
                                      allow_patterns=list(repo.allow_patterns) if repo.allow_patterns else None))
    except FetchError:
        raise
    except Exception as err:                        # huggingface_hub's offline / HTTP / not-found errors
        raise _hub_error(repo, err) from err
    if repo.place is not None:
        _link_snapshot(item, snap, Path(places.data_root))


def _link_snapshot(item: Item, snap: Path, root: Path) -> None:
    """Hard-link (else copy) the snapshot's matching files into ``<root>/<place>``, atomically."""
    repo = item.get
    tmp = _staging(item, root)
    try:
        stage = tmp / "root"
        files = {f for p in (repo.allow_patterns or ("**/*",)) for f in snap.glob(p) if f.is_file()}
        for f in sorted(files):
            out = stage / repo.place / f.relative_to(snap)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(os.path.realpath(f), out)
            except OSError:
                shutil.copy2(os.path.realpath(f), out)
        _check_staged(item, stage, [])
        _place(item, stage, root, [repo.place])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_item(item: Item, places: Places, *, progress: bool = True, keep_archives: bool = False) -> str:
    """Obtain ``item`` unless it is present; returns what happened ("present, skipped" / "fetched").

    Raises:
        FetchError: a manual item, a failed download, a checksum mismatch or a wrong layout (the message
            says which and what to do).
    """
    before = status(item, places)
    if before.ok:
        return "present, skipped"
    if isinstance(item.get, Manual):
        raise FetchError(f"{item.name} cannot be downloaded by vlmlab ({item.get.reason}): {item.get.steps}")
    if before.state == "checksum mismatch" and before.found is not None:
        before.found.unlink()
        log.warning("%s: removed %s (checksum mismatch: %s); downloading it again", item.name, before.found, before.detail)
    log.info("fetching %s (about %.2f GB)", item.name, item.size_gb)
    if isinstance(item.get, HubRepo):
        _fetch_hub(item, places)
    elif all(src is None for a in item.get for src, _ in a.moves):
        _fetch_files(item, places, progress)
    else:
        _fetch_archives(item, places, progress, keep_archives)
    after = status(item, places)
    if not after.ok:
        raise FetchError(f"{item.name}: fetched, but it is {after.state} at {after.looked}: {after.detail}")
    return "fetched"

