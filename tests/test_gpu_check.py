"""scripts/gpu_check.py (`make gpu-check`): the paper counts, the estimate, no-CUDA exit, a CPU quick run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vlmlab.coop import CoOpConfig
from vlmlab.runtime import REPO_ROOT

from script_loader import load_script

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    yield load_script("scripts/gpu_check.py")
    sys.modules.pop("gpu_check", None)


def test_epochs_follow_coop_config(gc):
    cfg = CoOpConfig(epochs=gc.COOP_EPOCHS)
    assert [gc.epochs_for(gc.COOP_EPOCHS, k) for k in range(1, 33)] == [cfg.epochs_for(k) for k in range(1, 33)]


def test_coop_steps_closed_forms(gc):
    assert gc.coop_steps(32, {1: 10}, runs={1: 1}) == 10                 # K*C = batch: one step per epoch
    assert gc.coop_steps(10, {1: 50}, runs={1: 3}) == 150                # K*C < batch: still one step
    assert gc.coop_steps(100, gc.COOP_EPOCHS, runs={16: 1}) == 200 * (1600 // 32)
    assert gc.coop_steps(100, gc.COOP_EPOCHS, runs={1: 1, 16: 2}) == 50 * 3 + 2 * 200 * 50


def test_coop_reference_steps_weight_by_classes_and_use_imagenets_epochs(gc):
    one = gc.coop_steps(100, gc.COOP_EPOCHS)
    assert gc.coop_reference_steps({"Food": 100}, seeds=1, ref=100) == pytest.approx(one)
    assert gc.coop_reference_steps({"Food": 200}, seeds=3, ref=100) == pytest.approx(3 * 2 * gc.coop_steps(200, gc.COOP_EPOCHS))
    imagenet = gc.coop_reference_steps({"ImageNet": 100}, seeds=1, ref=100)
    assert imagenet == pytest.approx(gc.coop_steps(100, {1: 50})) and imagenet < one


def test_coop_reference_steps_count_every_step_once_by_default(gc):
    classes = {"Food": 100, "Cars": 196, "ImageNet": 1000}
    plain = 2 * (gc.coop_steps(100, gc.COOP_EPOCHS) + gc.coop_steps(196, gc.COOP_EPOCHS)
                 + gc.coop_steps(1000, {1: 50}))
    assert gc.coop_reference_steps(classes, seeds=2) == plain
    assert gc.coop_reference_steps(classes, seeds=2, ref=100) > plain          # C > 100 weighs more


def test_estimate_and_timing(gc):
    assert gc.estimate_hours(7200, 2.0) == pytest.approx(1.0)
    seconds, out = gc.timed(lambda: 41 + 1, torch.device("cpu"))
    assert out == 42 and 0 <= seconds < 1


def test_summary_counts_only_the_paper_path_and_failures(gc):
    rows = [{"notebook": "a", "total": True, "hours": 2.0, "peak_gb": 3.0},
            {"notebook": "a", "total": False, "hours": 50.0, "peak_gb": 9.0},
            {"notebook": "a", "total": True, "error": "OutOfMemoryError: ..."},
            {"notebook": "b", "total": True, "hours": None, "peak_gb": None}]
    s = gc.summarise(rows)
    assert s["a"] == {"hours": 2.0, "peak_gb": 9.0, "failed": 1}
    assert s["b"] == {"hours": None, "peak_gb": None, "failed": 0}


def test_a_failing_workload_is_a_row_not_a_crash(gc):
    chk = gc.Check(torch.device("cpu"), gc.QUICK)
    assert chk.run("05_vlm_blind_tests", "boom", "questions", 1, lambda: 1 / 0) is None
    assert chk.run("05_vlm_blind_tests", "ok", "questions", 4, lambda: "x") == "x"
    bad, ok = chk.rows
    assert bad["error"].startswith("ZeroDivisionError") and "per_s" not in bad
    assert ok["per_s"] > 0 and ok["hours"] is None and ok["paper_count"] == 4_000
    text = gc.table(chk.rows, cuda=False)
    assert "FAILED: ZeroDivisionError" in text and gc.CPU_NOTE in text and "1 FAILED" in text


def test_table_on_cuda_shows_hours_and_the_total(gc):
    row = {"notebook": "05_vlm_blind_tests", "workload": "letter scoring", "precision": "bf16", "per_s": 2.0,
           "peak_gb": 15.3, "paper_count": 4_000, "hours": gc.estimate_hours(4_000, 2.0), "total": True}
    text = gc.table([row, {**row, "workload": "alternative", "hours": 9.0, "total": False}], cuda=True)
    assert text.splitlines()[2].endswith(" 0.56") and text.splitlines()[3].endswith(" 9.00*")  # 4,000 / (2 per s) = 2,000 s
    assert "total 0.6 GPU-h (est.), peak 15.3 GB" in text


def test_counts_cover_the_paper_notebooks(gc):
    notebooks = {p.stem for p in (REPO_ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")} - {"00_quickstart"}
    assert set(gc.PAPER_COUNTS) == set(gc.PRECISION) == set(gc.CHECKS) == notebooks
    assert all(count > 0 and source for counts in gc.PAPER_COUNTS.values() for count, source in counts.values())


def test_precision_is_read_from_the_paper_profile(gc, tmp_path):
    for name, text in {"a": "precision: fp16\nbatch_size: 8\n", "b": "dtype: bfloat16\n", "c": "n: 1\n", "d": ""}.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    assert [gc.paper_precision(n, tmp_path) for n in "abcd"] == ["fp16", "bf16", "fp32", "fp32"]
    assert gc.PRECISION["05_vlm_blind_tests"] == "bf16"


def test_without_cuda_it_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gpu-check needs a CUDA GPU; this machine has none" in out.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cpu_quick_runs_every_notebooks_workloads(gc, tmp_path, capsys):
    path = tmp_path / "check.json"
    assert gc.main(["--device", "cpu", "--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert set(report["notebooks"]) == set(gc.PAPER_COUNTS)
    rows = report["rows"]
    assert not [r for r in rows if "error" in r]
    assert {r["notebook"] for r in rows} == set(gc.PAPER_COUNTS) and all(r["per_s"] > 0 for r in rows)
    assert all(r["hours"] is None and r["precision"] == "fp32" for r in rows)   # the CPU gives no GPU estimate
    assert gc.CPU_NOTE in capsys.readouterr().out
