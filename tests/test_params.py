"""vlmlab.params: declared defaults, profile YAML, overrides, and the unknown-key guard."""
from __future__ import annotations

import math
import pickle

import nbformat
import pytest
import yaml

from vlmlab import params
from vlmlab.params import ParamError, Params
from vlmlab.runtime import REPO_ROOT

PARAMS_CELL = '''profile = "embedded"
device = "auto"
out_dir = ""
seed = 0
lr: float = 0.5
steps = 10
name = "x"
shots = [1, 2]
limit: int | None = None
extra = None
flag = False
cap = 4  # type: int | None; a type comment (papermill reads it, unlike an annotation)
'''


def make_repo(root, cell=PARAMS_CELL, name="07_toy", tags=("parameters",)):
    """A tiny repository with one notebook whose first code cell declares ``cell``."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# toy"),
        nbformat.v4.new_code_cell(cell, metadata={"tags": list(tags)}),
        nbformat.v4.new_code_cell("seed = 99  # not a parameter: after the tagged cell")])
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    return root


def write_yaml(root, profile, name, data):
    path = root / "params" / profile / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_declared_reads_the_tagged_cell_only(tmp_path):
    got = params.declared("07_toy", root=make_repo(tmp_path))
    assert got == {"profile": "embedded", "device": "auto", "out_dir": "", "seed": 0, "lr": 0.5,
                   "steps": 10, "name": "x", "shots": [1, 2], "limit": None, "extra": None, "flag": False,
                   "cap": 4}


def test_declared_errors_name_the_problem(tmp_path):
    with pytest.raises(ParamError, match="not found"):
        params.declared("99_missing", root=tmp_path)
    make_repo(tmp_path, tags=("other",))
    with pytest.raises(ParamError, match="no cell tagged 'parameters'"):
        params.declared("07_toy", root=tmp_path)
    make_repo(tmp_path, cell="seed = 0\nsteps = 2 * 5\n")
    with pytest.raises(ParamError, match="'steps'.*not a literal"):
        params.declared("07_toy", root=tmp_path)
    make_repo(tmp_path, cell="import os\n")
    with pytest.raises(ParamError, match="only `name = literal`"):
        params.declared("07_toy", root=tmp_path)


def test_yaml_merge_precedence(tmp_path):
    root = make_repo(tmp_path)
    write_yaml(root, "paper", "07_toy", {"seed": 1, "steps": 20, "lr": 0.1})
    P = params.load("07_toy", "paper", overrides={"steps": 30}, root=root)
    assert (P.seed, P.steps, P.lr, P.name) == (1, 30, 0.1, "x")     # yaml < overrides; defaults fill in
    assert P.profile == "paper" and P["profile"] == "paper" and P.notebook == "07_toy"
    assert params.load("07_toy", root=root).to_dict() == params.declared("07_toy", root=root)


def test_missing_profile_file_is_an_error_except_for_the_default(tmp_path):
    root = make_repo(tmp_path)
    assert params.load("07_toy", "embedded", root=root).steps == 10
    with pytest.raises(ParamError, match=r"profile 'papr'.*papr[/\\]07_toy.yaml does not exist"):
        params.load("07_toy", "papr", root=root)


def test_yaml_unknown_key_names_file_and_key(tmp_path):
    root = make_repo(tmp_path)
    path = write_yaml(root, "tiny", "07_toy", {"step": 3})
    with pytest.raises(ParamError) as err:
        params.load("07_toy", "tiny", root=root)
    msg = str(err.value)
    assert "'step'" in msg and "did you mean 'steps'" in msg and str(path) in msg
    assert "allowed: cap, device, extra, flag, limit, lr, name, out_dir, profile, seed, shots, steps" in msg


def test_resolve_unknown_key_lists_allowed_keys(tmp_path):
    root = make_repo(tmp_path)
    ns = {**params.declared("07_toy", root=root), "bogus_key": 1}
    with pytest.raises(ParamError) as err:
        params.resolve("07_toy", ns, root=root)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unknown parameter 'bogus_key'" in msg and "allowed: cap, device, extra, flag" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("steps", "10", "int"), ("steps", 1.5, "int"), ("steps", True, "int"), ("flag", 1, "bool"),
    ("name", 3, "str"), ("shots", "1,2", "list"), ("lr", "0.1", "float"), ("limit", 2.5, "int | None"),
    ("seed", None, "int"), ("cap", "4", "int | None"), ("cap", 2.5, "int | None"),
])
def test_resolve_wrong_type_names_key_expected_and_given(tmp_path, key, value, expected):
    root = make_repo(tmp_path)
    with pytest.raises(ParamError) as err:
        params.resolve("07_toy", {key: value}, root=root)
    msg = str(err.value)
    assert f"parameter '{key}'" in msg and f"expects {expected}" in msg and f"got {type(value).__name__}" in msg


@pytest.mark.parametrize("key, value", [
    ("lr", 1), ("shots", (4, 8)), ("extra", {"a": 1}), ("extra", "anything"), ("limit", None),
    ("limit", 5), ("flag", True), ("lr", math.inf), ("cap", None), ("cap", 7),
])
def test_resolve_accepts_compatible_types(tmp_path, key, value):
    root = make_repo(tmp_path)
    assert params.resolve("07_toy", {key: value}, root=root)[key] == value


def test_resolve_skips_modules_functions_and_ipython_names(tmp_path):
    root = make_repo(tmp_path)
    ns = {"np": math, "helper": lambda: 1, "Thing": int, "print": print, "_": 3, "_i2": "x",
          "__name__": "__main__", "In": [""], "Out": {}, "get_ipython": None, "exit": None,
          "quit": None, "open": open, "seed": 5}
    P = params.resolve("07_toy", ns, root=root)
    assert P.seed == 5 and set(P) == set(params.declared("07_toy", root=root))


def test_params_is_read_only_and_picklable(tmp_path):
    P = params.load("07_toy", root=make_repo(tmp_path))
    with pytest.raises(AttributeError, match="read-only"):
        P.seed = 3
    with pytest.raises(TypeError):
        P["seed"] = 3
    with pytest.raises(AttributeError, match="no parameter 'sede'"):
        P.sede
    copy = P.to_dict()
    copy["shots"].append(4)
    assert P.shots == [1, 2]
    assert pickle.loads(pickle.dumps(P)) == P and isinstance(P, Params)


def _repo_notebooks():
    return sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _repo_yamls():
    return sorted(p for p in (REPO_ROOT / "params").glob("*/*.yaml") if p.parent.name not in ("published", "sweeps"))  # sweeps: tests/sweep


@pytest.mark.parametrize("path", _repo_yamls(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_params_file_matches_its_notebook(path):
    """Every key of params/<profile>/<nb>.yaml is declared by notebooks/<nb>.ipynb with a matching type."""
    assert path.stem in _repo_notebooks(), f"{path} has no notebook notebooks/{path.stem}.ipynb"
    params.load(path.stem, path.parent.name)       # raises ParamError naming the key


@pytest.mark.parametrize("notebook", _repo_notebooks())
def test_every_notebook_has_a_params_file_per_profile(notebook):
    for profile in ("embedded", "tiny", "paper"):
        assert (REPO_ROOT / "params" / profile / f"{notebook}.yaml").is_file(), \
            f"add params/{profile}/{notebook}.yaml (make reproduce PROFILE={profile} needs it)"
