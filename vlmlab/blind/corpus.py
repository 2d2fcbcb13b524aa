"""The embedded VLM's training data: dialogues about world scenes, written with images or with words.

LLaVA's recipe (``hidden_in_plain_sight.md`` §4) starts from a pre-trained LLM; ours has none, so
``train_vlm`` first pre-trains the small Llama on text (stage 1), where the retrieval and comparison
circuits that multi-image questions need form cheaply, then aligns the projector (stage 2) and tunes
both on images (stage 3). One generator serves every stage: a ``Dialogue`` is a list of parts, and an
image part is written either as the image's tokens (``<image>`` x P) or, for language pre-training,
as a *slot*: ``slot_mixture`` (the default) gives n tokens, each a random convex mixture of the
embeddings of the scene's attribute words, as image tokens carry several attributes at once;
``slot_words`` gives the words themselves ("red star grass one plain photo red"). Both forms carry
the image's label embedding ("A", "B", ...) on every token, as ``TinyVLM.embed`` does for image tokens.

Dialogue kinds (``Mixture``):

* ``caption``: one image, "describe the image ." -> a world caption (LLaVA's stage-1 data);
* ``single``: one image, 1-3 turns of attribute questions ("what colour is it ?" -> "red");
* ``multi``: 2-4 labelled images, then 1-3 turns of letter questions ("which image has a red object ?
  answer A , B or C ." -> "B"), the notebook's control format. Several turns per image set give more
  supervision per image token, as LLaVA's multi-turn conversations do.

Curriculum (the first steps of stage 1): ``query_last`` repeats the asked value at the end of the
prompt ("... answer A or B . red" -> "A"), so the letter is one attention hop from the last token to
the image that holds the value; once that hop exists, the plain format, where the value must first be
carried from the question to the answer position, is learned in a few hundred steps.
``train_vlm``'s docstring gives the measurements behind it.

None of the notebook's vision-centric tasks (depth, correspondence, odd-one-out, style match) is here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from vlmlab.blind.tasks import LETTERS, options_text
from vlmlab.blind.vlm import BOS, EOS, IMAGE, WordTokenizer, pad_batch
from vlmlab.world.captions import caption
from vlmlab.world.scene import COUNT_WORDS

SINGLE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "shape": ("what shape is it ?", "what object is in the image ?"),
    "colour": ("what colour is it ?", "what colour is the object ?"),
    "texture": ("what pattern does it have ?",),
    "count": ("how many objects are there ?",),
    "position": ("where is the object ?",),
    "background": ("what is the background ?",),
    "style": ("what style is the image ?",),
}
MULTI_QUESTIONS: dict[str, str] = {
    "shape": "which image shows a {} ?",
    "colour": "which image has a {} object ?",
    "style": "which image is a {} ?",
    "background": "which image has a {} background ?",
}
SLOT_ATTRIBUTES = ("shape", "colour", "texture", "count", "background", "style")


def answer_word(scene, attr: str) -> str:
    """The answer text for ``attr`` of ``scene`` ("red", "two", "lightning bolt", "in the center")."""
    return COUNT_WORDS[scene.count - 1] if attr == "count" else str(getattr(scene, attr))


class Answer(str):
    """A dialogue part the model is trained to produce (the loss covers it, and only it)."""


@dataclass
class Dialogue:
    """``images``: scene indices; ``parts``: label words and prompt text (str), answers (``Answer``) and
    images (int: position in ``images``), in order."""

    images: list[int]
    parts: list = field(default_factory=list)


class Mixture:
    """Draws dialogues about a pool of scenes with its own generator (seeded; resumable via its state)."""

    def __init__(self, scenes, rng: np.random.Generator, weights=(0.2, 0.3, 0.5), turns=(1, 3),
                 query_last: bool = False):
        self.scenes, self.rng, self.turns, self.query_last = scenes, rng, turns, query_last
        self.weights = np.asarray(weights, float) / np.sum(weights)
        self.by_value = {a: {} for a in MULTI_QUESTIONS}
        for i, s in enumerate(scenes):
            for a in MULTI_QUESTIONS:
                self.by_value[a].setdefault(answer_word(s, a), []).append(i)

    def _pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def _n_turns(self) -> int:
        return int(self.rng.integers(self.turns[0], self.turns[1] + 1))

    def caption(self) -> Dialogue:
        i = int(self.rng.integers(len(self.scenes)))
        return Dialogue([i], [0, "describe the image .", Answer(caption(self.scenes[i], self.rng))])

    def single(self) -> Dialogue:
        i = int(self.rng.integers(len(self.scenes)))
        s = self.scenes[i]
        attrs = [a for a in SINGLE_QUESTIONS if a != "position" or s.count == 1]
        parts: list = [0]
        for _ in range(self._n_turns()):
            attr = self._pick(attrs)
            parts += [self._pick(SINGLE_QUESTIONS[attr]), Answer(answer_word(s, attr))]
        return Dialogue([i], parts)

    def multi(self, k: int | None = None, turns: int | None = None, attrs=None) -> Dialogue:
        """k labelled images (2-4) and ``turns`` letter questions; the first question's target image is
        drawn uniformly over the attribute's values, later turns ask about any value that one image alone has."""
        k = int(self.rng.integers(2, 5)) if k is None else k
        attrs = list(MULTI_QUESTIONS) if attrs is None else list(attrs)
        attr = self._pick(attrs)
        value = self._pick(list(self.by_value[attr]))
        target = self._pick(self.by_value[attr][value])
        others, tries = [], 0
        while len(others) < k - 1:
            j = int(self.rng.integers(len(self.scenes)))
            if answer_word(self.scenes[j], attr) != value:
                others.append(j)
            tries += 1
            if tries > 100 * k + 10_000:               # a tiny pool where (nearly) every scene has this value
                raise ValueError(f"Mixture.multi: the {len(self.scenes)} scenes give no image without {attr} "
                                 f"= {value!r}; use a larger pool (pool_size)")
        pos = int(self.rng.integers(k))
        images = others[:pos] + [target] + others[pos:]
        parts: list = []
        for n in range(k):
            parts += [LETTERS[n], n]
        for t in range(self._n_turns() if turns is None else turns):
            if t:                                      # a later turn: any value exactly one image has
                asks = [(a, v) for a in attrs for v in {answer_word(self.scenes[i], a) for i in images}
                        if [answer_word(self.scenes[i], a) for i in images].count(v) == 1]
                if not asks:
                    break
                attr, value = asks[int(self.rng.integers(len(asks)))]
                pos = [answer_word(self.scenes[i], attr) for i in images].index(value)
            parts.append(MULTI_QUESTIONS[attr].format(value) + " " + options_text(k)
                         + (" " + value if self.query_last else ""))
            parts.append(Answer(LETTERS[pos]))
        return Dialogue(images, parts)

    def draw(self) -> Dialogue:
        kind = self.rng.choice(3, p=self.weights)
        return (self.caption, self.single, self.multi)[kind]()


