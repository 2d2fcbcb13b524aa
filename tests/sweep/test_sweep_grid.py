"""Sweep files: expansion counts, case ids stable under key order, explicit cases, early errors."""
from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from vlmlab.params import notebook_path
from vlmlab.runtime import REPO_ROOT
from vlmlab.sweep import SweepError, load_sweep


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_grid_count_is_the_product_and_cases_multiply_it(tmp_path):
    grid = load_sweep(write(tmp_path, "g", "notebook: 00_quickstart\ngrid: {seed: [0, 1, 2], n_points: [10, 20]}\n"))
    assert len(grid.expand()) == 6
    assert {(c.params["seed"], c.params["n_points"]) for c in grid.expand()} == {
        (s, n) for s in (0, 1, 2) for n in (10, 20)}
    both = load_sweep(write(tmp_path, "b", "notebook: 00_quickstart\ngrid: {seed: [0, 1, 2]}\n"
                                           "cases: [{n_points: 10}, {n_points: 30}]\n"))
    assert len(both.expand()) == 6
    only = load_sweep(write(tmp_path, "c", "notebook: 00_quickstart\nfixed: {seed: 4}\n"
                                           "cases: [{n_points: 10}, {n_points: 30}]\n"))
    assert [c.params for c in only.expand()] == [{"seed": 4, "n_points": 10}, {"seed": 4, "n_points": 30}]
    assert [c.varying for c in only.expand()] == [{"n_points": 10}, {"n_points": 30}]
    assert len(load_sweep(write(tmp_path, "e", "notebook: 00_quickstart\n")).expand()) == 1   # base params only


def test_case_ids_are_stable_under_key_order(tmp_path):
    a = load_sweep(write(tmp_path, "a", "notebook: 00_quickstart\nprofile: tiny\n"
                                        "grid: {seed: [0, 1], n_points: [10, 20]}\n"))
    b = load_sweep(write(tmp_path, "b", "profile: tiny\ngrid:\n  n_points: [10, 20]\n  seed: [0, 1]\n"
                                        "notebook: 00_quickstart\n"))
    ids_a = {(c.params["seed"], c.params["n_points"]): c.id for c in a.expand()}
    ids_b = {(c.params["seed"], c.params["n_points"]): c.id for c in b.expand()}
    assert ids_a == ids_b and len(set(ids_a.values())) == 4
    # explicit cases written with their keys in another order give the same ids too
    c1 = load_sweep(write(tmp_path, "c1", "notebook: 00_quickstart\ncases: [{seed: 1, n_points: 7}]\n"))
    c2 = load_sweep(write(tmp_path, "c2", "notebook: 00_quickstart\ncases: [{n_points: 7, seed: 1}]\n"))
    assert c1.expand()[0].id == c2.expand()[0].id == "n_points=7,seed=1-" + c1.expand()[0].digest


def test_case_id_hash_is_sha1_of_canonical_json(tmp_path):
    sweep = load_sweep(write(tmp_path, "h", "notebook: 00_quickstart\nprofile: tiny\nfixed: {n_points: 50}\n"
                                            "grid: {seed: [3]}\n"))
    case = sweep.expand()[0]
    reference = json.dumps({"notebook": "00_quickstart", "params": {"n_points": 50, "seed": 3}, "profile": "tiny"},
                           sort_keys=True, separators=(",", ":"))
    assert case.id == "seed=3-" + hashlib.sha1(reference.encode()).hexdigest()[:8]


def test_changing_a_fixed_value_changes_every_id(tmp_path):
    one = load_sweep(write(tmp_path, "f1", "notebook: 00_quickstart\nfixed: {n_points: 50}\ngrid: {seed: [0, 1]}\n"))
    two = load_sweep(write(tmp_path, "f2", "notebook: 00_quickstart\nfixed: {n_points: 51}\ngrid: {seed: [0, 1]}\n"))
    assert not {c.id for c in one.expand()} & {c.id for c in two.expand()}
    assert [c.id.split("-")[0] for c in one.expand()] == [c.id.split("-")[0] for c in two.expand()]


