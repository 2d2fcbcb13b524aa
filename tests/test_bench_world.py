"""benchmarks/bench_world.py: its rows, and the pooled-corruption ratio in make bench's summary."""
import pandas as pd


def test_bench_world_times_every_stage_and_the_summary_has_the_warm_up_ratio(tmp_path, monkeypatch, load_benchmark):
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    bench, run_all = load_benchmark("bench_world"), load_benchmark("run_all")
    # 130 images: 3 chunks of 64, so the pooled calls fork their workers as the notebooks do
    rows = bench.main(["--n", "130", "--corruptions", "gaussian_noise", "--severities", "1", "3", "--threads", "1",
                       "--csv", str(tmp_path / "bench_world.csv")])
    table = pd.read_csv(tmp_path / "bench_world.csv")
    assert table[["stage", "name"]].values.tolist() == [
        ["render", "objects"], ["corrupt", "gaussian_noise"], ["encode", "embedded"],
        ["corrupt_pooled", "warmed"], ["corrupt_pooled", "unwarmed"]]
    assert len(rows) == 5 and (table["images_per_s"] > 0).all()
    summary = dict(run_all.other_ratios(tmp_path))
    ratio = table.set_index("name").loc["warmed", "images_per_s"] / table.set_index("name").loc["unwarmed", "images_per_s"]
    (value,) = [v for k, v in summary.items() if k.startswith("corrupting as the notebooks do")]
    assert value == f"{ratio:.1f}x"
