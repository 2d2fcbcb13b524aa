"""Every notebook runs end to end under papermill with the tiny profile and writes its artifacts.

The kernel is this interpreter, whatever kernels the machine has registered: a kernel spec
pointing at ``sys.executable`` (the ``kernel_name`` fixture of ``tests/conftest.py``) is written to a temporary folder put first on ``JUPYTER_PATH``
(so a fresh clone needs no ``make setup`` kernel registration, and a stale user-level
``python3`` spec cannot hijack the run).
"""
from __future__ import annotations

import json

import nbformat
import papermill
import pytest
import yaml

from vlmlab.runtime import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def execute(notebook, out_dir, kernel, **extra):
    """Run ``notebook`` with params/tiny/<nb>.yaml, profile tiny, CPU, writing into ``out_dir``."""
    tiny = REPO_ROOT / "params" / "tiny" / f"{notebook.stem}.yaml"
    parameters = (yaml.safe_load(tiny.read_text()) or {}) if tiny.is_file() else {}
    parameters.update(profile="tiny", out_dir=str(out_dir), device="cpu", **extra)
    return papermill.execute_notebook(
        str(notebook), str(out_dir / "executed.ipynb"), parameters=parameters, kernel_name=kernel,
        cwd=str(REPO_ROOT / "notebooks"), progress_bar=False, log_output=False,
        start_timeout=180, execution_timeout=900)


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_writes_artifacts(notebook, tmp_path, kernel_name):
    nb = execute(notebook, tmp_path, kernel_name)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{notebook.name}: cell errors {[e['ename'] for e in errors]}"
    stderr = "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stderr")
    assert "IProgress not found" not in stderr, "tqdm.auto found no ipywidgets in the kernel (a pyproject dependency)"
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not widgets, "a batch run (VLMLAB_BATCH=1) saved widget progress bars into the notebook; text bars expected"
    assert nb.metadata.papermill.parameters["profile"] == "tiny"
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["notebook"] == notebook.stem and prov["profile"] == "tiny"
    tables, figures = tmp_path / "tables", tmp_path / "figures"
    assert any(p.with_suffix(".md").is_file() for p in tables.glob("*.csv")), "no table (csv + md) written"
    assert any(p.with_suffix(".pdf").is_file() for p in figures.glob("*.png")), "no figure (png + pdf) written"
    assert nbformat.read(tmp_path / "executed.ipynb", as_version=4).cells


@pytest.mark.timeout(600)
def test_unknown_parameter_stops_the_notebook(tmp_path, kernel_name):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        execute(REPO_ROOT / "notebooks" / "00_quickstart.ipynb", tmp_path, kernel_name, bogus_key=1)
    assert err.value.ename == "ParamError"
    assert "unknown parameter 'bogus_key'" in err.value.evalue and "allowed:" in err.value.evalue
    assert not (tmp_path / "provenance.json").exists()
