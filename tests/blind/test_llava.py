"""LLaVA letter scoring on a tiny random-initialised LLaVA saved to a folder (never downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmlab.blind.llava import PROMPT, LlavaScorer, canvas
from vlmlab.blind.tasks import options_text, style_task

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "USER", ":", "ASSISTANT", "A", "B", "C", "D", ",", "or",
             "answer", ".", "?"] + style_task(1).question.replace("?", " ?").split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, pad_token_id=vocab["<pad>"]),
        image_token_index=vocab["<image>"], vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return LlavaScorer(str(path))


def test_canvas_puts_images_side_by_side_with_a_black_divider():
    imgs = np.full((3, 4, 5, 3), 200, np.uint8)
    c = canvas(imgs, divider=2)
    assert c.shape == (4, 3 * 5 + 2 * 2, 3)
    assert (c[:, 5:7] == 0).all() and (c[:, :5] == 200).all() and (c[:, -5:] == 200).all()


def test_letter_scores_match_the_models_own_next_token_distribution(tiny_llava):
    task = style_task(2, seed=0, size=32)
    canvases = [canvas(q) for q in task.images]
    lp = tiny_llava.option_logprobs(canvases, [task.question] * 2, 2)
    assert lp.shape == (2, 2)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2))
    prompt = PROMPT.format(question=f"{task.question} {options_text(2)}")
    inputs = tiny_llava.processor(images=canvases[0], text=prompt, return_tensors="pt")
    logits = tiny_llava.model(**inputs).logits[0, -1]
    ids = tiny_llava.letter_ids(prompt.replace("<image>", ""), "AB")
    torch.testing.assert_close(lp[0], logits[ids].log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_vision_maps_are_the_patch_grid_of_the_selected_layer(tiny_llava):
    maps = tiny_llava.vision_maps(style_task(1, size=32).images[0])
    assert maps.shape == (3, 32, 4, 4)


def test_a_missing_checkpoint_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        LlavaScorer(str(tmp_path / "no-such-model"))
