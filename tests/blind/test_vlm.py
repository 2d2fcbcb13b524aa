"""The small VLM, letter scoring, fine-tuning variants and the notebook-05 measurements, on tiny models."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vlmlab.blind.experiment import blank, hidden_maps, readout, trunk_patches, tv_to_labels, vlm_logprobs
from vlmlab.blind.readouts import tokens_to_grid
from vlmlab.blind.finetune import FinetuneConfig, finetune, with_lora
from vlmlab.blind.tasks import LETTERS, depth_task, odd_one_out_task, options_text, style_task
from vlmlab.blind.vlm import (IMAGE, SOFT, UNK, TinyVLM, VLMConfig, WordTokenizer, answer_logits, option_logprobs,
                              pad_batch)


@pytest.fixture(scope="module")
def bundle():
    from vlmlab.models import load_clip
    return load_clip("embedded", device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    texts = [odd_one_out_task(1).segments()[-1], style_task(1).segments()[-1], depth_task(1).segments()[-1],
             "describe the image .", "a photo of a red star"]
    return WordTokenizer.from_texts(texts)


@pytest.fixture()
def vlm(bundle, tokenizer):
    torch.manual_seed(0)
    return TinyVLM(bundle, tokenizer, VLMConfig(width=32, layers=2, heads=2, mlp=64)).eval()


def test_tokenizer_keeps_letters_lowercases_words_and_marks_unknowns(tokenizer):
    assert tokenizer.split("Which image? Answer A, B or C.") == ["which", "image", "?", "answer", "A", ",", "B",
                                                                  "or", "C", "."]
    ids = tokenizer.encode("a photo of a zebra")
    assert ids[-1] == UNK and tokenizer.decode(ids[:-1]) == "a photo of a"
    assert tokenizer.token_id("A") != tokenizer.token_id("a")


def test_prompt_has_one_placeholder_per_patch_and_soft_tokens_before_the_question(vlm):
    seg = style_task(1).segments()                        # REF <img> A <img> B <img> question
    ids = vlm.encode_prompt(seg, n_patches=16, n_soft=3)
    assert ids.count(IMAGE) == 3 * 16 and ids.count(SOFT) == 3
    assert ids.index(SOFT) == len(ids) - len(vlm.tokenizer.encode(seg[-1])) - 3
    assert max(i for i, t in enumerate(ids) if t == IMAGE) < ids.index(SOFT)


def test_image_positions_hold_the_projected_patches_in_order(vlm):
    seg = odd_one_out_task(1).segments()
    patches = torch.randn(2 * 4, 16, vlm.vision.width)
    ids, _, _ = pad_batch([vlm.encode_prompt(seg, 16)] * 2)
    emb = vlm.embed(ids, patches)
    table = vlm.lm.get_input_embeddings().weight
    label = torch.stack([table[vlm.tokenizer.token_id(c)] for c in "ABCD"]).repeat_interleave(16, 0)  # (64, d)
    expected = vlm.projector(patches).reshape(2, 4 * 16, -1) + label
    torch.testing.assert_close(emb[ids == IMAGE].view(2, 64, -1), expected)


def test_image_tokens_carry_their_label_and_unlabelled_images_none(vlm):
    ids, _, _ = pad_batch([vlm.encode_prompt(style_task(1).segments(), 4), vlm.encode_prompt(depth_task(1).segments(), 4)])
    tags = vlm.image_labels(ids)
    tok = vlm.tokenizer
    assert tags[0][ids[0] == IMAGE].tolist() == [tok.token_id("REF")] * 4 + [tok.token_id("A")] * 4 + [tok.token_id("B")] * 4
    assert (tags[1] == -1).all() and (tags[0][ids[0] != IMAGE] == -1).all()


def test_batched_letter_scores_equal_one_question_at_a_time(vlm):
    """Padding and batching do not change the scores: the same as scoring each prompt alone."""
    task = style_task(3)
    seg = task.segments()
    patches = list(trunk_patches(vlm, task.images))
    batched = option_logprobs(vlm, [seg] * 3, patches, ["A", "B"])
    one = torch.cat([option_logprobs(vlm, [seg], [p], ["A", "B"]) for p in patches])
    torch.testing.assert_close(batched, one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.exp().sum(-1), torch.ones(3))


def test_option_scoring_picks_a_planted_answer_after_training(vlm):
    """Train LoRA on questions whose answer is always C; the letter scorer must then answer C."""
    task = odd_one_out_task(32, seed=0)
    task = dataclasses.replace(task, answers=np.full(32, 2))
    patches = trunk_patches(vlm, task.images)
    tuned = finetune(vlm, task, "lora", 4, patches, FinetuneConfig(steps=30, lr_lora=1e-2))
    pred = vlm_logprobs(tuned, task, patches).argmax(-1)
    assert (pred == 2).all()


def test_lora_starts_equal_to_the_base_lm(vlm):
    task = odd_one_out_task(4)
    patches = list(trunk_patches(vlm, task.images))
    base = answer_logits(vlm, [task.segments()] * 4, patches)
    torch.testing.assert_close(answer_logits(with_lora(vlm, 4), [task.segments()] * 4, patches), base)


def _snapshot(m: TinyVLM) -> dict[str, torch.Tensor]:
    sd = {f"lm.{k}": v.clone() for k, v in m.lm.state_dict().items()}
    sd |= {f"projector.{k}": v.clone() for k, v in m.projector.state_dict().items()}
    return sd | {f"vision.{k}": v.clone() for k, v in m.vision.state_dict().items()}


@pytest.mark.parametrize("variant, arg, trained_prefix", [("prompt", 5, None), ("projector", 0, "projector."),
                                                           ("vision", 0, "vision.")])
def test_each_variant_changes_only_its_own_parameters(vlm, variant, arg, trained_prefix):
    task = style_task(16, seed=1)
    patches = trunk_patches(vlm, task.images)
    before = _snapshot(vlm)
    tuned = finetune(vlm, task, variant, arg, patches, FinetuneConfig(steps=3, batch_size=8))
    after = _snapshot(tuned)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(torch.equal(before[k], v) for k, v in _snapshot(vlm).items())          # the base is untouched
    if trained_prefix is None:
        assert not changed and tuned.soft_prompt is not None and tuned.soft_prompt.shape[0] == 5
        init = vlm.lm.get_input_embeddings().weight[vlm.tokenizer.index["the"]]
        assert not torch.allclose(tuned.soft_prompt, init.expand(5, -1))
    else:
        assert changed and all(k.startswith(trained_prefix) for k in changed)
        assert not any("running_" in k for k in changed)                             # BatchNorm stats frozen


def test_blank_images_are_white_and_give_identical_patches(vlm):
    task = blank(style_task(4, seed=2))
    assert (task.images == 255).all() and task.answers.tolist() == style_task(4, seed=2).answers.tolist()
    p = trunk_patches(vlm, task.images)
    assert torch.allclose(p, p[:1, :1].expand_as(p))


def test_tv_is_zero_for_equal_and_one_for_disjoint_letter_distributions():
    answers = np.array([0, 1, 2, 3] * 5)
    assert tv_to_labels(answers[::-1], answers, 4) == pytest.approx(0.0)
    assert tv_to_labels(np.zeros(20, int), np.full(20, 3), 4) == pytest.approx(1.0)
    assert tv_to_labels(np.zeros(20, int), answers, 4) == pytest.approx(0.75)        # all A vs uniform


def test_map_readout_finds_a_planted_odd_image():
    task = odd_one_out_task(8, seed=0)
    maps = torch.ones(8, 4, 6, 2, 2) + 0.01 * torch.randn(8, 4, 6, 2, 2)
    maps[torch.arange(8), torch.as_tensor(task.answers), 0] = -1.0
    assert np.array_equal(readout(task, maps), task.answers)


def test_hidden_maps_start_at_the_projected_patches(vlm):
    task = depth_task(3)                                   # one unlabelled image: layer 0 = the projector output
    patches = trunk_patches(vlm, task.images)
    layers = hidden_maps(vlm, task, patches)
    assert len(layers) == vlm.config.layers + 1 and layers[0].shape == (3, 1, vlm.config.width, 4, 4)
    torch.testing.assert_close(layers[0], tokens_to_grid(vlm.projector(patches)))


def test_options_text_lists_the_letters():
    assert options_text(2) == "answer A or B ." and options_text(4) == "answer A , B , C or D ."
    assert LETTERS[:3] == "ABC"


def test_fused_trunk_tokens_are_layer3_beside_upsampled_layer4(bundle):
    from vlmlab.blind.readouts import feature_maps
    from vlmlab.blind.vlm import VisionTrunk

    images = odd_one_out_task(1).images[0]
    tokens = VisionTrunk(bundle, "layer3+layer4")(images)                         # (4, 16, 256 + 512)
    l3, _ = feature_maps(bundle, images, "layer3")
    l4, _ = feature_maps(bundle, images, "layer4")
    up = l4.repeat_interleave(2, -1).repeat_interleave(2, -2)                    # nearest 2x2 -> 4x4
    expected = torch.cat([l3, up], 1).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="stages"):
        VisionTrunk(bundle, "layer3+head")


def test_pool_output_is_the_scaled_clip_image_embedding_on_every_token(bundle):
    from vlmlab.blind.vlm import VisionTrunk
    from vlmlab.features import arrays_to_input

    images = odd_one_out_task(2).images[0]
    fused = VisionTrunk(bundle, "layer3+layer4")(images)
    tokens = VisionTrunk(bundle, "layer3+layer4+pool")(images)
    with torch.no_grad():
        embedding = bundle.model.encode_image(arrays_to_input(bundle, torch.as_tensor(images)), normalize=True)
    embedding = embedding.float() * embedding.shape[-1] ** 0.5                                  # unit RMS
    assert tokens.shape == (*fused.shape[:2], fused.shape[-1] + embedding.shape[-1])
    torch.testing.assert_close(tokens[..., :fused.shape[-1]], fused)
    torch.testing.assert_close(tokens[..., fused.shape[-1]:], embedding[:, None].expand(-1, fused.shape[1], -1),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="not first"):
        VisionTrunk(bundle, "pool+layer3")


def test_shipped_vlm_loads_offline_is_small_and_names_colours():
    """Fails if the shipped weights are lost or mis-loaded: single-image colour questions stay far above chance."""
    from vlmlab.blind.vlm import load_vlm
    from vlmlab.runtime import REPO_ROOT
    from vlmlab.world.datasets import sample_scene
    from vlmlab.world.render import render_scene
    from vlmlab.world.scene import COLOURS

    path = REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"
    assert path.stat().st_size <= 30e6
    vlm = load_vlm()
    rng = np.random.default_rng(123)
    scenes = [sample_scene(rng, count=1, style="photo") for _ in range(60)]
    images = np.stack([render_scene(s, rng) for s in scenes])[:, None]
    patches = trunk_patches(vlm, images)
    words = list(COLOURS)
    ids = torch.tensor([vlm.tokenizer.token_id(w) for w in words])
    with torch.no_grad():
        logits = answer_logits(vlm, [[0, "what colour is it ?"]] * 60, list(patches))[:, ids]
    acc = np.mean([words[i] == s.colour for i, s in zip(logits.argmax(-1).tolist(), scenes)])
    assert acc > 0.5, f"colour accuracy {acc:.2f} (chance 0.10)"


def test_loading_weights_trained_on_another_trunk_warns(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from vlmlab.blind.vlm import load_vlm
    from vlmlab.runtime import REPO_ROOT

    shipped = REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"
    with safe_open(str(shipped), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(shipped)), str(tmp_path / "vlm.safetensors"), metadata=meta | {"trunk": "embedded@another"})
    with pytest.warns(UserWarning, match="make train-embedded-vlm"):
        load_vlm(path=tmp_path / "vlm.safetensors")


def test_finetuning_is_seeded_alone_whatever_ran_before(vlm):
    task = odd_one_out_task(8, seed=2)
    patches = trunk_patches(vlm, task.images)
    cfg = FinetuneConfig(steps=2, batch_size=4)
    torch.manual_seed(1)
    a = finetune(vlm, task, "lora", 4, patches, cfg)
    torch.rand(100)                                        # another state of the global RNG
    b = finetune(vlm, task, "lora", 4, patches, cfg)
    after = torch.rand(1)
    torch.manual_seed(1), torch.rand(100)
    assert torch.equal(after, torch.rand(1))               # the caller's RNG stream is left alone
    for (name, pa), (_, pb) in zip(a.lm.named_parameters(), b.lm.named_parameters()):
        assert torch.equal(pa, pb), name


def test_finetune_tables_are_the_same_with_worker_processes(vlm):
    from vlmlab.blind.experiment import finetune_variants, predictions, prepare_tasks

    runs = prepare_tasks(vlm, ["odd_one_out", "style"], n_train=8, n_test=6, seed=0)
    preds = {n: predictions(vlm, r.test, r.test_patches) for n, r in runs.items()}
    hidden_maps(vlm, runs["style"].test, runs["style"].test_patches)     # transformers hooks the model: still picklable
    kw = dict(soft_tokens=[1], components=["lora", "vision"], config=FinetuneConfig(steps=2, batch_size=4))
    threads = torch.get_num_threads()
    try:                                                   # 1 torch thread here and in each of the 2 workers
        torch.set_num_threads(1)                           # (2 // 2): the same summation order
        here = finetune_variants(vlm, runs, "tiny", preds, **kw)
        torch.set_num_threads(2)
        there = finetune_variants(vlm, runs, "tiny", preds, workers=2, **kw)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(here, there):
        assert len(a) == 2 * 4
        assert a.equals(b)


def test_worker_processes_take_the_costliest_fine_tuning_jobs_first(vlm, monkeypatch):
    import vlmlab.blind.experiment as BX

    seen = {}

    def spy(fn, items, context=None, workers=1, cost=None, on_result=None, **kw):
        seen["order"] = [items[i] for i in sorted(range(len(items)), key=lambda i: -cost(items[i]))]
        out = [np.zeros(len(context[2][name][2]), int) for name, _, _ in items]
        for i, pred in enumerate(out):
            on_result(i, pred)
        return out

    monkeypatch.setattr(BX, "process_map", spy)
    runs = BX.prepare_tasks(vlm, ["depth", "odd_one_out", "style", "correspondence"], n_train=4, n_test=3, seed=0)
    preds = {n: np.zeros(3, int) for n in runs}
    BX.finetune_variants(vlm, runs, "tiny", preds, soft_tokens=[1], components=["lora", "vision"], workers=2)
    # images per question: odd-one-out 4, style 3, correspondence 2, depth 1; vision twice the others
    assert seen["order"][:3] == [("odd_one_out", "vision", 0), ("style", "vision", 0), ("odd_one_out", "prompt", 1)]
    assert seen["order"][-2:] == [("depth", "prompt", 1), ("depth", "lora", 8)]
    assert sorted(seen["order"]) == sorted((n, v, a) for n in runs for v, a in [("prompt", 1), ("lora", 8), ("vision", 0)])


def test_a_pickled_vlm_answers_exactly_as_the_original(vlm):
    import pickle

    task = style_task(4, seed=3)
    patches = list(trunk_patches(vlm, task.images))
    vlm.set_soft_prompt(2)
    copy = pickle.loads(pickle.dumps(vlm))
    assert not copy.training and copy.soft_prompt.shape == (2, vlm.config.width)
    torch.testing.assert_close(answer_logits(copy, [task.segments()] * 4, patches, n_soft=2),
                               answer_logits(vlm, [task.segments()] * 4, patches, n_soft=2), rtol=0, atol=0)


def test_shipped_vlm_answers_multi_image_letter_questions_and_records_its_recipe():
    """Fails if the shipped VLM cannot answer 4-image letter questions about a trained attribute (the
    previous VLM sat at chance, 25 %), or if it was trained with settings other than the defaults."""
    import json
    from dataclasses import asdict

    from safetensors import safe_open

    from vlmlab.blind.experiment import predictions
    from vlmlab.blind.tasks import control_task
    from vlmlab.blind.train_vlm import VLMTrainConfig
    from vlmlab.blind.vlm import load_vlm
    from vlmlab.runtime import REPO_ROOT

    with safe_open(str(REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["train_config"]) == asdict(VLMTrainConfig())
    vlm = load_vlm()
    task = control_task("control_correspondence", 60, seed=321)
    acc = float(np.mean(predictions(vlm, task, trunk_patches(vlm, task.images)) == task.answers))
    assert acc > 0.5, f"4-image background questions: {acc:.2f} (chance 0.25)"


def test_finetune_predictions_come_from_the_cache_on_a_rerun(vlm, tmp_path, monkeypatch):
    import vlmlab.blind.experiment as BX
    from vlmlab.features import FeatureCache

    runs = BX.prepare_tasks(vlm, ["odd_one_out"], n_train=8, n_test=6, seed=0)
    preds = {n: BX.predictions(vlm, r.test, r.test_patches) for n, r in runs.items()}
    kw = dict(soft_tokens=[1], components=["lora"], config=FinetuneConfig(steps=2, batch_size=4), cache=FeatureCache(tmp_path))
    calls, real = [], BX._tuned_predictions
    monkeypatch.setattr(BX, "_tuned_predictions", lambda ctx, job: calls.append(job) or real(ctx, job))
    first = BX.finetune_variants(vlm, runs, "tiny", preds, **kw)
    assert len(calls) == 2                                              # prompt x1, lora
    again = BX.finetune_variants(vlm, runs, "tiny", preds, **kw)
    assert len(calls) == 2                                              # nothing trained
    for a, b in zip(first, again):
        assert a.equals(b)
    BX.finetune_variants(vlm, runs, "tiny", preds, **{**kw, "config": FinetuneConfig(steps=3, batch_size=4)})
    assert len(calls) == 4                                              # another config trains both again
    other = BX.prepare_tasks(vlm, ["odd_one_out"], n_train=8, n_test=6, seed=1)
    BX.finetune_variants(vlm, other, "tiny", {n: BX.predictions(vlm, r.test, r.test_patches) for n, r in other.items()}, **kw)
    assert len(calls) == 6                                              # other questions train
