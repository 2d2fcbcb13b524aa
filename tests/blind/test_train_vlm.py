"""The VLM training loop: an interrupted run resumes to the very same weights."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vlmlab.blind import train_vlm
from vlmlab.blind.train_vlm import VLMTrainConfig


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    cfg = VLMTrainConfig(text_steps=2, align_steps=2, steps=2, batch_size=4, text_batch_size=4, pool_size=60,
                         ckpt_every=2, eval_every=100, warmup=1, width=32, layers=2, heads=2, mlp=64)
    full = train_vlm.train(cfg, tmp_path / "a.safetensors", tmp_path / "ckpt_a")
    assert [r["stage"] for r in full["history"]] == ["language"] * 2 + ["alignment"] * 2 + ["instruction"] * 2
    assert "val_letter_acc_4" in full["history"][-1] and set(full["control_acc"]) == set(train_vlm.CONTROLS)

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


def test_word_alignment_loss_is_the_relative_error_of_the_mean_token_to_the_mean_word():
    """Equivalence with a hand computation; zero when the projector's mean token is the target."""
    import numpy as np

    from vlmlab.blind.corpus import SLOT_ATTRIBUTES, answer_word
    from vlmlab.blind.train_vlm import word_alignment_loss
    from vlmlab.blind.vlm import TinyVLM, VLMConfig, WordTokenizer
    from vlmlab.models import load_clip
    from vlmlab.world.datasets import sample_scene

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(3)]
    tok = WordTokenizer.from_texts([answer_word(s, a) for s in scenes for a in SLOT_ATTRIBUTES])
    torch.manual_seed(0)
    vlm = TinyVLM(load_clip("embedded", device="cpu"), tok, VLMConfig(width=16, layers=1, heads=2, mlp=16))
    patches = torch.randn(3, 5, vlm.vision.width)
    table = vlm.lm.get_input_embeddings().weight.detach()
    target = torch.stack([table[[tok.token_id(w) for a in SLOT_ATTRIBUTES for w in tok.split(answer_word(s, a))]].mean(0)
                          for s in scenes])
    mean = vlm.projector(patches).mean(1)
    expected = (((mean - target) ** 2).sum(-1) / (target ** 2).sum(-1)).mean()
    assert torch.allclose(word_alignment_loss(vlm, patches, scenes, tok), expected)
    with torch.no_grad():                      # a projector that outputs the target for every token
        last = vlm.projector[-1]
        last.weight.zero_()
        last.bias.copy_(target[0])
    assert word_alignment_loss(vlm, patches[:1], scenes[:1], tok).item() < 1e-10


def test_word_classification_loss_is_the_mean_per_attribute_cross_entropy():
    """Equivalence with a hand computation (cosine logits over each attribute's words); near zero when
    the mean token points at every right word at once and far above it when it points at wrong ones."""
    import numpy as np
    import torch.nn.functional as F

    from vlmlab.blind.corpus import SLOT_ATTRIBUTES, answer_word
    from vlmlab.blind.train_vlm import attribute_vocabulary, word_classification_loss
    from vlmlab.blind.vlm import TinyVLM, VLMConfig, WordTokenizer
    from vlmlab.models import load_clip
    from vlmlab.world.datasets import sample_scene

    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng) for _ in range(12)]
    vocab = attribute_vocabulary(scenes)
    assert set(vocab) == set(SLOT_ATTRIBUTES) and all(v == sorted(set(v)) for v in vocab.values())
    tok = WordTokenizer.from_texts([answer_word(s, a) for s in scenes for a in SLOT_ATTRIBUTES])
    torch.manual_seed(0)
    vlm = TinyVLM(load_clip("embedded", device="cpu"), tok, VLMConfig(width=64, layers=1, heads=2, mlp=16))
    patches = torch.randn(12, 5, vlm.vision.width)
    table = F.normalize(vlm.lm.get_input_embeddings().weight.detach(), dim=-1)
    z = F.normalize(vlm.projector(patches).mean(1), dim=-1)
    expected = []
    for attr, words in vocab.items():
        w = table[[tok.token_id(x.split()[0]) for x in words]]
        for i, s in enumerate(scenes):
            logits = z[i] @ w.T / 0.07
            expected.append(-torch.log_softmax(logits, -1)[words.index(answer_word(s, attr))] / len(scenes))
    expected = torch.stack(expected).sum() / len(vocab)
    assert torch.allclose(word_classification_loss(vlm, patches, scenes, tok, vocab), expected, atol=1e-5)

    def loss_if_the_mean_token_is(target, scene):      # a projector that outputs ``target`` for every token
        with torch.no_grad():
            vlm.projector[-1].weight.zero_()
            vlm.projector[-1].bias.copy_(target)
        return word_classification_loss(vlm, patches[:1], [scene], tok, vocab, temperature=0.01).item()

    emb = vlm.lm.get_input_embeddings().weight.detach()
    right = sum(F.normalize(emb[tok.token_id(answer_word(scenes[0], a).split()[0])], dim=-1) for a in vocab)
    wrong = sum(F.normalize(emb[tok.token_id(next(w for w in vocab[a] if w != answer_word(scenes[0], a)).split()[0])],
                            dim=-1) for a in vocab if len(vocab[a]) > 1)
    assert loss_if_the_mean_token_is(right, scenes[0]) < 0.5 * loss_if_the_mean_token_is(wrong, scenes[0])


def test_a_checkpoint_trained_on_another_clip_is_not_resumed(tmp_path, caplog):
    """Retraining the CLIP (a new trunk) must retrain the VLM from scratch, not resume the old run."""
    from vlmlab.models.embedded import build_embedded

    cfg = VLMTrainConfig(text_steps=1, align_steps=1, steps=1, batch_size=4, text_batch_size=4, pool_size=60,
                         ckpt_every=1, eval_every=100, warmup=1, width=16, layers=1, heads=2, mlp=32)
    done = train_vlm.train(cfg, tmp_path / "a.safetensors", tmp_path / "ckpt")
    other = build_embedded("cpu")                                  # identity "embedded@random-init"
    with caplog.at_level("WARNING"):
        again = train_vlm.train(cfg, tmp_path / "b.safetensors", tmp_path / "ckpt", bundle=other)
    assert "another CLIP" in caplog.text
    assert len(again["history"]) == cfg.total_steps
    assert again["history"][-1]["loss"] != done["history"][-1]["loss"]   # trained anew on the other trunk
