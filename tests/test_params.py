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


# ------------------------------------------------------------------ issue 19: ranges, profile, YAML, dicts
RANGED_CELL = PARAMS_CELL + '''sev = [1, 2]  # type: list[int]; range 1..5; non-empty; severities
count = 3  # type: int | None; range 1..; images (None: all)
names = ["a",
         "b"]  # type: list[str]; non-empty; a list over two lines
frac = 0.5  # type: float; range 0..1; a share
opts = {"a": 1, "b": 2}  # a dict parameter
'''


def test_specs_read_types_items_ranges_and_non_empty(tmp_path):
    got = params.specs("07_toy", root=make_repo(tmp_path, cell=RANGED_CELL))
    assert got["sev"] == params.Spec([1, 2], (list,), (int,), 1.0, 5.0, True)
    assert got["count"] == params.Spec(3, (int, type(None)), None, 1.0, None, False)
    assert got["names"] == params.Spec(["a", "b"], (list,), (str,), None, None, True)
    assert got["frac"] == params.Spec(0.5, (float,), None, 0.0, 1.0, False)
    assert got["shots"].items == (int,) and got["shots"].types is None      # inferred from the default [1, 2]
    assert got["opts"] == params.Spec({"a": 1, "b": 2})


@pytest.mark.parametrize("key, value, message", [
    ("sev", [0], "'sev' of 07_toy: 0 in [0] is outside the allowed range 1..5"),
    ("sev", [6, 1], "6 in [6, 1] is outside the allowed range 1..5"),
    ("sev", [True], "'sev' of 07_toy expects list[int], got bool True at index 0"),
    ("sev", [], "'sev' of 07_toy must not be empty"),
    ("count", 0, "'count' of 07_toy: 0 is outside the allowed range >= 1"),
    ("count", -5, "-5 is outside the allowed range >= 1"),
    ("names", [], "'names' of 07_toy must not be empty"),
    ("names", ["a", 3], "expects list[str], got int 3 at index 1"),
    ("frac", 1.5, "'frac' of 07_toy: 1.5 is outside the allowed range 0..1"),
    ("shots", ["1"], "'shots' of 07_toy expects list[int], got str '1' at index 0"),
])
def test_out_of_range_values_and_wrong_elements_stop_with_the_key(tmp_path, key, value, message):
    """Issue 19, defect 3: out-of-range values and wrong element types used to run and look complete."""
    root = make_repo(tmp_path, cell=RANGED_CELL)
    with pytest.raises(ParamError) as err:
        params.resolve("07_toy", {key: value}, root=root)
    assert message in str(err.value)


@pytest.mark.parametrize("key, value", [("count", None), ("count", 1), ("sev", [5]), ("frac", 1), ("frac", 0.0),
                                        ("names", ["z"]), ("shots", [3])])
def test_in_range_values_pass(tmp_path, key, value):
    assert params.resolve("07_toy", {key: value}, root=make_repo(tmp_path, cell=RANGED_CELL))[key] == value


@pytest.mark.parametrize("notebook, key, value", [
    ("01_uniformity_analysis", "severities", [0]), ("01_uniformity_analysis", "severities", [True]),
    ("01_uniformity_analysis", "n_images", 0), ("01_uniformity_analysis", "n_images", -5),
    ("01_uniformity_analysis", "corruptions", []), ("02_uniinfo_tta", "severity", 0),
    ("02_uniinfo_tta", "severity", 6), ("02_uniinfo_tta", "methods", []), ("02_uniinfo_tta", "seeds", [1.5]),
    ("02_uniinfo_tta", "shots", [0]), ("03_coop_shots", "datasets", []), ("03_coop_shots", "shots", [0]),
    ("03_coop_shots", "n_test", 0), ("04_visual_prompt_fid", "shots", 0), ("05_vlm_blind_tests", "n_test", 0),
    ("00_quickstart", "n_points", 0),
])
def test_the_notebooks_declare_their_ranges(notebook, key, value):
    with pytest.raises(ParamError, match=f"parameter '{key}' of {notebook}"):
        params.load(notebook, "embedded", overrides={key: value})


def test_a_zero_count_is_an_error_not_the_default():
    """Issue 19, defect 3: `n or 1000` turned n_images 0 into 1000 images."""
    from vlmlab.data.sources import count_or_default, load_source
    assert (count_or_default(None, 1000), count_or_default(7, 1000)) == (1000, 7)
    for bad in (0, -5, True, 2.0):
        with pytest.raises(ValueError, match=f"n_test={bad!r}: a count must be an int >= 1"):
            count_or_default(bad, 1000, "n_test")
    with pytest.raises(ValueError, match=r"n \(images of 'world:objects'\)=0"):
        load_source("world:objects", n=0)


