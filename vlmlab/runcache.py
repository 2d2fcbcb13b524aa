"""Keys for caching trained runs (CoOp contexts, visual prompts, VLM fine-tuning predictions, notebook 02's
adapting streams) beside the features.

A trained run is a deterministic function of its inputs and of the code that trains it; a rerun with
the same of both can load the result instead of training again (``make reproduce`` with warm caches).
The key holds a digest of the input tensors (``tensor_digest``) and of the training code's sources and
the torch version (``closure_fingerprint``: the trainer's modules and every vlmlab module they import, read
from the sources; comments and docstrings do not count), so an edited trainer, an edited helper it calls
(the image preprocessing, the autocast policy) or other data never load a stale run.
Results go into a ``vlmlab.features.FeatureCache`` (``make clean-cache`` deletes them with the features).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor


def code_text(path: Path | str) -> str:
    """A module's code without its comments and docstrings (``ast.unparse``): what a run depends on."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imported(tree: ast.AST, package: str, anchor: str) -> set[str]:
    """Names of the ``package`` modules a module's code imports anywhere (top level or inside functions):
    ``import a.b`` gives a.b; ``from a.b import c`` gives a.b.c when that is a module, else a.b. ``anchor``: the
    package relative imports start from."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if _in(a.name, package)}
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), anchor) if node.level \
                else node.module
            if not _in(base, package):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if a.name != "*" and _is_module(sub) else base)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):                        # a parent that is not a package
        return False


def module_closure(*names: str, package: str = "vlmlab") -> list[str]:
    """The modules ``names`` and every ``package`` module their code imports, transitively, sorted: the code a
    computation can depend on. Read from the sources (``import`` statements, also inside functions), not from
    what happens to be loaded, so the answer is the same in every process."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == "__main__":              # a notebook's or script's code: its spec names the launcher's file
            raise ModuleNotFoundError("module_closure: __main__'s code is not a module file's")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ModuleNotFoundError(f"module_closure: no Python source for {name!r}")
        anchor = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
        todo += sorted(_imported(ast.parse(Path(spec.origin).read_text(encoding="utf-8")), package, anchor) - seen)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def closure_fingerprint(*names: str, package: str = "vlmlab") -> str:
    """sha1 of the torch version and of each module's name and code (``code_text``: an edited comment or
    docstring keeps it) over ``module_closure(*names)``: an edit to the code of any module it imports changes
    it. Read once per process (the code a process runs is the code it loaded)."""
    h = hashlib.sha1(torch.__version__.encode())
    for name in module_closure(*names, package=package):
        h.update(name.encode())
        h.update(code_text(importlib.util.find_spec(name).origin).encode())
    return h.hexdigest()


def tensor_digest(*tensors: Tensor | None) -> str:
    """sha1 of the tensors' dtypes, shapes and bytes (``None`` counts as an absent tensor)."""
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())               # the buffer itself, no copy
    return h.hexdigest()


def rows_to_tensor(rows: Sequence[dict], columns: Sequence[str]) -> Tensor | None:
    """(n, len(columns)) float64 of a run's per-step rows (a training history) for the cache, NaN where a row
    has no value; ``None`` when a row holds a column outside ``columns`` (it could not be restored whole)."""
    if any(set(row) - set(columns) for row in rows):
        return None
    return torch.tensor([[float(row.get(c, math.nan)) for c in columns] for row in rows],
                        dtype=torch.float64).reshape(len(rows), len(columns))


def tensor_to_rows(table: Tensor, columns: Sequence[str], ints: Sequence[str] = ()) -> list[dict]:
    """The rows of ``rows_to_tensor`` back, in ``columns`` order: NaN cells left out, ``ints`` columns as int."""
    return [{c: int(v) if c in ints else v for c, v in zip(columns, row) if not math.isnan(v)}
            for row in table.tolist()]
