"""vlmlab.results: artifact files, provenance written only on success, published side by side."""
from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vlmlab import results  # noqa: E402
from vlmlab.results import Run  # noqa: E402

PARAMS = {"profile": "tiny", "device": "cpu", "out_dir": "", "seed": 3, "data_seed": 7, "n": 5}


def _run(tmp_path, **extra):
    return Run("07_toy", {**PARAMS, "out_dir": str(tmp_path / "out"), **extra})


def test_artifacts_are_written(tmp_path):
    run = _run(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = run.save_figure(fig, "curve")
    plt.close(fig)
    df = pd.DataFrame({"method": ["a", "b"], "acc": [0.5, 0.25]})
    csv = run.save_table(df, "acc", markdown=df.assign(acc=["50%", "25%"]))
    run.save_json({"arr": np.arange(3), "x": np.float32(1.5)}, "extra")
    run.log_metric(acc=np.float64(0.5))
    run.log_metric(loss=1.25)

    out = tmp_path / "out"
    assert png == out / "figures" / "curve.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "curve.pdf").read_bytes()[:4] == b"%PDF"
    assert csv == out / "tables" / "acc.csv"
    pd.testing.assert_frame_equal(pd.read_csv(csv), df)
    md = (out / "tables" / "acc.md").read_text()
    assert "50%" in md and "| method" in md
    assert json.loads((out / "extra.json").read_text()) == {"arr": [0, 1, 2], "x": 1.5}
    assert json.loads((out / "metrics.json").read_text()) == {"acc": 0.5, "loss": 1.25}
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


def test_default_dir_is_results_profile_notebook(tmp_path):
    run = Run("07_toy.ipynb", {**PARAMS, "out_dir": ""}, root=tmp_path)
    assert run.dir == tmp_path / "results" / "tiny" / "07_toy"
    assert (run.dir / "figures").is_dir() and (run.dir / "tables").is_dir()


def test_provenance_only_after_finish(tmp_path):
    run = _run(tmp_path)
    run.save_table(pd.DataFrame({"a": [1]}), "t")
    path = run.dir / "provenance.json"
    assert not path.exists()
    assert run.finish() == path
    prov = json.loads(path.read_text())
    assert prov["parameters"] == {**PARAMS, "out_dir": str(tmp_path / "out")}
    assert prov["seeds"] == {"seed": 3, "data_seed": 7}
    assert prov["notebook"] == "07_toy" and prov["profile"] == "tiny"
    assert set(prov["versions"]) >= {"python", "torch", "torchvision", "open_clip_torch", "numpy",
                                     "pandas", "papermill", "vlmlab"}
    assert prov["versions"]["pandas"] == pd.__version__
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["device"]["torch_threads"] >= 1 and "gpus" in prov["device"]
    assert prov["hostname"] and prov["timestamp"] and 0 <= prov["wall_time_s"] < 600
    assert prov["artifacts"] == ["tables/t.csv", "tables/t.md"]


def test_git_is_optional(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                # no git binary on PATH
    assert results._git(tmp_path) == {"commit": None, "dirty": None}


def test_new_run_removes_stale_provenance(tmp_path):
    _run(tmp_path).finish()
    assert (tmp_path / "out" / "provenance.json").exists()
    _run(tmp_path)
    assert not (tmp_path / "out" / "provenance.json").exists()


def test_context_manager_finishes_only_on_success(tmp_path):
    with _run(tmp_path) as run:
        run.log_metric(x=1)
    assert (run.dir / "provenance.json").exists()
    with pytest.raises(RuntimeError, match="boom"):
        with _run(tmp_path) as run:
            run.log_metric(x=2)
            raise RuntimeError("boom")
    assert not (run.dir / "provenance.json").exists()
    assert json.loads((run.dir / "metrics.json").read_text()) == {"x": 2}


def test_failed_write_leaves_previous_file_intact(tmp_path):
    run = _run(tmp_path)
    run.save_json({"ok": True}, "state")
    with pytest.raises(TypeError, match="cannot write object"):
        run.save_json({"bad": object()}, "state")
    assert json.loads((run.dir / "state.json").read_text()) == {"ok": True}
    assert not list(run.dir.glob(".*tmp*"))


def test_published_and_side_by_side(tmp_path):
    assert results.published("07_toy", root=tmp_path) is None
    (tmp_path / "params" / "published").mkdir(parents=True)
    (tmp_path / "params" / "published" / "07_toy.csv").write_text(
        "method,corruption,accuracy\nzs,gauss,40.0\nzs,shot,41.0\ntda,gauss,45.5\n")
    paper = results.published("07_toy", root=tmp_path)
    ours = pd.DataFrame({"method": ["zs", "tda", "new"], "corruption": ["gauss"] * 3,
                         "accuracy": [38.5, 46.0, 50.0]})
    table = results.side_by_side(ours, paper, on=["method", "corruption"], value="accuracy")
    assert list(table.columns) == ["method", "corruption", "ours", "published", "difference"]
    assert table["difference"].iloc[:2].tolist() == [-1.5, 0.5] and math.isnan(table["difference"].iloc[2])
    assert len(results.side_by_side(ours, paper, ["method", "corruption"], "accuracy", how="outer")) == 4
    with pytest.raises(KeyError, match="acc"):
        results.side_by_side(ours, paper, on=["method"], value="acc")


def test_read_cached_returns_the_value_or_discards_a_damaged_file(tmp_path, caplog):
    import logging

    from vlmlab.results import read_cached
    path = tmp_path / "x.txt"
    assert read_cached(path, lambda p: p.read_text(), "test") is None               # no file: a miss
    path.write_text("42")
    assert read_cached(path, lambda p: int(p.read_text()), "test") == 42
    path.write_text("not a number")
    with caplog.at_level(logging.WARNING):
        assert read_cached(path, lambda p: int(p.read_text()), "test") is None      # damaged: a miss ...
    assert not path.exists() and str(path) in caplog.text                           # ... deleted, named