def test_resolve_applies_the_profile_file_under_explicit_values(tmp_path):
    """Issue 19, defect 4: `-r profile paper` alone ran the embedded defaults labelled paper."""
    root = make_repo(tmp_path)
    write_yaml(root, "paper", "07_toy", {"steps": 20, "lr": 0.1, "name": "paper"})
    defaults = params.declared("07_toy", root=root)
    only_label = params.resolve("07_toy", {**defaults, "profile": "paper"}, root=root)
    assert (only_label.steps, only_label.lr, only_label.name, only_label.profile) == (20, 0.1, "paper", "paper")
    with_file = params.resolve("07_toy", {**defaults, "profile": "paper", "steps": 20, "lr": 0.1, "name": "paper"},
                               root=root)                     # papermill -f params/paper/07_toy.yaml: the same
    assert with_file == only_label
    overridden = params.resolve("07_toy", {**defaults, "profile": "paper", "lr": 0.3}, root=root)
    assert (overridden.steps, overridden.lr) == (20, 0.3)
    # papermill's injected cell (IPython's `In`) marks `-p steps 10` explicit although 10 is the default
    history = ["", "# Parameters\nprofile = \"paper\"\nsteps = 10\n"]
    injected = params.resolve("07_toy", {**defaults, "profile": "paper", "In": history}, root=root)
    assert (injected.steps, injected.lr) == (10, 0.1)
    with pytest.raises(ParamError, match=r"profile 'papr'.*does not exist"):
        params.resolve("07_toy", {**defaults, "profile": "papr"}, root=root)
    with pytest.raises(ParamError, match="not a profile name"):
        params.load("07_toy", "../paper", root=root)


def test_injected_keys_reads_papermills_cell():
    assert params.injected_keys(["x = 1", "# Parameters\na = 1\nb = [2]\n", "P = resolve()"]) == {"a", "b"}
    assert params.injected_keys(["# Parameters\na = 1\n", "# Parameters\nc = 2\n"]) == {"c"}    # the latest
    assert params.injected_keys(None) == set() and params.injected_keys(["seed = 3"]) == set()


def test_merge_overrides_is_one_level_deep():
    base = {"u": {"a": 1, "b": {"x": 1}}, "n": 3, "d": {"k": 1}}
    got = params.merge_overrides(base, {"u": {"b": {"y": 2}, "c": 3}, "n": {"k": 1}, "d": None})
    assert got == {"u": {"a": 1, "b": {"y": 2}, "c": 3}, "n": {"k": 1}, "d": None}
    assert base["u"] == {"a": 1, "b": {"x": 1}}                                   # inputs untouched


def test_a_papermill_text_key_replaces_the_profiles_int_key():
    """papermill sends `epochs = {1: 25}` through JSON as {"1": 25}: it must replace the profile's 1 (it sat
    beside it, and CoOpConfig kept the profile's 50)."""
    got = params.merge_overrides({"e": {1: 50, 2: 100}}, {"e": {"1": 25, "4": 7}})
    assert got == {"e": {1: 25, 2: 100, "4": 7}}
    P = params.load("03_coop_shots", "embedded", {"epochs": {"1": 25, "2": 50, "4": 50, "8": 50, "16": 50}})
    from vlmlab.coop import CoOpConfig
    cfg = CoOpConfig(epochs=P.epochs)
    assert [cfg.epochs_for(k) for k in (1, 2, 4, 8, 16)] == [25, 50, 50, 50, 50]


def test_dict_parameters_merge_into_the_profiles_dict(tmp_path):
    """Issue 19, defect 10: `uniinfo: {batch_size: 16}` replaced the profile's dict, dropping its tuned values."""
    root = make_repo(tmp_path, cell=RANGED_CELL)
    write_yaml(root, "tiny", "07_toy", {"opts": {"a": 10, "c": 3}})
    write_yaml(root, "paper", "07_toy", {"opts": {}})
    assert params.load("07_toy", "tiny", overrides={"opts": {"b": 20}}, root=root).opts == {"a": 10, "c": 3, "b": 20}
    assert params.resolve("07_toy", {"profile": "tiny", "opts": {"b": 20}}, root=root).opts == {"a": 10, "c": 3, "b": 20}
    assert params.load("07_toy", "paper", root=root).opts == {}                  # the file replaces the default
    assert params.load("07_toy", "embedded", overrides={"opts": {"b": 5}}, root=root).opts == {"a": 1, "b": 5}


def test_yaml_syntax_error_names_the_file(tmp_path):
    """Issue 19, defect 10: the error named `<unicode string>`."""
    root = make_repo(tmp_path)
    path = root / "params" / "tiny" / "07_toy.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("seed: 1\nshots: [1, 2\n")
    with pytest.raises(ParamError, match=rf"{path}: line 3, column 1: YAML syntax error"):
        params.load("07_toy", "tiny", root=root)


def test_yaml_is_read_as_papermill_reads_it(tmp_path):
    """One loader: papermill's -f (YAML 1.1, no dates). `1e-1` is a string there, and the error says so."""
    from papermill.iorw import NoDatesSafeLoader
    text = "a: 1e-1\nb: 1.0e-1\nc: 2020-01-01\nd: yes\ne: .5\nf: 0x1f\ng: 1_000\nh: null\n"
    assert params.parse_yaml(text) == yaml.load(text, Loader=NoDatesSafeLoader)
    assert params.parse_yaml(text)["a"] == "1e-1" and params.parse_yaml(text)["c"] == "2020-01-01"
    root = make_repo(tmp_path)
    write_yaml(root, "tiny", "07_toy", {}).write_text("lr: 1e-1\n")
    with pytest.raises(ParamError, match=r"'lr' of 07_toy expects float, got str '1e-1'; YAML 1.1.*1\.0e-3"):
        params.load("07_toy", "tiny", root=root)
