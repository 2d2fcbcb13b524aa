"""scripts/fidelity_checks.py: every check's overrides are valid notebook parameters and config fields."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from vlmlab import params
from vlmlab.coop import CoOpConfig
from vlmlab.tta.linear_probe import LinearProbeConfig
from vlmlab.tta.tda import TDAConfig
from vlmlab.tta.tip_adapter import TipAdapterConfig
from vlmlab.tta.uniinfo import UniInfoConfig
from vlmlab.tta.zero import ZeroConfig
from vlmlab.visual_prompts.train import VPConfig

from script_loader import load_script

F = load_script("scripts/fidelity_checks.py")

CONFIGS = {"zero": ZeroConfig, "tip_adapter": TipAdapterConfig, "tda": TDAConfig, "uniinfo": UniInfoConfig,
           "vp": VPConfig, "coop": CoOpConfig, "linear_probe": LinearProbeConfig}


@pytest.mark.parametrize("check", F.checks(), ids=lambda c: c.name)
def test_overrides_are_parameters_and_config_fields(check):
    values = {**check.extra, **check.overrides}
    params.load(check.notebook, "embedded", values)                  # unknown keys or wrong types raise
    for key, value in check.overrides.items():
        if key in CONFIGS:
            fields = {f.name for f in dataclasses.fields(CONFIGS[key])}
            assert set(value) <= fields, f"{check.name}: {sorted(set(value) - fields)} not in {CONFIGS[key].__name__}"


def test_uniinfo_check_keeps_the_profile_values():
    """The UniInfo check changes one key; the profile's fitted values stay (one-level merge)."""
    (check,) = [c for c in F.checks() if c.name == "02_old_switches"]
    profile = params.read_yaml(params.params_path("02_uniinfo_tta", "embedded"))["uniinfo"]
    P = params.load("02_uniinfo_tta", "embedded", {**check.extra, **check.overrides})
    assert P.uniinfo == {**profile, "lora_backward": "exact"}


def test_coop_measures_read_the_tables(tmp_path):
    rows = [("objects", "coop", 16, "end", False, 16, s, a) for s, a in ((1, 70.0), (2, 72.0))]
    rows += [("digits", "coop", 16, "end", False, 16, 1, 50.0), ("objects", "coop", 16, "end", True, 16, 1, 10.0),
             ("objects", "zero_shot", 0, "-", False, 0, 1, 60.0)]
    (tmp_path / "tables").mkdir()
    pd.DataFrame(rows, columns=["dataset", "method", "n_ctx", "position", "csc", "shots", "seed", "accuracy"]) \
        .to_csv(tmp_path / "tables" / "coop.csv", index=False)
    assert F._objects16(tmp_path) == {"M16 end, objects, 16 shots (3 seeds)": 71.0}
    avg = F._coop_average(tmp_path)
    assert avg["M16 end average, 16 shots"] == pytest.approx((71.0 + 50.0) / 2)   # datasets weigh equally


def test_old_epochs_reach_coop_through_papermills_json():
    """papermill sends the overrides through JSON (int keys become text); the old epochs must still apply."""
    import json

    (check,) = [c for c in F.checks() if c.name == "03_old_epochs"]
    P = params.load(check.notebook, "embedded", json.loads(json.dumps(check.overrides)))
    assert [CoOpConfig(epochs=P.epochs).epochs_for(k) for k in (1, 2, 4, 8, 16)] == [25, 50, 50, 50, 50]


def _provenance(run: Path, commit: str, dirty: bool) -> Path:
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(f'{{"git": {{"commit": "{commit}", "dirty": {str(dirty).lower()}}}}}')
    return run


def test_a_default_run_of_other_code_is_flagged(tmp_path):
    same = F.stale_default(_provenance(tmp_path / "a", "abc", False), _provenance(tmp_path / "b", "abc", False))
    assert same is None
    other = F.stale_default(tmp_path / "a", _provenance(tmp_path / "c", "def", False))
    assert "abc" in other and "def" in other and "ran other code" in other
    edited = F.stale_default(_provenance(tmp_path / "d", "abc", True), _provenance(tmp_path / "e", "abc", True))
    assert "edited tree" in edited and F.code_of(tmp_path / "d") == "abc+dirty"
