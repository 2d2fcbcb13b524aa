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


def test_a_missing_checkpoint_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        LlavaScorer(str(tmp_path / "no-such-model"))


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
