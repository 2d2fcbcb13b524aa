"""Keys for caching trained runs (CoOp contexts, visual prompts, VLM fine-tuning predictions) beside the features.

A trained run is a deterministic function of its inputs and of the code that trains it; a rerun with
the same of both can load the result instead of training again (``make reproduce`` with warm caches).
The key holds a digest of the input tensors (``tensor_digest``) and of the training code's sources and
the torch version (``code_fingerprint``; comments and docstrings do not count), so an edited trainer or
other data never load a stale run.
Results go into a ``vlmlab.features.FeatureCache`` (``make clean-cache`` deletes them with the features).
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from types import ModuleType

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


def code_fingerprint(*modules: ModuleType) -> str:
    """sha1 of the modules' code (``code_text``: an edited comment or docstring keeps the key) and the torch
    version."""
    h = hashlib.sha1(torch.__version__.encode())
    for mod in modules:
        h.update(code_text(mod.__file__).encode())
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
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