def test_list_valued_parameters_take_a_list_of_lists_and_floats_read_as_papermill_reads_them(tmp_path):
    sweep = load_sweep(write(tmp_path, "l", "notebook: 02_uniinfo_tta\nfixed: {uniinfo: {lr: 1.0e-3}}\n"
                                            "grid: {shots: [[1], [5, 10]]}\n"), validate=False)
    cases = sweep.expand()
    assert [c.params["shots"] for c in cases] == [[1], [5, 10]]
    assert isinstance(cases[0].params["uniinfo"]["lr"], float) and cases[0].params["uniinfo"]["lr"] == 1e-3
    assert cases[1].id.startswith("shots=5+10-")
    # YAML 1.1 (papermill's -f/-y) reads 1e-3 as a string: the sweep file is read the same way
    plain = load_sweep(write(tmp_path, "p", "notebook: 00_quickstart\nfixed: {n_points: 1e-3}\n"), validate=False)
    assert plain.fixed["n_points"] == "1e-3"


def test_base_file_is_read_as_papermill_reads_it(tmp_path):
    """Issue 19, defect 9: `lr: 1e-1` in the base file is a float to the old loader, a str to papermill's -f."""
    base = write(tmp_path, "base", "lr: 1e-1\n")
    text = f"notebook: 04_visual_prompt_fid\nbase: {base}\ngrid: {{seed: [0, 1]}}\n"
    with pytest.raises(SweepError) as err:
        load_sweep(write(tmp_path, "s", text))
    msg = str(err.value)
    assert "parameter 'lr' of 04_visual_prompt_fid expects float, got str '1e-1'" in msg and "1.0e-3" in msg
    base.write_text("lr: 1.0e-1\n")
    assert len(load_sweep(write(tmp_path, "s", text)).expand()) == 2


def test_cases_are_validated_with_ranges_and_the_profile_file_under_them(tmp_path):
    with pytest.raises(SweepError, match=r"'severity' of 02_uniinfo_tta: 0 is outside the allowed range 1\.\.5"):
        load_sweep(write(tmp_path, "r", "notebook: 02_uniinfo_tta\ngrid: {severity: [0, 5]}\n"))
    with pytest.raises(SweepError, match="'methods' of 02_uniinfo_tta must not be empty"):
        load_sweep(write(tmp_path, "m", "notebook: 02_uniinfo_tta\nfixed: {methods: []}\n"))


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "a\\\\b", ""])
def test_sweep_name_must_be_one_folder_name(tmp_path, name):
    """Issue 19, defect 9: `name: ../../x` wrote outside the results root."""
    with pytest.raises(SweepError, match="must be a single folder name"):
        load_sweep(write(tmp_path, "n", f"notebook: 00_quickstart\nname: '{name or 'x/'}'\n"), results_root=tmp_path)
    assert load_sweep(write(tmp_path, "ok", "notebook: 00_quickstart\nname: lr_1e-3.v2\n")).name == "lr_1e-3.v2"


def test_sweep_yaml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "broken", "notebook: 00_quickstart\ngrid: {seed: [0, 1}\n")
    with pytest.raises(SweepError, match=rf"{path}: line 2.*YAML syntax error"):
        load_sweep(path)


