"""Notebook parameters: declared in the notebook, overridden per profile, validated here.

Every notebook starts with a cell tagged ``parameters`` that assigns literals::

    profile = "embedded"     # embedded | paper | tiny
    device = "auto"
    out_dir = ""             # empty: results/<profile>/<notebook>/
    seed = 0
    n_images = 400           # type: int | None; images per condition (None: all)

That cell is the single declaration of a notebook's keys and types. Values come, in
increasing precedence, from those defaults, ``params/<profile>/<notebook>.yaml`` and
explicit overrides (papermill ``-p``/``-r``, or ``overrides=``). Papermill only *warns*
about an unknown key and injects it anyway, so :func:`resolve`, called right after the
injected cell, rejects unknown keys and wrong types with a one-line :class:`ParamError`.

Types: a value must have the type of the declared default, except that an int is accepted
for a float, a list for a tuple (and back), and anything for a ``None`` default. A type
comment overrides the default's type: ``n_images = 400  # type: int | None; help``. (An
annotation, ``n_images: int | None = 400``, is read the same way, but papermill cannot parse
it and warns on every run; so can't a comment holding ``=``. tests/test_repo.py checks both.)
"""
from __future__ import annotations

import ast
import copy
import difflib
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import yaml

from vlmlab.runtime import REPO_ROOT

__all__ = ["ParamError", "Params", "declared", "load", "resolve", "notebook_path", "params_path"]

DEFAULT_PROFILE = "embedded"
REQUIRED = ("profile", "device", "out_dir", "seed")
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple,
               "dict": dict, "None": type(None), "Any": object, "object": object}


class ParamError(ValueError):
    """A parameter is unknown, has the wrong type, or its source file is missing."""


class Params(Mapping):
    """Read-only parameters with attribute access: ``P.seed == P["seed"]``.

    Attributes:
        notebook: the notebook name, e.g. ``"02_uniinfo_tta"``.
        profile: the ``profile`` parameter (every notebook declares it).
    """

    __slots__ = ("_data", "_notebook")

    def __init__(self, notebook: str, data: Mapping[str, Any]):
        object.__setattr__(self, "_notebook", notebook)
        object.__setattr__(self, "_data", types.MappingProxyType(dict(data)))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"{self._notebook} has no parameter {key!r}; "
                                 f"known: {', '.join(sorted(self._data))}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Params are read-only; pass {key}=... as a papermill parameter instead")

    def __reduce__(self):
        return (Params, (self._notebook, dict(self._data)))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"Params[{self._notebook}]({body})"

    @property
    def notebook(self) -> str:
        return self._notebook

    @property
    def profile(self) -> str:
        return self._data.get("profile", DEFAULT_PROFILE)

    def to_dict(self) -> dict[str, Any]:
        """A deep, mutable copy of the parameters."""
        return copy.deepcopy(dict(self._data))


def _stem(notebook: str) -> str:
    return Path(notebook).name.removesuffix(".ipynb")


def notebook_path(notebook: str, root: Path | None = None) -> Path:
    """``<root>/notebooks/<notebook>.ipynb`` (root defaults to the repository root)."""
    return Path(root or REPO_ROOT) / "notebooks" / f"{_stem(notebook)}.ipynb"


def params_path(notebook: str, profile: str, root: Path | None = None) -> Path:
    """``<root>/params/<profile>/<notebook>.yaml``."""
    return Path(root or REPO_ROOT) / "params" / profile / f"{_stem(notebook)}.yaml"


def _parameters_source(path: Path) -> str:
    if not path.is_file():
        raise ParamError(f"notebook {path} not found; notebooks live in notebooks/NN_name.ipynb")
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    raise ParamError(f"{path} has no cell tagged 'parameters'; tag its first code cell "
                     "(JupyterLab: Property Inspector > Cell Tags)")


def _annotation_types(node: ast.expr | None) -> tuple[type, ...] | None:
    """``int``, ``float | None``, ``Optional[str]``, ``list[int]`` -> a tuple of types; else None."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        return (_TYPE_NAMES[node.id],)
    if isinstance(node, ast.Subscript):                       # list[int], Optional[int]
        if isinstance(node.value, ast.Name) and node.value.id == "Optional":
            inner = _annotation_types(node.slice)
            return inner + (type(None),) if inner else None
        return _annotation_types(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_types(node.left), _annotation_types(node.right)
        return left + right if left and right else None
    return None


def _type_comment(comment: str | None) -> ast.expr | None:
    """``"int | None; help text"`` -> the parsed type expression (text after ``;`` is help)."""
    if not comment:
        return None
    try:
        return ast.parse(comment.split(";", 1)[0].strip(), mode="eval").body
    except SyntaxError:
        return None


def _specs(notebook: str, root: Path | None = None) -> dict[str, tuple[Any, tuple[type, ...] | None]]:
    """name -> (default, annotated types or None), from the notebook's parameters cell."""
    path = notebook_path(notebook, root)
    source = _parameters_source(path)
    try:
        tree = ast.parse(source, type_comments=True)
    except SyntaxError as err:
        raise ParamError(f"{path}: parameters cell does not parse: {err}") from None
    specs: dict[str, tuple[Any, tuple[type, ...] | None]] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value, ann = stmt.targets[0].id, stmt.value, _type_comment(stmt.type_comment)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, value, ann = stmt.target.id, stmt.value, stmt.annotation
        else:
            raise ParamError(f"{path}: parameters cell line {stmt.lineno}: only `name = literal` "
                             "assignments are allowed there")
        try:
            specs[name] = (ast.literal_eval(value), _annotation_types(ann))
        except ValueError:
            raise ParamError(f"{path}: parameter {name!r} (line {stmt.lineno}) is not a literal; "
                             "compute derived values in a later cell") from None
    return specs