def attribute_word_ids(scene, tokenizer: WordTokenizer) -> list[int]:
    """Token ids of every attribute word of ``scene`` (shape, colour, texture, count, background, style)."""
    return [tokenizer.token_id(w) for a in SLOT_ATTRIBUTES for w in tokenizer.split(answer_word(scene, a))]


def slot_words(scene, rng: np.random.Generator, tokenizer: WordTokenizer, extra: int = 3) -> list[int]:
    """An image written as words for language pre-training: every attribute word of the scene (shape,
    colour, texture, count, background, style) once, plus 0-``extra`` repeats of them, shuffled; token ids.
    Every word is there, as every attribute is in the image, so a question about the scene is answerable."""
    words = attribute_word_ids(scene, tokenizer)
    words += [words[int(j)] for j in rng.integers(len(words), size=int(rng.integers(extra + 1)))]
    return [words[int(j)] for j in rng.permutation(len(words))]


def slot_mixture(scene, rng: np.random.Generator, tokenizer: WordTokenizer, n_tokens: int) -> tuple[list[int], np.ndarray]:
    """An image written as ``n_tokens`` *mixtures* of its attribute words' embeddings, for language
    pre-training: (the scene's attribute word ids, (n_tokens, n_words) Dirichlet(1) weights). Image tokens
    carry several attributes at once; so do these, so the LM learns to find a word inside a mixture."""
    words = attribute_word_ids(scene, tokenizer)
    return words, rng.dirichlet(np.ones(len(words)), size=n_tokens)


def encode(dialogue: Dialogue, tokenizer: WordTokenizer, scenes=None, n_patches: int | None = None,
           rng: np.random.Generator | None = None) -> tuple[list[int], list[int], list[int]]:
    """Token ids, label tags and loss labels of a dialogue, ending with ``<eos>`` (trained).

    Images become ``n_patches`` ``<image>`` placeholders, or, with ``scenes`` and ``rng`` (language
    pre-training), their ``slot_words``. Tags: the label word's id on every token of an image that
    follows a label ("A", ...), else -1. Labels: the token ids of ``Answer`` parts and the final
    ``<eos>``, -100 elsewhere.
    """
    ids, tags, labels = [BOS], [-1], [-100]
    label = -1
    for part in dialogue.parts:
        if isinstance(part, str):
            toks = tokenizer.encode(part)
            ids += toks
            tags += [-1] * len(toks)
            labels += toks if isinstance(part, Answer) else [-100] * len(toks)
            label = tokenizer.index[part] if part in LETTERS or part == "REF" else -1
            continue
        if n_patches is not None:
            toks = [IMAGE] * n_patches
        else:
            toks = slot_words(scenes[dialogue.images[part]], rng, tokenizer)
        ids += toks
        tags += [label] * len(toks)
        labels += [-100] * len(toks)
        label = -1
    return ids + [EOS], tags + [-1], labels + [EOS]


def collate(rows: list[tuple[list[int], list[int], list[int]]]) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, tags, labels (-100 on padding) and attention mask, each (B, L); ids and mask
    as ``vlm.pad_batch`` pads them."""
    ids, mask, _ = pad_batch([i for i, _, _ in rows])
    tags = torch.full_like(ids, -1)
    labels = torch.full_like(ids, -100)
    for r, (_, t, lab) in enumerate(rows):
        tags[r, :len(t)], labels[r, :len(lab)] = torch.tensor(t), torch.tensor(lab)
    return ids, tags, labels, mask
