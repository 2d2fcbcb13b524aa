"""Repository contracts: clean tagged notebooks, one dependency source, CI entry, import layers."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from vlmlab.runtime import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
REQUIRED_PARAMS = {"profile", "device", "out_dir", "seed"}
TEST_COMMAND = "VLMLAB_BATCH=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q"

# Import layers (DESIGN/STYLE): a module imports only from its own or lower layers;
# L3 packages never import each other. Notebooks may import anything.
LAYERS = {
    "runtime": 0, "params": 0, "results": 0, "plots": 0, "claims": 0, "report": 0, "verify": 0, "runcache": 0, "checkpoints": 0,
    "world": 1, "data": 1, "models": 1, "metrics": 1,
    "features": 2, "prompts": 2,
    "probe": 2,         # linear probe: a baseline of both tta (02) and coop (03), so below L3
    "analysis": 3, "tta": 3, "coop": 3, "visual_prompts": 3, "blind": 3,
    "sweep": 3,  # orchestration: runs notebooks, never imports methods
    "cli": 4,    # the command line sits on top of everything
}


# ---- notebooks ------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_tagged(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; strip them"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: drop metadata.widgets"
    assert code and "parameters" in code[0].get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell must be tagged 'parameters'"
    tree = ast.parse("".join(code[0]["source"]))
    names = {t.id for s in tree.body for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
             if isinstance(t, ast.Name)}
    assert REQUIRED_PARAMS <= names, f"{path.name}: parameters cell lacks {sorted(REQUIRED_PARAMS - names)}"


@pytest.mark.parametrize("source", sorted((REPO_ROOT / "notebooks" / "src").glob("*.py")), ids=lambda p: p.stem)
def test_generated_notebook_matches_its_source(source):
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_notebook.py"), "--check", str(source)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ---- build, CI, environment -----------------------------------------------------------

def _makefile() -> str:
    return (REPO_ROOT / "Makefile").read_text()


def test_ci_runs_make_test():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must call `make test`"


def test_readme_test_command_is_the_makefiles():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme
    shown = re.search(r"VLMLAB_BATCH=1 HF_HUB_OFFLINE=1 (\S+) -m pytest -q", readme)
    assert shown and shown.group(1) == ".venv/bin/python", "README must show the test command"
    assert TEST_COMMAND in _makefile()


def _pins(lines) -> set[str]:
    return {s.replace(" ", "") for s in lines if re.match(r"torch(vision)?\s*==", s)}


def test_environment_yml_points_at_pyproject_with_the_same_pins():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert any(re.fullmatch(r"-e \.(\[[\w,]+\])?", p) for p in pip), "pip section must install -e ."
    make_pins = set(re.search(r"^TORCH_PINS := (.+)$", _makefile(), re.M).group(1).split())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _pins(pip) == make_pins == _pins(project) and len(make_pins) == 2


def test_setup_installs_torch_before_the_package():
    text = _makefile()
    assert text.index("pip install $(TORCH_PINS)") < text.index("pip install -e '.[test]'")


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_reproduce_recipe_runs_papermill_with_profile_params():
    out = subprocess.run(["make", "-n", "-B", "reproduce", "PROFILE=tiny", "PY=python", "NOTEBOOKS=00_quickstart"],
                         cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert ("python -m papermill notebooks/00_quickstart.ipynb results/tiny/00_quickstart/executed.partial.ipynb"
            in out.stdout)
    assert ("mv -f results/tiny/00_quickstart/executed.partial.ipynb results/tiny/00_quickstart/executed.ipynb"
            in out.stdout), "only a finished run may become the make target"
    for piece in ("-k vlmlab", "--cwd notebooks", "-f params/tiny/00_quickstart.yaml", "-r profile tiny",
                  f"-r out_dir {REPO_ROOT / 'results/tiny/00_quickstart'}", "VLMLAB_BATCH=1 HF_HUB_OFFLINE=1"):
        assert piece in out.stdout, piece


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
@pytest.mark.parametrize("args", [["clean-results", "PROFILE="], ["clean-results", "PROFILE=a/.."],
                                  ["clean-results", "PROFILE=tiny", "RESULTS_DIR="],
                                  ["clean-cache", "VLMLAB_CACHE_DIR="], ["clean-cache", "VLMLAB_CACHE_DIR=/"],
                                  ["clean-cache", "VLMLAB_CACHE_DIR=~"], ["clean-cache", "VLMLAB_CACHE_DIR=."]],
                         ids=" ".join)
def test_clean_targets_refuse_empty_or_sweeping_paths(args):
    out = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "rm -rf" not in out.stdout, out.stdout
    assert "make clean-" in out.stderr and ("PROFILE" in out.stderr or "_DIR" in out.stderr), out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_reruns_target_runs_every_rerun_sweep_then_the_scorecard(tmp_path):
    out = subprocess.run(["make", "-n", "--no-print-directory", "reruns", f"RESULTS_DIR={tmp_path}", "PY=python"],
                         cwd=REPO_ROOT, capture_output=True, text=True)     # no "Leaving directory" under make test
    assert out.returncode == 0, out.stderr
    files = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "params/sweeps/reruns").glob("*.yaml"))
    assert files and all(f in out.stdout for f in files)
    assert f"vlmlab.cli claims --profile embedded --results-root {tmp_path}" in out.stdout.splitlines()[-1]
    out = subprocess.run(["make", "-n", "reruns", "PROFILE=tiny", "PY=python"], cwd=REPO_ROOT, capture_output=True,
                         text=True)
    assert out.returncode != 0 and "embedded profile" in out.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_clean_cache_ignores_an_unrelated_cache_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VLMLAB_CACHE", "VLMLAB_CACHE_DIR")}
    out = subprocess.run(["make", "-n", "clean-cache"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**env, "CACHE": "/somewhere"})
    assert out.returncode == 0, out.stderr
    assert "/somewhere" not in out.stdout and "rm -rf -- '.cache/vlmlab'" in out.stdout
    out = subprocess.run(["make", "-n", "clean-cache"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**env, "VLMLAB_CACHE": str(tmp_path)})
    assert f"rm -rf -- '{tmp_path}'" in out.stdout, "clean-cache must delete the cache the code uses"


# ---- import layers --------------------------------------------------------------------

def _imports(path: Path, package_root: Path):
    """Yield (line, imported module as a list of parts) for every vlmlab import in ``path``."""
    rel = path.relative_to(package_root.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            if len(target) == 1:
                for alias in node.names:
                    yield node.lineno, target + [alias.name]
            else:
                yield node.lineno, target


def layer_violations(package_root: Path, layers: dict[str, int] = LAYERS) -> list[str]:
    """Every import edge that breaks the layering, as 'file:line: src (Ln) -> dst (Lm): why'."""
    name = package_root.name
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root)
        if rel == Path("__init__.py"):
            continue                                     # lazy attribute access only
        src = rel.parts[0].removesuffix(".py")
        if src not in layers:
            problems.append(f"{name}/{rel}: '{src}' has no layer; add it to LAYERS in tests/test_repo.py")
            continue
        for line, target in _imports(path, package_root):
            if target[0] != name or len(target) < 2:
                continue
            dst = target[1]
            if dst not in layers:
                if (package_root / dst).is_dir() or (package_root / f"{dst}.py").is_file():
                    problems.append(f"{name}/{rel}:{line}: imports '{dst}', which has no layer")
                continue                                 # an attribute of vlmlab/__init__ (e.g. __version__)
            edge = f"{name}/{rel}:{line}: {src} (L{layers[src]}) -> {dst} (L{layers[dst]})"
            if src == dst:
                continue
            if layers[dst] > layers[src]:
                problems.append(f"{edge}: imports a higher layer")
            elif layers[dst] == layers[src] == 3:
                problems.append(f"{edge}: L3 packages never import each other; move the shared code down")
    return problems


def test_import_layers():
    problems = layer_violations(REPO_ROOT / "vlmlab")
    assert not problems, "wrong import edges:\n" + "\n".join(problems)


def test_layer_check_catches_wrong_edges(tmp_path):
    pkg = tmp_path / "vlmlab"
    for rel, text in {"__init__.py": "", "runtime.py": "from vlmlab import __version__\n",
                      "metrics/__init__.py": "from .classification import accuracy\n",
                      "metrics/classification.py": "from vlmlab.tta import tda\nfrom .. import runtime\n",
                      "tta/__init__.py": "from ..coop import CoOp\nimport vlmlab.features\n",
                      "coop.py": "from vlmlab.prompts import x\n", "utils.py": ""}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    problems = layer_violations(pkg)
    assert len(problems) == 3, problems
    assert "metrics/classification.py:1: metrics (L1) -> tta (L3): imports a higher layer" in problems[0]
    assert "tta/__init__.py:1: tta (L3) -> coop (L3): L3 packages never import each other" in problems[1]
    assert "'utils' has no layer" in problems[2]


def test_open_clip_is_imported_only_by_models():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "vlmlab").rglob("*.py")
                 if "models" not in p.relative_to(REPO_ROOT / "vlmlab").parts
                 and any(t[0] == "open_clip" for _, t in _imports(p, REPO_ROOT / "vlmlab"))]
    assert not offenders, f"only vlmlab/models/ may import open_clip (one place to swap backbones): {offenders}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_declared_parameter(path, caplog):
    """Papermill parses the parameters cell itself (for `--help-notebook` and its unknown-key warning).

    A type annotation (`n: int | None = 4`) or a comment holding `=` makes it skip the line and
    warn 'Passed unknown parameter' on every run; the type-comment form keeps both readers happy.
    """
    import logging

    from papermill.translators import PythonTranslator

    from vlmlab import params

    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell = {**cell, "source": "".join(cell["source"])}
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = {p.name for p in PythonTranslator.inspect(cell)}
    assert not [r.getMessage() for r in caplog.records], "papermill could not parse some lines"
    assert found == set(params.declared(path.stem)), sorted(found ^ set(params.declared(path.stem)))
