"""benchmarks/estimate_coop_gpu_hours.py: the FLOP counts behind docs/sweeps.md's notebook-03 estimate."""
from __future__ import annotations

import pytest

from vlmlab.runtime import REPO_ROOT

from script_loader import load_script

E = load_script("benchmarks/estimate_coop_gpu_hours.py")


def _reference(c: int, m: int, position: str, csc: bool) -> float:
    """Position by position, layer by layer: which linear layers each position passes through."""
    w2, length = E.WIDTH ** 2, 1 + m + E.NAME_TOKENS + 2
    shared = 1 if csc else 1 + (m if position == "end" else m // 2)
    total = 0.0
    for layer in range(E.LAYERS):
        last = layer == E.LAYERS - 1
        total += shared * 12 * w2                                     # the shared positions: once per run
        for _ in range(c):
            for p in range(length - shared):
                eos = p == length - shared - 1
                # last layer: keys/values of every position (2 W^2), the rest (10 W^2) at the EOS only
                total += (12 * w2) if not last else (2 * w2 + (10 * w2 if eos else 0))
    return total


@pytest.mark.parametrize("m,position,csc", [(16, "end", False), (16, "middle", False), (16, "end", True), (4, "end", False)])
def test_text_macs_equal_a_position_by_position_count(m, position, csc):
    assert E.text_macs_per_step(37, m, position, csc, official=False) == pytest.approx(_reference(37, m, position, csc))


def test_official_count_and_orderings():
    assert E.text_macs_per_step(10, 16, "end", False, official=True) == 10 * 77 * 12 * 12 * 512 ** 2
    ours = {v: E.text_macs_per_step(100, 16, p, c, False) for v, p, c in
            [("uc_end", "end", False), ("uc_middle", "middle", False), ("csc", "end", True)]}
    assert ours["uc_end"] < ours["uc_middle"] < ours["csc"] < E.text_macs_per_step(100, 16, "end", True, True)


def test_grid_counts_coop_steps_and_seeds():
    t = E.grid((100.0, 300.0))
    assert len(t) == len(E.CLASSES) * (4 * 5 + 4)
    row = t[(t.dataset == "EuroSAT") & (t.variant == "M16_end") & (t.shots == 16)].iloc[0]
    assert row.steps == 3 * 200 * (10 * 16 // 32)                    # 3 seeds x 200 epochs x 5 steps
    imnet = t[(t.dataset == "ImageNet") & (t.variant == "M16_end") & (t.shots == 1)].iloc[0]
    assert imnet.steps == 3 * 50 * (1000 // 32)                      # ImageNet: 50 epochs for every K
    s = E.summary(t, (100.0, 300.0)).set_index("setting")["EFLOP"]
    assert s.iloc[0] > s.iloc[1] > s.iloc[2] > 0                      # CoOp's code > exact > cached


def test_variants_are_the_notebooks():
    """The estimate counts the variants notebook 03 trains by default (and parses them the same way)."""
    import ast

    from vlmlab.coop import CoOpConfig, parse_variant

    src = (REPO_ROOT / "notebooks" / "src" / "03_coop_shots.py").read_text()
    line = next(l for l in src.splitlines() if l.startswith("variants = "))
    names = ast.literal_eval(line.split("=", 1)[1].split("#")[0].strip())
    assert [v[0] for v in E.VARIANTS] == names
    for name, m, position, csc, shots in E.VARIANTS:
        variant = parse_variant(name)
        cfg = variant.config(CoOpConfig())
        assert (cfg.n_ctx, cfg.position, cfg.csc, variant.shots_or(E.SHOTS)) == (m, position, csc, tuple(shots)), name