@pytest.mark.parametrize("text, message", [
    ("notebook: 00_quickstart\ngrid: {seed: 3}\n", "grid.seed must be a non-empty list"),
    ("notebook: 00_quickstart\ngird: {seed: [1]}\n", "unknown key(s) ['gird']"),
    ("grid: {seed: [1]}\n", "`notebook:` is required"),
    ("notebook: 00_quickstart\nfixed: {seed: 1}\ngrid: {seed: [1, 2]}\n", "'seed' is both fixed and varied"),
    ("notebook: 00_quickstart\ncases: [{seed: 1}, {seed: 1}]\n", "are identical"),
    ("notebook: 00_quickstart\ngrid: {n_point: [1]}\n", "unknown parameter 'n_point'"),
    ("notebook: 00_quickstart\ngrid: {n_points: [10, ten]}\n", "parameter 'n_points' of 00_quickstart expects int"),
    ("notebook: 00_quickstart\nfixed: {out_dir: x}\n", "'out_dir' is set by the sweep itself"),
    ("notebook: 00_quickstart\nslurm: {partitoin: gpu}\n", "unknown slurm option(s) ['partitoin']"),
    ("notebook: 00_quickstart\nexecutor: k8s\n", "executor must be 'local' or 'slurm'"),
], ids=["scalar-grid", "unknown-key", "no-notebook", "fixed-and-varied", "duplicate", "unknown-param",
        "wrong-type", "out_dir", "slurm-typo", "executor"])
def test_bad_sweep_files_fail_before_anything_runs(tmp_path, text, message):
    with pytest.raises(SweepError) as err:
        load_sweep(write(tmp_path, "bad", text))
    assert message in str(err.value)


def test_unknown_parameter_error_suggests_the_close_name(tmp_path):
    with pytest.raises(SweepError, match="did you mean 'n_points'"):
        load_sweep(write(tmp_path, "typo", "notebook: 00_quickstart\ngrid: {n_point: [1]}\n"))


def test_sweep_folder_is_under_results_profile_notebook_sweeps(tmp_path):
    sweep = load_sweep(write(tmp_path, "where", "notebook: 00_quickstart\nprofile: tiny\n"), results_root=tmp_path)
    assert sweep.dir == tmp_path / "tiny" / "00_quickstart" / "sweeps" / "where"
    assert sweep.base_path == REPO_ROOT / "params" / "tiny" / "00_quickstart.yaml"


# The shipped sweep files: the count each should expand to; checked against the notebook when it exists.
SHIPPED = {"embedded_small": 6, "paper_02_uniinfo_tta": 15, "paper_03_coop_shots": 33,
           "paper_04_visual_prompt_fid": 36}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweep_files_expand_and_validate(name):
    path = REPO_ROOT / "params" / "sweeps" / f"{name}.yaml"
    notebook = yaml.safe_load(path.read_text())["notebook"]
    exists = notebook_path(notebook).is_file()
    sweep = load_sweep(path, validate=exists)             # validated against the notebook once it exists
    cases = sweep.expand()
    assert len(cases) == SHIPPED[name] and len({c.id for c in cases}) == len(cases)
    assert sweep.profile == ("embedded" if name.startswith("embedded") else "paper")


def test_rerun_sweeps_cover_every_notebook_with_claims_and_change_every_seed():
    """params/sweeps/reruns/: one file per notebook that writes a claims ledger, all named 'reruns', each case
    validating against the notebook and drawing seeds the shipped run does not use (else a 'rerun' is the run)."""
    from vlmlab import params as vparams
    from vlmlab.claims import RERUNS
    with_claims = sorted(p.stem for p in (REPO_ROOT / "notebooks" / "src").glob("*.py")
                         if "vlmlab.claims.evaluate" in p.read_text())
    files = sorted((REPO_ROOT / "params" / "sweeps" / RERUNS).glob("*.yaml"))
    assert [p.stem for p in files] == with_claims
    for path in files:
        sweep = load_sweep(path, validate=True)
        assert sweep.name == RERUNS and sweep.notebook == path.stem and sweep.profile == "embedded"
        base = vparams.load(path.stem, "embedded")
        cases = sweep.expand()
        assert len(cases) >= 2
        for case in cases:
            assert case.params["seed"] != base["seed"], case.id
            if "seeds" in case.params:
                assert not set(case.params["seeds"]) & set(base["seeds"]), case.id
