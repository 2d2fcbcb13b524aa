"""scripts/kernel_spread.py: the spread table on fake runs (no notebook is run here)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script

K = load_script("scripts/kernel_spread.py")

NB = "04_visual_prompt_fid"


def _run(root: Path, name: str, metrics: dict) -> Path:
    folder = root / name / "embedded"
    (folder / NB).mkdir(parents=True)
    (folder / NB / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_spread_is_the_range_over_the_stored_value_and_every_variant(tmp_path):
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / f"{NB}.json").write_text(json.dumps({
        "mean_gain": {"value": 4.0, "tol": 0.5, "source": "metrics.json:mean_gain"},
        "fid_spearman_r": {"value": 0.70, "tol": 0.25, "source": "metrics.json:fid_spearman_r"},
        "zero_shot": {"value": 73.0, "tol": 0.5, "source": "metrics.json:zero_shot"}}))
    runs = {"a": _run(tmp_path, "a", {"mean_gain": 4.4, "fid_spearman_r": 0.84, "zero_shot": 73.0}),
            "b": _run(tmp_path, "b", {"mean_gain": 3.9, "fid_spearman_r": 0.62, "zero_shot": 73.0})}
    table = K.spread(runs, NB, expected).set_index("number")
    assert "zero_shot" not in table.index                                  # unmoved numbers are left out
    assert table.loc["mean_gain", "range"] == pytest.approx(0.5)           # 3.9 .. 4.4, stored inside
    assert table.loc["fid_spearman_r", "range"] == pytest.approx(0.22)     # 0.62 .. 0.84
    assert bool(table.loc["mean_gain", "within"]) and bool(table.loc["fid_spearman_r", "within"])
    assert list(table.columns[:5]) == ["notebook", "stored", "a", "b", "range"]


def test_every_variant_sets_only_known_switches():
    known = {"ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "PYTHONPATH"}
    assert K.VARIANTS["default"] == {}
    for env in K.VARIANTS.values():
        assert set(env) <= known


def test_verdict_flips_lists_only_claims_that_differ_between_variants(tmp_path):
    runs = {}
    for name, verdicts in {"a": ["holds", "fails", "holds"], "b": ["holds", "holds", "holds"]}.items():
        folder = tmp_path / name / "embedded"
        (folder / NB / "tables").mkdir(parents=True)
        pd.DataFrame({"claim_id": ["c0", "c1", "c2"], "verdict": verdicts}).to_csv(
            folder / NB / "tables" / "claims.csv", index=False)
        runs[name] = folder
    flips = K.verdict_flips(runs, NB)
    assert flips.to_dict("records") == [{"claim_id": "c1", "a": "fails", "b": "holds", "notebook": NB}]
