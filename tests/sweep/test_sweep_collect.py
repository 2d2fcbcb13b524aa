"""collect: one tidy table from the complete cases, grid parameters as columns."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from vlmlab.cli import main
from vlmlab.sweep import SweepError, collect


def fake_case(root, cid, varying, table, done=True, name="acc"):
    folder = root / cid
    (folder / "tables").mkdir(parents=True)
    (folder / "case.json").write_text(json.dumps({"case_id": cid, "varying": varying, "params": varying}))
    table.to_csv(folder / "tables" / f"{name}.csv", index=False)
    if done:
        (folder / ".done").write_text("{}")
        (folder / "provenance.json").write_text("{}")
    return folder


def test_collect_stacks_complete_cases_with_their_parameters(tmp_path):
    a = pd.DataFrame({"method": ["x", "y"], "accuracy": [1.0, 2.0]})
    b = pd.DataFrame({"method": ["x", "y"], "accuracy": [3.0, 4.0]})
    fake_case(tmp_path, "lr=0.1,seed=0-aaaaaaaa", {"lr": 0.1, "seed": 0}, a)
    fake_case(tmp_path, "lr=0.2,seed=0-bbbbbbbb", {"lr": 0.2, "seed": 0}, b)
    fake_case(tmp_path, "lr=0.3,seed=0-cccccccc", {"lr": 0.3, "seed": 0}, b, done=False)   # killed: left out
    out = collect(tmp_path)
    expected = pd.concat([a.assign(lr=0.1, seed=0, case_id="lr=0.1,seed=0-aaaaaaaa"),
                          b.assign(lr=0.2, seed=0, case_id="lr=0.2,seed=0-bbbbbbbb")], ignore_index=True)
    pd.testing.assert_frame_equal(out, expected[["lr", "seed", "case_id", "method", "accuracy"]])
    assert out.attrs["table"] == "acc"


def test_parameter_columns_that_the_table_already_has(tmp_path):
    t = pd.DataFrame({"shots": [1, 5], "seed": [0, 0], "accuracy": [10.0, 20.0]})
    fake_case(tmp_path, "c1", {"shots": [1, 5], "seed": 7, "corruptions": ["fog"]}, t)
    out = collect(tmp_path, "acc")
    assert list(out.columns) == ["sweep_seed", "corruptions", "case_id", "shots", "seed", "accuracy"]
    assert out.sweep_seed.tolist() == [7, 7]            # disagrees with the table's own seed column: kept apart
    assert out.corruptions.tolist() == ['["fog"]'] * 2  # list values as canonical JSON
    assert out.shots.tolist() == [1, 5]                 # the table's shots are members of the list: not repeated


def test_collect_errors_name_the_fix(tmp_path):
    with pytest.raises(SweepError, match="holds no case folders"):
        collect(tmp_path)
    fake_case(tmp_path, "c1", {"seed": 0}, pd.DataFrame({"a": [1]}))
    fake_case(tmp_path, "c2", {"seed": 1}, pd.DataFrame({"a": [1]}), name="other")
    with pytest.raises(SweepError, match="which table"):
        collect(tmp_path)
    with pytest.raises(SweepError, match="case c2 has no table 'acc'.*it has: other"):
        collect(tmp_path, "acc")


def test_cli_collect_writes_the_merged_csv(tmp_path, capsys):
    fake_case(tmp_path, "c1", {"seed": 0}, pd.DataFrame({"a": [1, 2]}))
    fake_case(tmp_path, "c2", {"seed": 1}, pd.DataFrame({"a": [3]}))
    assert main(["collect", str(tmp_path), "--table", "acc", "-o", str(tmp_path / "merged.csv")]) == 0
    merged = pd.read_csv(tmp_path / "merged.csv")
    assert merged.seed.tolist() == [0, 0, 1] and merged.a.tolist() == [1, 2, 3]
    assert "3 rows from 2 case(s)" in capsys.readouterr().out
    assert main(["collect", str(tmp_path)]) == 0                  # default: the only table, into the folder
    assert (tmp_path / "acc.csv").is_file()
    assert main(["collect", str(tmp_path / "nowhere")]) == 2      # a SweepError is exit status 2
