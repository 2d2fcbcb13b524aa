"""LLaVA letter scoring on a tiny random-initialised LLaVA saved to a folder (never downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.blind.llava import PROMPT, LlavaScorer, canvas, square
from vlmlab.blind.tasks import options_text, style_task


def test_canvas_puts_images_side_by_side_with_a_black_divider():
    imgs = np.full((3, 4, 5, 3), 200, np.uint8)
    c = canvas(imgs, divider=2)
    assert c.shape == (4, 3 * 5 + 2 * 2, 3)
    assert (c[:, 5:7] == 0).all() and (c[:, :5] == 200).all() and (c[:, -5:] == 200).all()


def test_square_pads_a_wide_canvas_without_cropping_it():
    img = np.full((4, 10, 3), 200, np.uint8)
    out = square(img, fill=(1, 2, 3))
    assert out.shape == (10, 10, 3)
    assert (out[3:7] == 200).all() and (out[:3] == (1, 2, 3)).all() and (out[7:] == (1, 2, 3)).all()
    assert square(out).shape == (10, 10, 3) and (square(out) == out).all()


def test_letter_scores_match_the_models_own_next_token_distribution(tiny_llava):
    task = style_task(2, seed=0, size=32)
    canvases = [canvas(q) for q in task.images]
    lp = tiny_llava.option_logprobs(canvases, [task.question] * 2, 2)
    assert lp.shape == (2, 2)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2))
    prompt = PROMPT.format(question=f"{task.question} {options_text(2)}")
    inputs = tiny_llava.processor(images=square(canvases[0], tiny_llava.fill), text=prompt, return_tensors="pt")
    logits = tiny_llava.model(**inputs).logits[0, -1]
    ids = tiny_llava.letter_ids(prompt.replace("<image>", ""), "AB")
    torch.testing.assert_close(lp[0], logits[ids].log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_vision_maps_are_the_patch_grid_of_the_selected_layer(tiny_llava):
    maps = tiny_llava.vision_maps(style_task(1, size=32).images[0])
    assert maps.shape == (3, 32, 4, 4)


def test_readout_layer_picks_the_hidden_state_the_maps_come_from(tiny_llava_path):
    """Default: the projector's ``vision_feature_layer``; ``readout_layer=-1``: the last block (a switch)."""
    images = style_task(1, size=32).images[0]
    default, last = LlavaScorer(tiny_llava_path), LlavaScorer(tiny_llava_path, readout_layer=-1)
    assert default.readout_layer == default.model.config.vision_feature_layer == -2
    pixels = default.processor.image_processor(images=list(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        hidden = default.module("vision_tower")(pixels, output_hidden_states=True).hidden_states
    for scorer, layer in ((default, -2), (last, -1)):
        maps = scorer.vision_maps(images)
        torch.testing.assert_close(maps.flatten(2).transpose(1, 2), hidden[layer][:, 1:])
    assert not torch.allclose(default.vision_maps(images), last.vision_maps(images))


def test_a_missing_checkpoint_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        LlavaScorer(str(tmp_path / "no-such-model"))


def test_a_hub_name_is_keyed_by_its_local_snapshots_files(tiny_llava_path, tmp_path, monkeypatch, caplog):
    """``identity`` of a checkpoint loaded by its hub name (from the local Hugging Face cache, never downloaded)
    is the digest of its snapshot's files: the same as the same files' folder."""
    import shutil

    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--org--tiny-llava"
    shutil.copytree(tiny_llava_path, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    by_name = LlavaScorer("org/tiny-llava")
    assert by_name.identity is not None and by_name.identity == LlavaScorer(tiny_llava_path).identity

    (repo / "refs" / "main").unlink()                  # the snapshot can no longer be found: not cached, a warning
    by_name.__dict__.pop("identity")
    assert by_name.identity is None and "not cached" in caplog.text


def test_canvas_boxes_locate_every_image_on_the_squared_canvas():
    from vlmlab.blind.llava import canvas_boxes

    imgs = np.stack([np.full((6, 5, 3), 50 * (i + 1), np.uint8) for i in range(3)])
    sq = square(canvas(imgs), fill=(0, 0, 0))
    side, boxes = canvas_boxes(3, 6, 5)
    assert sq.shape[0] == side
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert (sq[y0:y1, x0:x1] == 50 * (i + 1)).all()


def test_image_hidden_maps_are_the_lms_states_at_the_image_tokens(tiny_llava):
    task = style_task(1, seed=0, size=32)
    maps = tiny_llava.image_hidden_maps(task.images[0], task.question, 2, layers=[0, 2], pool=2)
    assert maps.shape == (2, 3, 32, 2, 2)
    one = tiny_llava.image_hidden_maps(task.images[0][:1], task.question, 2, layers=[1], pool=4)   # 1 image: the grid
    _, inputs = tiny_llava._inputs(task.images[0][0], task.question, 2)
    hs = tiny_llava.model(**inputs, output_hidden_states=True).hidden_states[1][0]
    tokens = hs[inputs["input_ids"][0] == tiny_llava.model.config.image_token_index]
    torch.testing.assert_close(one[0, 0], tokens.T.reshape(32, 4, 4))


def _letter_scores(scorer, task):
    return scorer.option_logprobs([canvas(q) for q in task.images], task.question_texts(), task.n_options)


def test_llava_lora_copy_starts_equal_and_trains_only_the_lms_adapters(tiny_llava):
    from vlmlab.blind.finetune import prepare_llava

    task = style_task(3, seed=1, size=32)
    tuned, params = prepare_llava(tiny_llava, "lora", 4)
    names = [n for n, p in tuned.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "language_model" in n for n in names)
    torch.testing.assert_close(_letter_scores(tuned, task), _letter_scores(tiny_llava, task))
    assert not any("lora_" in n for n, _ in tiny_llava.model.named_parameters())      # the original is untouched


@pytest.mark.parametrize("variant, arg", [("prompt", 2), ("projector", 0), ("vision", 0)])
def test_llava_finetuning_changes_only_its_own_parameters(tiny_llava, variant, arg):
    from vlmlab.blind.finetune import FinetuneConfig, finetune_llava

    task = style_task(4, seed=2, size=32)
    before = {n: p.detach().clone() for n, p in tiny_llava.model.named_parameters()}
    tuned = finetune_llava(tiny_llava, task, variant, arg, FinetuneConfig(steps=2, batch_size=2, lr_prompt=0.5,
                                                                         lr_projector=0.05, lr_vision=0.05))
    for n, p in tiny_llava.model.named_parameters():                                  # the original is untouched
        torch.testing.assert_close(p, before[n])
    changed = {n for n, p in tuned.model.named_parameters() if n in before and
               (p.shape != before[n].shape or not torch.equal(p, before[n]))}
    if variant == "prompt":
        emb = tuned.model.get_input_embeddings().weight
        old = before[[n for n in before if "embed_tokens" in n][0]]
        assert emb.shape[0] == old.shape[0] + 2 and tuned.prefix == "<soft_0><soft_1> "
        torch.testing.assert_close(emb[:old.shape[0]], old)                          # only the soft rows moved
        assert not torch.equal(emb[old.shape[0]:], old.mean(0).expand(2, -1))
        assert changed <= {n for n in before if "embed_tokens" in n or "lm_head" in n}
    else:
        key = "multi_modal_projector" if variant == "projector" else "vision_tower"
        assert changed and all(key in n for n in changed)
