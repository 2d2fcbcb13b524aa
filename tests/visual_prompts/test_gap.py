"""Distribution gap: FID and the set-level LPIPS-style distance (closed forms, properties, brute force)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.metrics import perceptual_distance
from vlmlab.visual_prompts import EncoderFeatures, GapFeatures, InceptionFeatures, LpipsNet, fid, lpips, to_uint8
from vlmlab.visual_prompts.gap import ALEXNET_FILE, INCEPTION_FILE


class Flatten:
    """A linear 'feature extractor': pooled = the pixels themselves (closed-form FID)."""

    def pooled(self, images):
        return torch.from_numpy(to_uint8(images)).double().flatten(1)


def test_fid_of_a_pixel_shift_is_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.integers(60, 150, (400, 2, 2, 3)).astype(np.uint8)     # D = 12 > 0, N >> D
    assert fid(a, a, Flatten()) == pytest.approx(0.0, abs=1e-6)
    for c in (5, 20, 50):
        # same covariance, mean moved by c in every one of the 12 dimensions: FID = 12 c^2
        assert fid(a, a + np.uint8(c), Flatten()) == pytest.approx(12 * c * c, rel=1e-6)


@pytest.fixture(scope="module")
def enc(vp_bundle):
    return EncoderFeatures(vp_bundle)


@pytest.fixture(scope="module")
def sets(blocky):
    return {"a": blocky(160, seed=1), "a2": blocky(160, seed=2), "shift": blocky(160, seed=3, offset=80)}


@pytest.fixture(scope="module")
def feats(enc, sets):
    return {k: enc(v) for k, v in sets.items()}


def test_encoder_features_hook_the_four_stages(enc, feats, vp_bundle):
    f = feats["a"]
    assert enc.layers == ["layer1", "layer2", "layer3", "layer4"]
    assert [tuple(m.shape[1:]) for m in f.maps] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    torch.testing.assert_close(f.pooled.norm(dim=1), torch.ones(160))
    assert f.pooled.shape == (160, vp_bundle.embed_dim)


def test_fid_with_the_encoder_is_zero_on_itself_and_grows_with_a_shift(enc, feats):
    self_fid = fid(feats["a"], feats["a"], enc)
    same_dist = fid(feats["a"], feats["a2"], enc)
    shifted = fid(feats["a"], feats["shift"], enc)
    assert abs(self_fid) < 1e-6
    assert shifted > 3 * same_dist > 0


def test_lpips_exact_form_equals_all_pairs_of_perceptual_distance():
    g = torch.Generator().manual_seed(0)
    fa = GapFeatures(None, [torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 6, 2, 2, generator=g)])
    fb = GapFeatures(None, [torch.randn(7, 4, 3, 3, generator=g) + 0.5, torch.randn(7, 6, 2, 2, generator=g)])

    def all_pairs(x, y):
        i, j = torch.meshgrid(torch.arange(len(x.maps[0])), torch.arange(len(y.maps[0])), indexing="ij")
        return float(perceptual_distance([m[i.flatten()] for m in x.maps], [m[j.flatten()] for m in y.maps]).mean())

    out = lpips(fa, fb, None)
    assert out.cross == pytest.approx(all_pairs(fa, fb), rel=1e-6)
    assert out.within_a == pytest.approx(all_pairs(fa, fa), rel=1e-6)
    assert out.within_b == pytest.approx(all_pairs(fb, fb), rel=1e-6)
    assert out.distance == pytest.approx(out.cross - (out.within_a + out.within_b) / 2, rel=1e-6)


def test_lpips_is_zero_on_identical_sets_symmetric_and_grows_with_a_shift(enc, feats):
    assert lpips(feats["a"], feats["a"], enc).distance == pytest.approx(0.0, abs=1e-12)
    ab, ba = lpips(feats["a"], feats["shift"], enc), lpips(feats["shift"], feats["a"], enc)
    assert ab.distance == pytest.approx(ba.distance, rel=1e-9) and ab.cross == pytest.approx(ba.cross, rel=1e-9)
    assert ab.distance > 3 * lpips(feats["a"], feats["a2"], enc).distance > 0
    # a half-and-half mixture of a and the shifted set moves the mean halfway: distance / 4
    mix = GapFeatures(None, [torch.cat([x, y]) for x, y in zip(feats["a"].maps, feats["shift"].maps)])
    assert lpips(feats["a"], mix, enc).distance == pytest.approx(ab.distance / 4, rel=1e-6)


def test_sampled_lpips_estimates_the_exact_form(enc, feats):
    exact = lpips(feats["a"], feats["shift"], enc)
    sampled = lpips(feats["a"], feats["shift"], enc, n_pairs=1000, seed=0)
    assert sampled.cross == pytest.approx(exact.cross, rel=0.05)
    assert sampled.within_a == pytest.approx(exact.within_a, rel=0.05)
    assert sampled == lpips(feats["a"], feats["shift"], enc, n_pairs=1000, seed=0)    # seeded


def test_gap_functions_take_images_directly(enc, sets, feats):
    a, b = sets["a"][:16], sets["shift"][:16]
    fa, fb = GapFeatures(feats["a"].pooled[:16], [m[:16] for m in feats["a"].maps]), \
        GapFeatures(feats["shift"].pooled[:16], [m[:16] for m in feats["shift"].maps])
    assert lpips(a, b, enc).distance == pytest.approx(lpips(fa, fb, enc).distance, rel=1e-5)
    torch.testing.assert_close(enc.pooled(a), fa.pooled)


def test_paper_extractors_never_download_and_name_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE) as err:
        InceptionFeatures(torch_home=tmp_path)
    assert str(tmp_path / "hub" / "checkpoints") in str(err.value)
    with pytest.raises(FileNotFoundError, match=ALEXNET_FILE):
        LpipsNet(torch_home=tmp_path)
    with pytest.raises(ValueError, match="n_pairs"):
        lpips(GapFeatures(torch.zeros(2, 3)), GapFeatures(torch.zeros(2, 3)), None)


def test_lpips_form_picks_the_lpips_column_from_the_three_terms_and_names_a_wrong_value(vp_bundle):
    """The notebook's gap table: ``energy`` = cross - (within + within_ref) / 2, ``cross`` = the plain cross mean;
    the FID column and the three terms do not depend on the switch."""
    from vlmlab import params
    from vlmlab.visual_prompts import measure_gaps

    small = {"datasets": ["world:digits", "world:terrain"], "n_test": 8, "n_reference": 12}
    tables = {form: measure_gaps(params.load("04_visual_prompt_fid", "tiny", small | {"lpips_form": form}), vp_bundle)
              for form in ("energy", "cross")}
    energy, cross = tables["energy"], tables["cross"]
    terms = ["fid", "lpips_cross", "lpips_within", "lpips_within_ref"]
    np.testing.assert_array_equal(energy[terms].to_numpy(), cross[terms].to_numpy())
    np.testing.assert_allclose(energy.lpips, energy.lpips_cross - (energy.lpips_within + energy.lpips_within_ref) / 2,
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(cross.lpips, cross.lpips_cross)
    assert (cross.lpips > energy.lpips).all()            # within terms are > 0 for sets of distinct images
    with pytest.raises(ValueError, match="lpips_form='plain'.*'energy'.*'cross'"):
        measure_gaps(params.load("04_visual_prompt_fid", "tiny", small | {"lpips_form": "plain"}), vp_bundle)


def test_gain_vs_gap_labels_the_lpips_axis_by_its_form():
    import matplotlib.pyplot as plt
    import pandas as pd

    from vlmlab.visual_prompts.figures import gain_vs_gap

    table = pd.DataFrame({"dataset": list("abc"), "prompter": "padding", "gain": [1.0, 2.0, 4.0],
                          "fid": [1.0, 2.0, 3.0], "lpips": [0.1, 0.3, 0.2]})
    corr = pd.DataFrame({"gap_metric": ["lpips"], "pearson_r": [0.5], "spearman_r": [0.5], "p_value": [0.6]})
    labels = {}
    for metric, form in [("lpips", "energy"), ("lpips", "cross"), ("fid", "cross")]:
        fig = gain_vs_gap(table, corr, metric, lpips_form=form)
        labels[metric, form] = fig.axes[0].get_xlabel()
        plt.close(fig)
    assert labels["lpips", "energy"] == "LPIPS-style gap to the reference set"
    assert labels["lpips", "cross"] == "mean cross-pair LPIPS-style distance to the reference set"
    assert labels["fid", "cross"] == "FID to the reference set"
