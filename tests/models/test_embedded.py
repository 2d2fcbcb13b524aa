"""The shipped embedded CLIP and its training script."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import vlmlab.world as W
from vlmlab.models import load_clip
from vlmlab.models.embedded import CONFIG_PATH, WEIGHTS_PATH
from vlmlab.models.train_embedded import ATTRIBUTES, TrainConfig, attribute_labels, degrade, train
from vlmlab.prompts import zero_shot_weights
from vlmlab.world.datasets import sample_scene

CARD_FLOOR = 55.0  # clean objects zero-shot (%) the shipped weights must keep; the model card reports the measured value


@pytest.fixture(scope="module")
def bundle():
    return load_clip("embedded", device="cpu")


def test_shipped_weights_are_small_fp16_and_match_the_config():
    assert WEIGHTS_PATH.stat().st_size < 20 * 2**20
    state = load_file(str(WEIGHTS_PATH))
    assert all(t.dtype == torch.float16 for t in state.values())
    cfg = json.loads(CONFIG_PATH.read_text())
    assert state["token_embedding.weight"].shape == (cfg["text_cfg"]["vocab_size"], cfg["text_cfg"]["width"])


def test_shipped_model_is_above_its_accuracy_floor(bundle):
    """Fails if the weights are lost, mis-loaded or replaced by an untrained file."""
    ds = W.load("objects", "test", n=200)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        z = bundle.encode_images(bundle.normalize_pixels(x))
        w = zero_shot_weights(bundle, ds.classnames, ds.template)
    acc = float(((z @ w.T).argmax(1) == ds.labels).float().mean() * 100)
    assert acc >= CARD_FLOOR, f"clean objects zero-shot {acc:.1f}% < floor {CARD_FLOOR}%"


def test_embedded_bundle_contract(bundle):
    assert bundle.image_size == 64 and bundle.embed_dim == 128
    assert bundle.identity.startswith("embedded@") and bundle.identity != "embedded@random-init"
    z = bundle.encode_texts(["a photo of a circle.", "a photo of a star."])
    assert z.shape == (2, 128) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_loading_is_offline_and_missing_weights_say_how_to_rebuild(tmp_path):
    with pytest.raises(FileNotFoundError, match="make train-embedded"):
        load_clip("embedded", pretrained=str(tmp_path / "nope.safetensors"), device="cpu")


@pytest.mark.parametrize("kind", ["noise", "impulse", "blur", "dark", "bright", "contrast", "pixelate", "jpeg", "fog"])
def test_each_training_degradation_changes_pixels_within_range(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.from_numpy(W.load("objects", n=4, size=32, cache=False).images).permute(0, 3, 1, 2).float() / 255
    y = degrade(x.clone(), kind, g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.005


def test_impulse_noise_sets_pixels_to_black_or_white_only():
    g = torch.Generator().manual_seed(0)
    x = torch.full((8, 3, 16, 16), 0.5)
    y = degrade(x, "impulse", g)
    changed = y != 0.5
    assert changed.any() and set(y[changed].unique().tolist()) <= {0.0, 1.0}
    assert changed.float().mean() < 0.3                            # amount is at most 0.25


def test_the_default_recipe_is_the_one_behind_the_shipped_weights():
    """`make train-embedded` (the defaults) must reproduce the shipped weights: their recorded config matches."""
    import json
    from dataclasses import asdict

    from safetensors import safe_open

    from vlmlab.models.train_embedded import TrainConfig
    from vlmlab.runtime import PACKAGE_ROOT

    from vlmlab.world.datasets import WORLD_VERSION

    with safe_open(str(PACKAGE_ROOT / "assets" / "embedded.safetensors"), "pt") as f:
        shipped = json.loads(f.metadata()["config"])
        world_version = f.metadata().get("world_version", "1")
    assert world_version == str(WORLD_VERSION), "the shipped weights were trained on another world version"
    defaults = asdict(TrainConfig())
    assert {k: defaults[k] for k in shipped} == shipped      # fields added later default to the old behaviour


def test_attribute_labels_index_the_vocabularies():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(50)]
    lab = attribute_labels(scenes)
    for name, values in ATTRIBUTES.items():
        for s, i in zip(scenes, lab[name].tolist()):
            if name == "position" and s.count > 1:
                assert i == -1
            else:
                assert values[i] == getattr(s, name)


def test_sign_head_only_in_world_2_and_batches_without_signs_cost_nothing():
    from dataclasses import replace

    from vlmlab.models.train_embedded import AttributeHeads
    torch.manual_seed(0)
    one, two = AttributeHeads(8, world=1), AttributeHeads(8, world=2)
    assert list(one.heads) == list(ATTRIBUTES) and list(two.heads) == [*ATTRIBUTES, "sign"]
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(6)]
    labels = attribute_labels(scenes)
    assert labels["sign"].tolist() == [-1] * 6
    z = torch.randn(6, 8)
    two.heads.load_state_dict(one.heads.state_dict(), strict=False)
    assert torch.equal(one.loss(z, labels), two.loss(z, labels))  # no signed image: the sign head adds nothing
    signed = attribute_labels([replace(scenes[0], sign=4)] + scenes[1:])
    assert signed["sign"].tolist() == [4] + [-1] * 5
    extra = F.cross_entropy(two.heads["sign"](z[:1]), torch.tensor([4]))
    torch.testing.assert_close(two.loss(z, signed), one.loss(z, signed) + extra)


def test_training_is_deterministic_and_resumes(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, pool_size=32, warmup=1, ckpt_every=1, eval_every=100)
    a = train(cfg, tmp_path / "a.safetensors", tmp_path / "ckpt_a")
    b = train(cfg, tmp_path / "b.safetensors", tmp_path / "ckpt_b")
    sa, sb = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    again = train(cfg, tmp_path / "c.safetensors", tmp_path / "ckpt_a")  # finished checkpoint: nothing to redo
    assert len(again["history"]) == 2
    sc = load_file(str(tmp_path / "c.safetensors"))
    assert all(torch.equal(sa[k], sc[k]) for k in sa)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import vlmlab.models.train_embedded as T
    cfg = TrainConfig(steps=3, batch_size=8, pool_size=32, warmup=1, ckpt_every=1, eval_every=100)
    straight = train(cfg, tmp_path / "s.safetensors", tmp_path / "ckpt_s")
    calls = {"n": 0}
    real_caption = T.caption

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] > cfg.batch_size * 2 + 3:  # dies inside step 3
            raise KeyboardInterrupt
        return real_caption(*args, **kw)

    monkeypatch.setattr(T, "caption", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r.safetensors", tmp_path / "ckpt_r")
    monkeypatch.setattr(T, "caption", real_caption)
    resumed = train(cfg, tmp_path / "r.safetensors", tmp_path / "ckpt_r")
    s, r = load_file(str(tmp_path / "s.safetensors")), load_file(str(tmp_path / "r.safetensors"))
    assert all(torch.equal(s[k], r[k]) for k in s)
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]


def test_world_is_recorded_and_another_worlds_checkpoint_is_not_resumed(tmp_path):
    from safetensors import safe_open
    cfg = TrainConfig(steps=2, batch_size=8, pool_size=32, warmup=1, ckpt_every=1, eval_every=100)
    one = train(cfg, tmp_path / "w1.safetensors", tmp_path / "ckpt", world=1)
    two = train(cfg, tmp_path / "w2.safetensors", tmp_path / "ckpt", world=2)  # same dir: must start afresh
    assert len(two["history"]) == 2 and two["history"][0]["loss"] != one["history"][0]["loss"]
    for name, world in (("w1", 1), ("w2", 2)):
        with safe_open(str(tmp_path / f"{name}.safetensors"), "pt") as f:
            assert f.metadata()["world_version"] == str(world)
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["world_version"] == 2


def _evaluate_script():
    from script_loader import load_script
    return load_script("scripts/evaluate_embedded.py")


def test_world_targets_are_judged_from_the_measured_tables():
    import pandas as pd

    from vlmlab.data.corruptions import COMMON
    ev = _evaluate_script()
    ds = pd.DataFrame([
        {"dataset": "objects", "distance": "near", "chance": 5.0, "zero_shot": 70.0, "linear_probe_full": 79.0},
        {"dataset": "digits", "distance": "far", "chance": 10.0, "zero_shot": 19.9, "linear_probe_full": 95.0},
        {"dataset": "terrain", "distance": "far", "chance": 12.5, "zero_shot": 40.0, "linear_probe_full": 59.0},
    ])
    cor = pd.DataFrame([{"corruption": "clean", "severity": 0, "accuracy": 70.0}]
                       + [{"corruption": c, "severity": s, "accuracy": 60.0 - 5 * s - (2 if c == "fog" else 0)}
                          for c in COMMON for s in (1, 2, 3, 4, 5)])
    met = ev.targets_table(ds, cor).set_index("target")["met"].to_dict()
    assert met["objects zero-shot (%)"] and met["objects full probe - zero-shot (points)"]   # 70 in 50-80; 9 >= 8
    assert not met["digits zero-shot / chance"] and met["digits full probe - zero-shot (points)"]  # 1.99x; 75.1 below
    assert met["terrain zero-shot / chance"] and not met["terrain full probe - zero-shot (points)"]  # 3.2x; 19 below
    assert met["lowest severity-5 accuracy / chance (fog)"]                                   # 33 % = 6.6x chance
    assert met["every corruption lowers accuracy (severity 5 < clean)"]
    cor.loc[cor.corruption == "fog", "accuracy"] = 4.0
    met = ev.targets_table(ds, cor).set_index("target")["met"].to_dict()
    assert not met["lowest severity-5 accuracy / chance (fog)"]
