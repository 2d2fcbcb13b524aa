"""The VLM's training dialogues: answers point at the right image, and words stand exactly where image tokens stand."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from vlmlab.blind.corpus import (MULTI_QUESTIONS, SLOT_ATTRIBUTES, Answer, Dialogue, Mixture, answer_word, collate,
                                 encode, slot_words)
from vlmlab.blind.tasks import LETTERS
from vlmlab.blind.vlm import BOS, EOS, IMAGE, PAD, WordTokenizer
from vlmlab.world.datasets import sample_scene


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(400)]
    texts = ["describe the image .", "answer A , B , C or D ."] + [q.format("") for q in MULTI_QUESTIONS.values()]
    from vlmlab.blind.corpus import SINGLE_QUESTIONS
    from vlmlab.world.captions import caption
    texts += [q for qs in SINGLE_QUESTIONS.values() for q in qs]
    texts += [answer_word(s, a) for s in scenes for a in SLOT_ATTRIBUTES + ("position",)]
    texts += [caption(s, rng) for s in scenes for _ in range(5)]
    return scenes, WordTokenizer.from_texts(texts)


def _turns(d: Dialogue):
    """(question text, answers after it) per turn of a multi-image dialogue."""
    out = []
    for p in d.parts:
        if isinstance(p, str) and not isinstance(p, Answer) and p.startswith("which"):
            out.append((p, []))
        elif isinstance(p, Answer):
            out[-1][1].append(str(p))
    return out


def _asked(question: str) -> tuple[str, str]:
    """(attribute, value) of a letter question, parsed back through its template."""
    for attr, template in MULTI_QUESTIONS.items():
        head, tail = template.split("{}")
        m = re.match(re.escape(head) + "(.+?)" + re.escape(tail) + " answer", question)
        if m and not any(w in m.group(1) for w in ("object", "background")):
            return attr, m.group(1)
    raise AssertionError(question)


@pytest.mark.parametrize("query_last", [False, True])
def test_every_letter_answer_names_the_only_image_with_the_asked_value(world, query_last):
    scenes, _ = world
    mix = Mixture(scenes, np.random.default_rng(1), turns=(1, 3), query_last=query_last)
    for _ in range(200):
        d = mix.multi()
        k = len(d.images)
        assert 2 <= k <= 4 and d.parts[:2 * k:2] == list(LETTERS[:k]) and d.parts[1:2 * k:2] == list(range(k))
        for question, answers in _turns(d):
            options = "answer " + ("A or B ." if k == 2 else "A , B or C ." if k == 3 else "A , B , C or D .")
            attr, value = _asked(question)
            assert question.endswith(options + (" " + value if query_last else ""))
            values = [answer_word(scenes[i], attr) for i in d.images]
            assert values.count(value) == 1
            assert answers == [LETTERS[values.index(value)]]


def test_multi_draws_each_letter_about_equally_often(world):
    scenes, _ = world
    mix = Mixture(scenes, np.random.default_rng(2))
    letters = [str(mix.multi(k=4, turns=1).parts[-1]) for _ in range(800)]
    counts = np.array([letters.count(x) for x in LETTERS])
    assert counts.min() > 150                                # 200 expected each


def test_encode_marks_answers_and_tags_image_tokens_with_their_label(world):
    scenes, tok = world
    d = Dialogue([0, 1], ["A", 0, "B", 1, "which image shows a star ? answer A or B .", Answer("B")])
    ids, tags, labels = encode(d, tok, n_patches=3)
    assert ids[0] == BOS and ids[-1] == EOS and ids.count(IMAGE) == 6
    a, b = tok.token_id("A"), tok.token_id("B")
    assert [t for i, t in zip(ids, tags) if i == IMAGE] == [a] * 3 + [b] * 3
    assert all(t == -1 for i, t in zip(ids, tags) if i != IMAGE)
    assert [x for x in labels if x != -100] == [b, EOS] and labels[-2:] == [b, EOS]


def test_words_stand_where_image_tokens_stand(world):
    """The same dialogue in words and in image tokens: identical text, each image replaced by its slot."""
    scenes, tok = world
    d = Mixture(scenes, np.random.default_rng(3)).multi(k=3, turns=2)
    img_ids, img_tags, img_labels = encode(d, tok, n_patches=16)
    w_ids, w_tags, w_labels = encode(d, tok, scenes=scenes, rng=np.random.default_rng(4))
    strip = lambda ids, tags: [i for i, t in zip(ids, tags) if t == -1]
    assert strip(img_ids, img_tags) == strip(w_ids, w_tags)
    assert [x for x in img_labels if x != -100] == [x for x in w_labels if x != -100]
    allowed = {n: {tok.token_id(w) for a in SLOT_ATTRIBUTES for w in tok.split(answer_word(scenes[i], a))}
               for n, i in enumerate(d.images)}
    label_ids = [tok.token_id(x) for x in LETTERS]
    for i, t in zip(w_ids, w_tags):
        if t != -1:
            assert i in allowed[label_ids.index(t)]


def test_slot_words_are_every_attribute_word_of_the_scene(world):
    scenes, tok = world
    rng = np.random.default_rng(5)
    for s in scenes[:50]:
        words = [tok.vocab[w] for w in slot_words(s, rng, tok, extra=3)]
        every = [w for a in SLOT_ATTRIBUTES for w in tok.split(answer_word(s, a))]
        assert set(words) == set(every) and len(every) <= len(words) <= len(every) + 3


def test_collate_pads_and_masks():
    ids, tags, labels, mask = collate([([1, 5, 6], [-1, 7, -1], [-100, -100, 6]), ([1, 9], [-1, -1], [-100, 2])])
    assert ids.tolist() == [[1, 5, 6], [1, 9, PAD]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert tags.tolist() == [[-1, 7, -1], [-1, -1, -1]] and labels.tolist() == [[-100, -100, 6], [-100, 2, -100]]


def test_slot_mixtures_are_convex_weights_over_the_scenes_attribute_words(world):
    from vlmlab.blind.corpus import slot_mixture

    scenes, tok = world
    rng = np.random.default_rng(6)
    for s in scenes[:30]:
        ids, w = slot_mixture(s, rng, tok, n_tokens=8)
        assert [tok.vocab[i] for i in ids] == [x for a in SLOT_ATTRIBUTES for x in tok.split(answer_word(s, a))]
        assert w.shape == (8, len(ids)) and (w >= 0).all() and np.allclose(w.sum(1), 1)


def test_mixture_tokens_enter_the_lm_verbatim_at_the_image_positions(world):
    """Stage 1's images as word mixtures: image_inputs gives weights @ embedding rows, and embed puts them
    (plus the label embedding) exactly where the <image> placeholders are."""
    from vlmlab.blind.train_vlm import batch_tensors, image_inputs
    from vlmlab.blind.vlm import TinyVLM, VLMConfig
    from vlmlab.models import load_clip

    scenes, tok = world
    torch.manual_seed(0)
    vlm = TinyVLM(load_clip("embedded", device="cpu"), tok, VLMConfig(width=32, layers=1, heads=2, mlp=32))
    d = Mixture(scenes, np.random.default_rng(7)).multi(k=2, turns=1)
    ids, tags, _, _, images = batch_tensors([d], tok, None, scenes, np.random.default_rng(8), slot_tokens=4)
    tokens = image_inputs(vlm, images)
    table = vlm.lm.get_input_embeddings().weight
    expected = torch.cat([torch.as_tensor(w, dtype=torch.float32) @ table[list(i)] for i, w in images])
    assert tokens.shape == (8, 32) and torch.allclose(tokens, expected)
    emb = vlm.embed(ids, tokens, tags)
    at = (ids[0] == IMAGE).nonzero().flatten()
    assert len(at) == 8
    assert torch.allclose(emb[0, at], tokens + table[tags[0, at]])


def test_a_pool_too_small_for_letter_questions_stops_with_a_clear_error():
    """Every scene has the same style: no image can be 'the other one', so drawing must not loop forever."""
    from vlmlab.blind.corpus import Mixture
    from vlmlab.world.datasets import sample_scene

    rng = np.random.default_rng(0)
    mix = Mixture([sample_scene(rng, style="photo") for _ in range(3)], np.random.default_rng(1))
    with pytest.raises(ValueError, match="larger pool"):
        mix.multi(k=2, attrs=["style"])