def declared(notebook: str, root: Path | None = None) -> dict[str, Any]:
    """The notebook's parameters and defaults: ``{name: default}`` from its ``parameters`` cell."""
    return {name: default for name, (default, _) in _specs(notebook, root).items()}


def _type_ok(value: Any, default: Any, allowed: tuple[type, ...] | None) -> bool:
    if allowed is None:
        if default is None:
            return True
        allowed = (type(default),)
    if object in allowed:
        return True
    if isinstance(value, bool):                               # bool is an int subclass: keep apart
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    if isinstance(value, (list, tuple)) and (list in allowed or tuple in allowed):
        return True
    return isinstance(value, tuple(t for t in allowed if t is not bool))


def _type_name(allowed: tuple[type, ...] | None, default: Any) -> str:
    kinds = allowed or (type(default),)
    return " | ".join("None" if t is type(None) else t.__name__ for t in kinds)


def _validate(notebook: str, values: Mapping[str, Any], root: Path | None, source: str) -> Params:
    specs = _specs(notebook, root)
    for key, value in values.items():
        if key not in specs:
            close = difflib.get_close_matches(key, list(specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamError(f"unknown parameter {key!r} for {_stem(notebook)}{hint} ({source}); "
                             f"allowed: {', '.join(sorted(specs))}")
        default, allowed = specs[key]
        if not _type_ok(value, default, allowed):
            raise ParamError(f"parameter {key!r} of {_stem(notebook)} expects {_type_name(allowed, default)}, "
                             f"got {type(value).__name__} {value!r} ({source})")
    merged = {name: copy.deepcopy(default) for name, (default, _) in specs.items()}
    merged.update(values)
    return Params(_stem(notebook), merged)


def load(notebook: str, profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None,
         root: Path | None = None) -> Params:
    """Defaults < ``params/<profile>/<notebook>.yaml`` < ``overrides``, validated.

    The YAML file is optional for the default profile (``embedded``: the notebook's own
    defaults are that profile) and required for any other, so a typo in a profile name
    fails instead of silently running the defaults.

    Raises:
        ParamError: unknown key, wrong type, missing notebook, or missing profile file.
    """
    path = params_path(notebook, profile, root)
    from_file: dict[str, Any] = {}
    if path.is_file():
        from_file = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(from_file, dict):
            raise ParamError(f"{path} must hold a mapping of parameter: value, not {type(from_file).__name__}")
        if from_file.get("profile", profile) != profile:
            raise ParamError(f"{path} sets profile={from_file['profile']!r} inside the {profile!r} folder; "
                             "drop the key (the folder names the profile)")
    elif profile != DEFAULT_PROFILE:
        raise ParamError(f"no parameters for profile {profile!r}: {path} does not exist; "
                         f"profiles: {', '.join(sorted(p.name for p in path.parent.parent.glob('*/') if p.is_dir()))}")
    _validate(notebook, from_file, root, source=f"from {path}")
    values = {"profile": profile, **from_file, **dict(overrides or {})}
    return _validate(notebook, values, root, source="from overrides")


def _user_variables(namespace: Mapping[str, Any]) -> dict[str, Any]:
    keep = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
            continue
        keep[name] = value
    return keep


def resolve(notebook: str, namespace: Mapping[str, Any], root: Path | None = None) -> Params:
    """Validate a notebook's live parameters: call as ``resolve("NN_name", globals())``.

    Place it in the cell right after the parameters cell, so the namespace holds the declared
    defaults and papermill's injected values, plus imports (skipped: modules, functions,
    classes, ``_``-names and IPython's ``In``/``Out``/``get_ipython``/``exit``/``quit``/``open``).

    Raises:
        ParamError: a key the parameters cell does not declare (papermill injects those with only
            a warning), or a value of the wrong type; the message names the key and the fix.
    """
    __tracebackhide__ = True  # noqa: F841  (IPython and pytest hide this frame: the error is the user's)
    try:
        return _validate(notebook, _user_variables(namespace), root, source="papermill -p/-r or the parameters cell")
    except ParamError as err:          # re-raised here so the notebook's traceback is one frame deep
        raise ParamError(str(err)) from None
