"""Notebook 01's analysis: prompts name their corruption, the table is complete, metrics match references."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from vlmlab.analysis import uniformity as U
from vlmlab.data.corruptions import COMMON, EXTRA
from vlmlab.features import Features
from vlmlab.params import declared

ADJECTIVES = {"noise": "noisy", "blur": "blurry", "snow": "snowy", "frost": "frosty", "fog": "foggy",
              "brightness": "bright", "contrast": "contrast", "elastic": "distorted", "pixelate": "pixelated",
              "jpeg": "jpeg", "spatter": "dirty", "saturate": "saturated"}


@pytest.fixture(scope="module")
def bundle(tiny_clip):
    return tiny_clip


def test_corruption_prompts_name_their_corruption():
    prompts = declared("01_uniformity_analysis")["corruption_prompts"]
    assert set(COMMON + EXTRA) <= set(prompts)
    for name in COMMON + EXTRA:
        words = [adj for key, adj in ADJECTIVES.items() if key in name]
        assert words and any(w in prompts[name] for w in words), (name, prompts[name])
        assert prompts[name].count("{}") == 1
    assert len({prompts[c] for c in COMMON}) >= 10  # not one wording for everything


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_corruption_prompts_end_as_the_plain_template_does(profile):
    """The corruption-aware column differs from the plain one by its adjective only, not by a period."""
    from vlmlab import params

    P = params.load("01_uniformity_analysis", profile)
    period = P.template.endswith(".")
    for name, prompt in P.corruption_prompts.items():
        assert prompt.endswith(".") == period, (profile, name, prompt)
        assert prompt.replace("{}", "").split()[-2:] == P.template.replace("{}", "").split()[-2:]


def test_table_has_every_condition_and_sane_values(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path))
    res = U.run(bundle, source="world:objects", corruptions=["gaussian_noise", "fog"], severities=[1, 3],
                shift_sources=["world:renditions"], n_images=20, template="a photo of a {}.",
                ensemble=U.ensemble("world", "a photo of a {}."), corruption_prompts={"gaussian_noise": "a noisy photo of a {}.",
                                                                                     "fog": "a foggy photo of a {}."},
                emd_samples=10, keep_feats=(("fog", 3),))
    t = res.table
    assert list(t.columns) == U.COLUMNS
    assert set(zip(t.condition, t.severity)) == {("clean", 0), ("gaussian_noise", 1), ("gaussian_noise", 3),
                                                  ("fog", 1), ("fog", 3), ("renditions", 0)}
    assert (t.n_images == 20).all()
    assert t.acc_corruption_prompt[t.condition.isin(["clean", "renditions"])].isna().all()
    assert t.acc_corruption_prompt[t.severity > 0].notna().all()
    assert ((t.uniformity > 0) & (t.uniformity <= 1)).all() and (t.modality_gap_emd > 0).all()
    assert ((t.entropy >= 0) & (t.entropy <= np.log(20) + 1e-6)).all()
    assert set(res.feats) == {("clean", 0), ("fog", 3)}
    poster = U.poster_table(t, ["gaussian_noise", "fog"], 3)
    assert list(poster.index) == U.METRIC_COLUMNS
    assert poster.loc["acc_plain", "corruption mean (sev 3)"] == pytest.approx(
        t[(t.severity == 3)].acc_plain.mean())


def test_missing_corruption_wording_is_a_clear_error(bundle):
    with pytest.raises(KeyError, match="corruption_prompts has no wording for \\['fog'\\]"):
        U.run(bundle, source="world:objects", corruptions=["fog"], severities=[1], shift_sources=[], n_images=4,
              template="{}", ensemble=["{}"], corruption_prompts={})


def test_condition_metrics_match_reference_computations():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(12, 5, generator=g), dim=-1)
    w = F.normalize(torch.randn(3, 5, generator=g), dim=-1)
    y = torch.arange(12) % 3
    out = U.condition_metrics(Features(z, y, "k"), {"plain": w, "ensemble": w, "corruption_prompt": None}, 10.0,
                              U.UniformityOptions(), emd_samples=12, emd_seed=0)
    assert out["acc_plain"] == pytest.approx(float((( z @ w.T).argmax(1) == y).float().mean() * 100))
    p = (10.0 * z @ w.T).softmax(1)
    assert out["entropy"] == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)
    d2 = torch.cdist(z, z) ** 2
    off = ~torch.eye(12, dtype=bool)
    assert out["uniformity"] == pytest.approx(float(torch.exp(-d2[off]).mean()), rel=1e-5)
    # EMD with 12 images vs 3 texts of weight 1/3 each = assignment of 12 images to 4 copies of each text
    cost = torch.cdist(z.double(), w.double().repeat_interleave(4, 0)).numpy()
    r, c = linear_sum_assignment(cost)
    assert out["modality_gap_emd"] == pytest.approx(cost[r, c].sum() / 12, rel=1e-6)
    assert np.isnan(out["acc_corruption_prompt"])


def test_restricting_to_a_class_subset_uses_those_rows():
    z = torch.eye(4)[[2, 3]]
    w = torch.eye(4)
    out = U.condition_metrics(Features(z, torch.tensor([0, 1]), "k"), {"plain": w, "ensemble": w, "corruption_prompt": None},
                              1.0, U.UniformityOptions(), 2, 0, class_index=torch.tensor([2, 3]))
    assert out["acc_plain"] == 100.0


def test_correlations():
    rows = [("clean", 0, 90, 0.2)] + [(f"c{i}", 5, 90 - 10 * i, 0.2 + 0.1 * i) for i in range(1, 5)] + [("shift", 0, 70, 0.22)]
    t = pd.DataFrame(rows, columns=["condition", "severity", "acc_plain", "uniformity"])
    r = U.correlations(t)
    assert r["spearman_r"] < -0.8 and r["n"] == 6


def test_pca_keeps_groups_and_shapes():
    g = torch.Generator().manual_seed(1)
    df = U.pca_2d({"a": torch.randn(5, 6, generator=g), "b": torch.randn(7, 6, generator=g)}, torch.randn(3, 6, generator=g))
    assert df.groupby("group").size().to_dict() == {"a": 5, "b": 7, "class text": 3}
    assert np.isfinite(df[["pc1", "pc2"]].values).all()


def test_paper_profile_prompts_name_every_wordnet_synonym(bundle, tmp_path, monkeypatch, fake_imagenet):
    """The paper profile's classnames: synsets reaches the text classifier as UniInfo's ", "-joined lists."""
    from vlmlab.params import load
    synonyms = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
                "n01484850": "great white shark, white shark, man-eater"}
    fake_imagenet(tmp_path / "data", synonyms)
    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))
    seen, real = [], U.zero_shot_weights
    monkeypatch.setattr(U, "zero_shot_weights", lambda b, names, *a, **k: seen.append(list(names)) or real(b, names, *a, **k))
    P = load("01_uniformity_analysis", "paper", {"data_root": str(tmp_path / "data"), "corruptions": ["fog"],
                                                   "shift_sources": [], "uniformity_kept_by": [], "emd_samples": 4,
                                                   "pca_condition": "fog"})
    assert P.classnames == "synsets"
    t = U.run_from_params(bundle, P).table
    assert list(t.condition) == ["clean", "fog"] and (t.n_images == 6).all()
    assert seen and all(names == list(synonyms.values()) for names in seen)
