"""benchmarks/bench_crops.py: the exact mode's decode + crop timed by threads, and its row in make bench's summary."""
from __future__ import annotations

from pathlib import Path

import torch


def test_bench_crops_times_every_thread_count_on_jpeg_files_and_lands_in_the_summary(tmp_path, load_benchmark):
    bench, run_all = load_benchmark("bench_crops"), load_benchmark("run_all")
    out = bench.main(["--workers", "2", "1", "--images", "8", "--reps", "2", "--size", "60", "40",
                      "--image-size", "16", "--csv", str(tmp_path / "bench_crops.csv")])
    assert out["workers"].tolist() == [1, 2] and (out["ms_per_batch"] > 0).all()
    assert out.loc[out["workers"] == 1, "speedup"].item() == 1.0
    rows = dict(run_all.other_ratios(tmp_path))
    (key, value), = [(k, v) for k, v in rows.items() if k.startswith("exact-mode CoOp's decode")]
    assert "60x40 JPEG" in key and value.startswith("1: ") and "2: " in value
    assert run_all.BENCHES["bench_crops"][0] == "bench_crops.py"


def test_the_synthetic_files_decode_to_their_size_and_the_stand_in_normalises_as_clip(load_benchmark):
    bench = load_benchmark("bench_crops")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ds = bench.jpeg_tree(Path(tmp), 3, (50, 30))
        img, label = ds[2]
        assert img.size == (50, 30) and label == 2 and len(ds) == 3
    from vlmlab.models.embedded import build_embedded
    model = build_embedded("cpu")
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(bench.stand_in(4).normalize_pixels(x), model.normalize_pixels(x))
