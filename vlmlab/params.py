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

Constraints, in the same comment, between the type and the help (``;``-separated)::

    severities = [1, 2, 3, 4, 5]  # type: list[int]; range 1..5; help
    n_images = 400                # type: int | None; range 1..; help  (None passes)
    corruptions = ["fog"]         # type: list[str]; non-empty; help

``range LOW..HIGH`` (inclusive, either end may be left out) bounds a number or every number
of a list; ``non-empty`` refuses ``[]``, ``{}`` and ``""``. A list's element type is
``list[int]`` in the comment, or else the common type of the default's elements (a default
``[1, 5, 10]`` takes only ints: ``[True]`` or ``[1.5]`` fail). All checked before anything runs.

The profile applies itself: :func:`resolve` loads ``params/<profile>/<notebook>.yaml`` under
the explicit values (papermill's injected cell, or values that differ from the declared
defaults), so ``-r profile paper`` alone runs the paper settings, and ``-f`` that same file is
harmless. A dict value given explicitly is merged one level deep into the profile's dict
(``-y "uniinfo: {lr: 0.1}"`` keeps the profile's other UniInfo settings). Every YAML file is
read as papermill reads it (:func:`read_yaml`: YAML 1.1, no dates; ``1e-3`` is a *string*,
write ``1.0e-3``).
"""
from __future__ import annotations

import ast
import copy
import difflib
import json
import logging
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import yaml

from vlmlab.runtime import REPO_ROOT

__all__ = ["ParamError", "Params", "Spec", "declared", "specs", "load", "read_yaml", "resolve", "notebook_path",
           "params_path"]

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "embedded"
REQUIRED = ("profile", "device", "out_dir", "seed")
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"range\s+(?P<low>{_NUMBER})?\s*\.\.\s*(?P<high>{_NUMBER})?")
_E_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")   # 1e-3: a str in YAML 1.1
INJECTED_MARKER = "# Parameters"   # first line of papermill's injected cell (PythonTranslator.codify)
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


class Spec(NamedTuple):
    """One declared parameter: its default and what its type comment allows.

    Attributes:
        default: the literal in the parameters cell.
        types: allowed types from the type comment (None: the default's type).
        items: allowed element types of a list or tuple (None: any).
        low, high: inclusive bounds of a number, or of every number in a list (None: open).
        non_empty: ``[]``, ``{}`` and ``""`` are refused.
    """

    default: Any
    types: tuple[type, ...] | None = None
    items: tuple[type, ...] | None = None
    low: float | None = None
    high: float | None = None
    non_empty: bool = False


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


def _item_types(node: ast.expr | None) -> tuple[type, ...] | None:
    """The element types of ``list[int]`` / ``tuple[str]`` (also inside ``list[int] | None``); else None."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _item_types(node.left) or _item_types(node.right)
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id in ("list", "tuple") and not isinstance(node.slice, ast.Tuple)):
        return _annotation_types(node.slice)
    return None


def _inferred_items(default: Any) -> tuple[type, ...] | None:
    """The common scalar type of a non-empty list default (``[1, 5]`` -> int; ints and floats -> float)."""
    if not isinstance(default, (list, tuple)) or not default:
        return None
    kinds = {type(v) for v in default}
    if len(kinds) == 1 and kinds <= {int, float, str, bool}:
        return (kinds.pop(),)
    return (float,) if kinds == {int, float} else None


def _parse_constraints(parts: list[str]) -> dict[str, Any]:
    """``["range 1..5", "non-empty", "help"]`` -> Spec fields (segments that are not constraints are help)."""
    out: dict[str, Any] = {}
    for part in parts:
        match = _RANGE.fullmatch(part)
        if match:
            out["low"] = float(match["low"]) if match["low"] else None
            out["high"] = float(match["high"]) if match["high"] else None
        elif part == "non-empty":
            out["non_empty"] = True
    return out


def _spec(default: Any, annotation: ast.expr | None, comment: str | None) -> Spec:
    """A :class:`Spec` from the default, an annotation, and the type comment's text."""
    parts = [p.strip() for p in (comment or "").split(";")]
    if comment and annotation is None:
        try:
            annotation = ast.parse(parts[0], mode="eval").body
        except SyntaxError:
            annotation = None
    return Spec(default, _annotation_types(annotation),
                _item_types(annotation) or _inferred_items(default), **_parse_constraints(parts[1:]))


def specs(notebook: str, root: Path | None = None) -> dict[str, Spec]:
    """name -> :class:`Spec`, from the notebook's parameters cell (defaults, types, ranges)."""
    path = notebook_path(notebook, root)
    source = _parameters_source(path)
    try:
        tree = ast.parse(source, type_comments=True)
    except SyntaxError as err:
        raise ParamError(f"{path}: parameters cell does not parse: {err}") from None
    out: dict[str, Spec] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value, ann, comment = stmt.targets[0].id, stmt.value, None, stmt.type_comment
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, value, ann, comment = stmt.target.id, stmt.value, stmt.annotation, None
        else:
            raise ParamError(f"{path}: parameters cell line {stmt.lineno}: only `name = literal` "
                             "assignments are allowed there")
        try:
            default = ast.literal_eval(value)
        except ValueError:
            raise ParamError(f"{path}: parameter {name!r} (line {stmt.lineno}) is not a literal; "
                             "compute derived values in a later cell") from None
        out[name] = _spec(default, ann, comment)
    return out


def declared(notebook: str, root: Path | None = None) -> dict[str, Any]:
    """The notebook's parameters and defaults: ``{name: default}`` from its ``parameters`` cell."""
    return {name: spec.default for name, spec in specs(notebook, root).items()}


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


def _type_name(allowed: tuple[type, ...] | None, default: Any, items: tuple[type, ...] | None = None) -> str:
    kinds = allowed or (type(default),)
    names = []
    for t in kinds:
        name = "None" if t is type(None) else t.__name__
        if items and t in (list, tuple):
            name += f"[{_type_name(items, None)}]"
        names.append(name)
    return " | ".join(names)


def _range_text(spec: Spec) -> str:
    fmt = lambda x: f"{x:g}"  # noqa: E731
    if spec.high is None:
        return f">= {fmt(spec.low)}"
    if spec.low is None:
        return f"<= {fmt(spec.high)}"
    return f"{fmt(spec.low)}..{fmt(spec.high)}"


def _numbers(value: Any) -> list[Any]:
    """The numbers a range applies to: the value itself, or a list's elements (bools and None skipped)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _yaml_hint(value: Any, allowed: tuple[type, ...] | None, default: Any) -> str:
    """A hint for ``"1e-3"``: papermill's YAML 1.1 reads it as a string."""
    wants_float = float in (allowed or (type(default),))
    if wants_float and isinstance(value, str) and _E_FLOAT.fullmatch(value.strip()):
        return (f"; YAML 1.1 (papermill's -f/-y) reads {value} as a string: write it with a dot and a signed "
                f"exponent, e.g. 1.0e-3")
    return ""


def _check(key: str, value: Any, spec: Spec, where: str) -> None:
    """Raise :class:`ParamError` naming ``key`` when ``value`` breaks the type, element type or range."""
    if not _type_ok(value, spec.default, spec.types):
        raise ParamError(f"parameter {key!r} of {where} expects {_type_name(spec.types, spec.default, spec.items)}, "
                         f"got {type(value).__name__} {value!r}{_yaml_hint(value, spec.types, spec.default)}")
    if isinstance(value, (list, tuple)) and spec.items:
        for i, item in enumerate(value):
            if not _type_ok(item, None, spec.items):
                raise ParamError(f"parameter {key!r} of {where} expects "
                                 f"{_type_name(spec.types, spec.default, spec.items)}, got {type(item).__name__} "
                                 f"{item!r} at index {i} of {value!r}{_yaml_hint(item, spec.items, None)}")
    if spec.non_empty and isinstance(value, (list, tuple, dict, str)) and not value:
        raise ParamError(f"parameter {key!r} of {where} must not be empty, got {value!r}; "
                         f"the default is {spec.default!r}")
    if spec.low is None and spec.high is None:
        return
    for number in _numbers(value):
        if (spec.low is not None and number < spec.low) or (spec.high is not None and number > spec.high):
            shown = "" if number is value else f" in {value!r}"
            raise ParamError(f"parameter {key!r} of {where}: {number!r}{shown} is outside the allowed range "
                             f"{_range_text(spec)}")


def _validate(notebook: str, values: Mapping[str, Any], root: Path | None, source: str) -> Params:
    declared_specs = specs(notebook, root)
    for key, value in values.items():
        if key not in declared_specs:
            close = difflib.get_close_matches(key, list(declared_specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamError(f"unknown parameter {key!r} for {_stem(notebook)}{hint} ({source}); "
                             f"allowed: {', '.join(sorted(declared_specs))}")
        try:
            _check(key, value, declared_specs[key], _stem(notebook))
        except ParamError as err:
            raise ParamError(f"{err} ({source})") from None
    merged = {name: copy.deepcopy(spec.default) for name, spec in declared_specs.items()}
    merged.update(values)
    return Params(_stem(notebook), merged)


class _PapermillLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without the timestamp resolver: papermill's ``NoDatesSafeLoader``."""

    yaml_implicit_resolvers = {
        first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """Parse ``text`` exactly as papermill's ``-f``/``-y`` do (YAML 1.1, no dates: ``1e-3`` is a string).

    Raises:
        ParamError: a syntax error, naming ``name`` (the file), the line and the column.
    """
    try:
        return yaml.load(text, Loader=_PapermillLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamError(f"{name}:{where}: YAML syntax error: {problem}; fix the file "
                         "(tip: python -c 'import yaml,sys; yaml.safe_load(open(sys.argv[1]))' FILE)") from None


def read_yaml(path: str | Path) -> Any:
    """Read a parameter or sweep file as papermill reads ``-f`` (see :func:`parse_yaml`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ParamError(f"cannot read {path}: {err.strerror}") from None
    return parse_yaml(text, str(path))


def _profile_file(notebook: str, profile: Any, root: Path | None) -> tuple[Path, dict[str, Any]]:
    """``(path, values)`` of ``params/<profile>/<notebook>.yaml`` ({} for a missing default-profile file)."""
    if not isinstance(profile, str) or not _PROFILE_NAME.fullmatch(profile):
        raise ParamError(f"profile {profile!r} is not a profile name (a folder of params/: letters, digits, "
                         "'_', '-', '.'; e.g. tiny, embedded, paper)")
    path = params_path(notebook, profile, root)
    if not path.is_file():
        if profile == DEFAULT_PROFILE:
            return path, {}
        known = sorted(p.name for p in path.parent.parent.glob("*/") if p.is_dir())
        raise ParamError(f"no parameters for profile {profile!r}: {path} does not exist; profiles: {', '.join(known)}")
    from_file = read_yaml(path) or {}
    if not isinstance(from_file, dict):
        raise ParamError(f"{path} must hold a mapping of parameter: value, not {type(from_file).__name__}")
    if from_file.get("profile", profile) != profile:
        raise ParamError(f"{path} sets profile={from_file['profile']!r} inside the {profile!r} folder; "
                         "drop the key (the folder names the profile)")
    return path, from_file


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{**base, **overrides}``, except that a dict override is merged one level into base's dict.

    ``merge_overrides({"u": {"a": 1, "b": 2}}, {"u": {"b": 3}}) == {"u": {"a": 1, "b": 3}}``;
    a non-dict on either side replaces. An override key that equals a base key as text replaces that
    key: papermill passes parameters through JSON, which turns ``epochs = {1: 25}`` into ``{"1": 25}``,
    and that must replace the profile's ``1``, not sit beside it.
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            as_text = {str(k): k for k in out[key]}
            value = {**out[key], **{as_text.get(str(k), k): v for k, v in value.items()}}
        out[key] = value
    return out


def _load(notebook: str, profile: Any, overrides: Mapping[str, Any], root: Path | None, source: str) -> Params:
    path, from_file = _profile_file(notebook, profile, root)
    _validate(notebook, from_file, root, source=f"from {path}")
    defaults = declared(notebook, root)
    profile_values = {**defaults, **from_file, "profile": profile}
    values = merge_overrides(profile_values, {k: v for k, v in overrides.items() if k in defaults})
    unknown = {k: v for k, v in overrides.items() if k not in defaults}      # reported by _validate
    return _validate(notebook, {**values, **unknown}, root, source=source)


def load(notebook: str, profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None,
         root: Path | None = None) -> Params:
    """Defaults < ``params/<profile>/<notebook>.yaml`` < ``overrides``, validated.

    The YAML file is optional for the default profile (``embedded``: the notebook's own
    defaults are that profile) and required for any other, so a typo in a profile name
    fails instead of silently running the defaults. A dict in ``overrides`` is merged one
    level deep into the profile's dict (:func:`merge_overrides`).

    Raises:
        ParamError: unknown key, wrong type or range, missing notebook, missing profile file,
            or a YAML syntax error (naming the file).
    """
    return _load(notebook, profile, dict(overrides or {}), root, source="from overrides")


def _user_variables(namespace: Mapping[str, Any]) -> dict[str, Any]:
    keep = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)):
            continue
        keep[name] = value
    return keep


def injected_keys(history: Any) -> set[str]:
    """The names papermill's injected cell assigns, found in IPython's ``In`` (empty when there is none).

    Papermill's cell starts with ``# Parameters`` (the latest such cell counts).
    """
    if not isinstance(history, (list, tuple)):
        return set()
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_MARKER):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return set()
            return {t.id for stmt in tree.body if isinstance(stmt, ast.Assign)
                    for t in stmt.targets if isinstance(t, ast.Name)}
    return set()


def explicit_values(notebook: str, namespace: Mapping[str, Any], root: Path | None = None) -> dict[str, Any]:
    """The live values that were set on purpose: papermill's injected keys, and any value that
    differs from its declared default (or is not declared: :func:`resolve` rejects those)."""
    live = _user_variables(namespace)
    defaults = declared(notebook, root)
    injected = injected_keys(namespace.get("In"))
    return {k: v for k, v in live.items()
            if k in injected or k not in defaults or v != defaults[k] or type(v) is not type(defaults[k])}


def resolve(notebook: str, namespace: Mapping[str, Any], root: Path | None = None) -> Params:
    """Validate a notebook's live parameters: call as ``resolve("NN_name", globals())``.

    Place it in the cell right after the parameters cell, so the namespace holds the declared
    defaults and papermill's injected values, plus imports (skipped: modules, functions,
    classes, ``_``-names and IPython's ``In``/``Out``/``get_ipython``/``exit``/``quit``/``open``).

    The profile's file ``params/<profile>/<notebook>.yaml`` is applied under the explicit values
    (:func:`explicit_values`), whether or not papermill was given it with ``-f``: the profile
    parameter is never only a label. Use the returned :class:`Params`, not the globals.

    Raises:
        ParamError: a key the parameters cell does not declare (papermill injects those with only
            a warning), a value of the wrong type or out of its range, or a missing profile file;
            the message names the key and the fix.
    """
    __tracebackhide__ = True  # noqa: F841  (IPython and pytest hide this frame: the error is the user's)
    try:
        explicit = explicit_values(notebook, namespace, root)
        profile = explicit.get("profile", DEFAULT_PROFILE)
        P = _load(notebook, profile, explicit, root, source="papermill -p/-r/-y or the parameters cell")
    except ParamError as err:          # re-raised here so the notebook's traceback is one frame deep
        raise ParamError(str(err)) from None
    path = params_path(notebook, P.profile, root)
    log.info("%s: profile %r from %s, under %d explicit value(s): %s", P.notebook, P.profile,
             path if path.is_file() else "the parameters cell", len(explicit), ", ".join(sorted(explicit)) or "-")
    return P
