"""The VLM training loop: an interrupted run resumes to the very same weights."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vlmlab.blind import train_vlm
from vlmlab.blind.train_vlm import VLMTrainConfig


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    cfg = VLMTrainConfig(steps=4, projector_steps=2, batch_size=4, pool_size=60, ckpt_every=2, eval_every=100,
                         warmup=1)
    full = train_vlm.train(cfg, tmp_path / "a.safetensors", tmp_path / "ckpt_a")
    assert full["history"][-1]["step"] == 6 and "val_letter_acc" in full["history"][-1]

    draw, calls = train_vlm.Mixture.draw, {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] > 3 * cfg.batch_size:             # dies inside step 4, after the step-2 checkpoint
            raise KeyboardInterrupt
        return draw(self)

    monkeypatch.setattr(train_vlm.Mixture, "draw", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_vlm.train(cfg, tmp_path / "b.safetensors", tmp_path / "ckpt_b")
    monkeypatch.setattr(train_vlm.Mixture, "draw", draw)
    resumed = train_vlm.train(cfg, tmp_path / "b.safetensors", tmp_path / "ckpt_b")
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in full["history"]]
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
