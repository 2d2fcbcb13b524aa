"""Is each catalog item there and complete? ``vlmlab data status``'s checks and table.

Never hashes a tree: a folder (``Tree``) is checked by its class-folder count per part, its required
files and its image count (``os.scandir`` / ``os.walk``, no reads); only single files with a known
checksum are hashed, memoised in ``<cache>/data_hashes.json`` by (path, size, mtime, algorithm), so a
second ``vlmlab data status`` reads nothing. Hugging Face files are looked up in the local cache only
(``huggingface_hub.try_to_load_from_cache``). States: present, missing, incomplete, checksum mismatch.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from vlmlab.data.base import IMAGE_EXTENSIONS
from vlmlab.data.catalog import File, HubCache, Item, Places, Tree


@dataclass
class Status:
    item: Item
    state: str                 # present | missing | incomplete | checksum mismatch
    looked: str                # where it was looked for
    detail: str = ""
    found: Path | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.state == "present"


def _count_images(folder: Path) -> int:
    n = 0
    for _, _, files in os.walk(folder):
        n += sum(1 for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return n


def _subdirs(folder: Path) -> int:
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.is_dir() and not e.name.startswith("."))


def check_tree(spec: Tree, root: Path) -> tuple[str, str, Path | None]:
    """(state, detail, folder found) of a ``Tree`` under ``root``."""
    folder = next((root / c for c in spec.candidates if (root / c).is_dir()), None)
    if folder is None:
        return "missing", "", None
    problems = []
    for part in spec.parts:
        sub = folder / part
        if not sub.is_dir():
            problems.append(f"no {part}/")
        elif spec.n_dirs is not None and (n := _subdirs(sub)) != spec.n_dirs:
            problems.append(f"{part or '.'}: {n} class folders, expected {spec.n_dirs}")
    problems += [f"no {p}" for p in spec.require if not any(folder.glob(p))]
    if not problems and spec.min_files is not None and (n := _count_images(folder)) < spec.min_files:
        problems.append(f"{n} images, expected at least {spec.min_files}")
    if problems:
        return "incomplete", "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""), folder
    return "present", "", folder


def _hash_memo() -> Path:
    from vlmlab.runtime import cache_root
    return cache_root() / "data_hashes.json"


def file_hash(path: Path, algorithm: str = "sha256", memo: Path | None = None) -> str:
    """Hex digest of ``path``, memoised in a JSON file by (path, size, mtime, algorithm)."""
    memo = memo or _hash_memo()
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{algorithm}"
    table = json.loads(memo.read_text()) if memo.is_file() else {}
    if key not in table:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        table[key] = h.hexdigest()
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=0))
        os.replace(tmp, memo)
    return table[key]


def check_file(spec: File, path: Path) -> tuple[str, str]:
    if not path.is_file():
        return "missing", ""
    if spec.known_hash:
        algorithm, _, want = spec.known_hash.partition(":")
        got = file_hash(path, algorithm)
        if got != want:
            return "checksum mismatch", f"{algorithm} {got[:12]}..., expected {want[:12]}..."
    if spec.hash_prefix and not file_hash(path).startswith(spec.hash_prefix):
        return "checksum mismatch", f"sha256 does not start with {spec.hash_prefix} (the file name's)"
    return "present", ""


def hub_file(repo_id: str, filename: str, repo_type: str = "model", cache_dir: Path | None = None) -> Path | None:
    """The cached file of a Hugging Face repo (main revision), or ``None``; never touches the network."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, repo_type=repo_type)
    return Path(found) if isinstance(found, str) else None


def check_hub(spec: HubCache, cache_dir: Path | None) -> tuple[str, str, Path | None]:
    found = [next((p for n in group if (p := hub_file(spec.repo_id, n, spec.repo_type, cache_dir))), None)
             for group in spec.needs]
    have = [p for p in found if p is not None]
    if not have:
        return "missing", "", None
    missing = [" or ".join(g) for g, p in zip(spec.needs, found) if p is None]
    index = next((p for p in have if p.name == "model.safetensors.index.json"), None)
    if index is not None:
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing += [s for s in shards if hub_file(spec.repo_id, s, spec.repo_type, cache_dir) is None]
    if missing:
        return "incomplete", "no " + ", ".join(missing[:3]), have[0].parent
    return "present", "", have[0].parent


def _hub_label(spec: HubCache, cache_dir: Path | None) -> str:
    if cache_dir is None:
        from huggingface_hub import constants
        cache_dir = constants.HF_HUB_CACHE
    return f"{cache_dir}/{spec.repo_type}s--{spec.repo_id.replace('/', '--')}"


def status(item: Item, places: Places) -> Status:
    """Where ``item`` was looked for and whether it is present, missing, incomplete or corrupt."""
    where = item.where
    if isinstance(where, Tree):
        state, detail, found = check_tree(where, Path(places.data_root))
        looked = str(found) if found else " | ".join(str(Path(places.data_root) / c) for c in where.candidates)
        return Status(item, state, looked, detail, found)
    if isinstance(where, File):
        path = places.found_file(where)
        state, detail = check_file(where, path)
        looked = str(path) if state != "missing" else " | ".join(map(str, places.candidates(where)))
        return Status(item, state, looked, detail, path if state != "missing" else None)
    state, detail, found = check_hub(where, places.hf_cache)
    return Status(item, state, _hub_label(where, places.hf_cache), detail, found)


def _human(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 0.1 else f"{gb * 1000:.0f} MB" if gb >= 0.001 else "<1 MB"


def status_table(rows: list[Status]) -> str:
    """The ``vlmlab data status`` table: one line per item, aligned columns, then a summary line."""
    head = ("name", "status", "size", "notebooks", "looked in", "how to get it")
    lines = [(s.item.name, s.state + (" (optional)" if s.item.optional and not s.ok else "")
              + (f": {s.detail}" if s.detail else ""), _human(s.item.size_gb),
              ",".join(nb[:2] for nb in s.item.notebooks), s.looked, "-" if s.ok else s.item.how()) for s in rows]
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in [head, *lines]]
    need = [s for s in rows if not s.ok and not s.item.optional]
    gb = sum(s.item.size_gb for s in need)
    auto = [s for s in need if s.item.fetchable]
    out.append(f"\n{sum(s.ok for s in rows)}/{len(rows)} present; {len(need)} needed ({_human(gb)}): "
               f"{len(auto)} by `vlmlab data fetch`, {len(need) - len(auto)} by a manual step")
    return "\n".join(out)
