"""A small LLaVA-style VLM on the embedded CLIP, and option-letter scoring for any such VLM.

Fu et al. (``hidden_in_plain_sight.md`` §4) compare LLaVA-style VLMs -- a frozen vision encoder, a
projector, a language model -- with readouts of their own encoders. ``TinyVLM`` is that design at the
embedded world's scale:

* vision: the embedded CLIP's image tower up to its last stage; each 64-px image gives a 4x4 grid of
  "patch" tokens, ``layer3``'s 256 channels joined with the 512 of ``layer4`` upsampled to that grid
  (LLaVA likewise feeds the LM a late layer's patch tokens, which in a ViT carry global context);
  frozen unless a fine-tuning variant unfreezes it;
* projector: a two-layer MLP from the patch width to the LM width (LLaVA-1.5's ``mlp2x_gelu``);
* language model: a ``transformers`` ``LlamaForCausalLM`` of a few layers over a word-level vocabulary
  of the world's captions and questions (``WordTokenizer``), fed ``inputs_embeds`` in which the image
  tokens replace ``<image>`` placeholders.

A prompt is a list of segments: text, or an image index; each image contributes its label (``"A"``,
``"REF"``, ...) then its patch tokens. ``option_logprobs`` scores a multiple-choice question by the
log-probability of each option letter as the next token (no parsing of free text), the same for every
model, which is how the notebook reads the VLM's answers.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmlab.features import arrays_to_input
from vlmlab.models.bundle import ClipBundle

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<image>", "<soft>")
KEEP_CASE = {"A", "B", "C", "D", "REF"}
PAD, BOS, EOS, UNK, IMAGE, SOFT = range(len(SPECIALS))


class WordTokenizer:
    """Word-level tokenizer: lower-cased words and punctuation; option letters and ``REF`` keep their case."""

    def __init__(self, vocab: list[str]):
        if tuple(vocab[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocab must start with the special tokens {SPECIALS}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @staticmethod
    def split(text: str) -> list[str]:
        return [w if w in KEEP_CASE else w.lower() for w in re.findall(r"[A-Za-z]+|[?.,:]", text)]

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in self.split(text)]

    def decode(self, ids) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) >= len(SPECIALS))

    def token_id(self, word: str) -> int:
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the vocabulary")
        return self.index[word]

    @classmethod
    def from_texts(cls, texts) -> "WordTokenizer":
        words = sorted({w for t in texts for w in cls.split(t)} | KEEP_CASE)
        return cls(list(SPECIALS) + words)


@dataclass(frozen=True)
class VLMConfig:
    vision_layer: str = "layer3+layer4"
    width: int = 96
    layers: int = 4
    heads: int = 4
    mlp: int = 256
    max_len: int = 192


class VisionTrunk(nn.Module):
    """A ModifiedResNet run up to a stage: uint8 images (N, S, S, 3) -> patch tokens (N, H*W, C).

    ``layer``: a stage name (``"layer3"``), or two joined by ``+`` (``"layer3+layer4"``): the later
    stage's map is upsampled (nearest) to the earlier one's grid and the channels concatenated, so each
    of the 4x4 tokens carries its cell's local features and the global, shape-level features of layer4
    (in a ViT every patch token has global context; in a ResNet only the last stage does).
    ``pool`` names the tower's attention-pooled output, the CLIP image embedding, unit-normalised as CLIP
    compares it and scaled by sqrt(D) (unit RMS per channel, the trunk maps' scale; raw, it is ten times
    larger and swamps them), broadcast to every cell of the grid: ``"layer3+layer4+pool"`` gives each
    token the image-level, text-aligned features too (a ViT's patch tokens get them through attention).
    """

    def __init__(self, bundle: ClipBundle, layer: str = "layer3+layer4"):
        super().__init__()
        visual = bundle.model.visual
        if not hasattr(visual, "stem"):
            raise TypeError(f"TinyVLM needs a ModifiedResNet image tower, got {type(visual).__name__}")
        stages = ["layer1", "layer2", "layer3", "layer4"]
        self.outputs = layer.split("+")
        if not set(self.outputs) <= set(stages) | {"pool"} or self.outputs[0] == "pool":
            raise ValueError(f"layer must name stages of {stages} (and optionally 'pool', not first) "
                             f"joined by '+', got {layer!r}")
        self.visual = visual
        last = max(stages.index("layer4" if o == "pool" else o) for o in self.outputs)      # pool reads layer4
        self.stages = stages[:last + 1]
        self._bundle = [bundle]                              # not a submodule: the text tower stays out
        with torch.no_grad():
            self.width = self.forward(np.zeros((1, bundle.image_size, bundle.image_size, 3), np.uint8)).shape[-1]

    def forward(self, images) -> Tensor:
        x = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        x = arrays_to_input(self._bundle[0], x.to(next(self.visual.parameters()).device))
        x = self.visual.stem(x.to(next(self.visual.parameters()).dtype))
        maps = {}
        for name in self.stages:
            x = getattr(self.visual, name)(x)
            maps[name] = x
        if "pool" in self.outputs:
            pooled = self.visual.attnpool(maps["layer4"])                                    # (N, D)
            maps["pool"] = (F.normalize(pooled, dim=-1) * pooled.shape[-1] ** 0.5)[..., None, None]
        grid = maps[self.outputs[0]].shape[-2:]
        out = torch.cat([F.interpolate(maps[o], size=grid, mode="nearest") for o in self.outputs], 1)
        return out.flatten(2).transpose(1, 2).float()                                # (N, HW, C)


class TinyVLM(nn.Module):
    """Vision trunk -> projector -> a small Llama; see the module docstring."""

    def __init__(self, bundle: ClipBundle, tokenizer: WordTokenizer, config: VLMConfig = VLMConfig()):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config, self.tokenizer = config, tokenizer
        self.vision = VisionTrunk(bundle, config.vision_layer)
        self.projector = nn.Sequential(nn.Linear(self.vision.width, config.width), nn.GELU(),
                                       nn.Linear(config.width, config.width))
        self.lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=config.width, intermediate_size=config.mlp,
            num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
            max_position_embeddings=config.max_len, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
            tie_word_embeddings=False))
        self.soft_prompt: nn.Parameter | None = None
        self.vision.requires_grad_(False)

    # ---------------------------------------------------------------- sequences
    def encode_prompt(self, segments: list, n_patches: int, n_soft: int = 0) -> list[int]:
        """Token ids of a prompt: ``<bos>``, then each segment (str: words; int: ``<image>`` x n_patches).

        ``n_soft`` learned soft tokens go right before the first text segment after the last image
        (the paper's prompt tuning prepends them to the text prompt).
        """
        ids = [BOS]
        last_image = max((i for i, s in enumerate(segments) if not isinstance(s, str)), default=-1)
        for i, seg in enumerate(segments):
            if isinstance(seg, str):
                if i == last_image + 1 and n_soft:
                    ids += [SOFT] * n_soft
                ids += self.tokenizer.encode(seg)
            else:
                ids += [IMAGE] * n_patches
        return ids

    def image_labels(self, ids: Tensor) -> Tensor:
        """(B, L) id of the label word (A-D, REF) right before each image's tokens, at those tokens; else -1."""
        is_label = torch.zeros_like(ids, dtype=torch.bool)
        for word in KEEP_CASE:
            if word in self.tokenizer.index:
                is_label |= ids == self.tokenizer.index[word]
        tags = torch.full_like(ids, -1)
        current = torch.full_like(ids[:, 0], -1)
        for t in range(ids.shape[1]):
            current = torch.where(is_label[:, t], ids[:, t], torch.where(ids[:, t] == IMAGE, current, -1))
            tags[:, t] = torch.where(ids[:, t] == IMAGE, current, -1)
        return tags

    def embed(self, ids: Tensor, patches: Tensor | None, tags: Tensor | None = None) -> Tensor:
        """Input embeddings with image and soft-prompt placeholders replaced; ``patches`` (M, P, C) in order.

        An image's tokens are its projected patches plus the embedding of its label word when it has
        one ("A <image>": every token of that image also carries "A"), so the LM can name the image it
        finds (multi-image VLMs add such image-index embeddings; the label is the natural one).
        ``tags`` (B, L): the label id to add at each position (-1: none); default ``image_labels(ids)``.
        ``patches`` may also be LM-width tokens (T, width), one per ``<image>`` placeholder, used as they
        are: language pre-training's images written as mixtures of word embeddings (``vlmlab.blind.corpus``).
        """
        table = self.lm.get_input_embeddings()
        emb = table(ids)
        if patches is not None and len(patches):
            if patches.shape[-1] == emb.shape[-1] and patches.dim() == 2:      # already LM-width tokens
                tokens = patches.to(emb.dtype)
            else:
                tokens = self.projector(patches.to(emb.dtype)).reshape(-1, emb.shape[-1])
            emb = emb.masked_scatter((ids == IMAGE)[..., None], tokens)
        tags = self.image_labels(ids) if tags is None else tags
        if (tags >= 0).any():
            emb = emb + table(tags.clamp(min=0)) * (tags >= 0)[..., None].to(emb.dtype)
        if self.soft_prompt is not None and (ids == SOFT).any():
            rows = (ids == SOFT).sum(1)
            soft = self.soft_prompt[None].expand(len(ids), -1, -1)
            if not torch.all(rows == len(self.soft_prompt)):
                raise ValueError("every row must hold exactly n_soft <soft> tokens")
            emb = emb.masked_scatter((ids == SOFT)[..., None], soft.reshape(-1, emb.shape[-1]).to(emb.dtype))
        return emb

    def forward(self, ids: Tensor, patches: Tensor | None, attention_mask: Tensor | None = None,
                output_hidden_states: bool = False, tags: Tensor | None = None):
        return self.lm(inputs_embeds=self.embed(ids, patches, tags), attention_mask=attention_mask,
                       output_hidden_states=output_hidden_states, use_cache=False)

    def set_soft_prompt(self, n: int, init: str = "the") -> None:
        """Add ``n`` learnable soft tokens (initialised from a word's embedding), or remove them (n = 0)."""
        if n == 0:
            self.soft_prompt = None
            return
        word = self.lm.get_input_embeddings().weight[self.tokenizer.index.get(init, UNK)].detach()
        self.soft_prompt = nn.Parameter(word[None].repeat(n, 1).clone())

    # ---------------------------------------------------------------- persistence
    def __reduce__(self):
        """Pickle as (CLIP bundle, vocabulary, config, weights), rebuilt on load: what worker processes
        receive (transformers installs unpicklable hooks on a model once it has run)."""
        soft = None if self.soft_prompt is None else self.soft_prompt.detach()
        return _rebuild_vlm, (self.vision._bundle[0], self.tokenizer.vocab, self.config,
                              {k: v.detach() for k, v in self.state().items()}, soft, self.training)

    def state(self) -> dict[str, Tensor]:
        """Projector and LM weights (the vision trunk is the shipped CLIP's)."""
        sd = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        sd |= {f"lm.{k}": v for k, v in self.lm.state_dict().items()}
        return sd

    def metadata(self) -> dict[str, str]:
        """Config, vocabulary and the identity of the CLIP whose trunk the weights were trained on."""
        return {"config": json.dumps(asdict(self.config)), "vocab": json.dumps(self.tokenizer.vocab),
                "trunk": self.vision._bundle[0].identity}


def _rebuild_vlm(bundle: ClipBundle, vocab: list[str], config: VLMConfig, state: dict[str, Tensor],
                 soft_prompt: Tensor | None, training: bool) -> TinyVLM:
    vlm = TinyVLM(bundle, WordTokenizer(vocab), config)
    vlm.projector.load_state_dict({k[len("projector."):]: v for k, v in state.items() if k.startswith("projector.")})
    vlm.lm.load_state_dict({k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")})
    if soft_prompt is not None:
        vlm.soft_prompt = nn.Parameter(soft_prompt.clone())
    return vlm.train(training)


def pad_batch(seqs: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad token lists -> ids (B, L), attention mask (B, L) and the index of each row's last token."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    return ids, mask, lengths - 1


def option_logprobs(vlm: TinyVLM, segments: list[list], patches: list[Tensor], options: list[str],
                    n_soft: int = 0) -> Tensor:
    """log p(option letter | prompt) for each question: (Q, K), normalised over the K letters.

    ``segments[q]``: the prompt of question q (text and image indices); ``patches[q]``: its images'
    patch tokens (k, P, C). Every letter is one token, so the score is the next-token distribution at
    the prompt's last position, restricted to the option letters and renormalised.
    """
    letters = torch.tensor([vlm.tokenizer.token_id(o) for o in options])
    logits = answer_logits(vlm, segments, patches, n_soft)[:, letters]
    return logits.log_softmax(-1)


def answer_logits(vlm: TinyVLM, segments: list[list], patches: list[Tensor], n_soft: int = 0) -> Tensor:
    """Next-token logits (Q, V) at the last prompt position of each question."""
    n_patches = patches[0].shape[1]
    ids, mask, last = pad_batch([vlm.encode_prompt(s, n_patches, n_soft) for s in segments])
    out = vlm(ids, torch.cat(patches), mask)
    return out.logits[torch.arange(len(ids)), last]


def load_vlm(bundle: ClipBundle | None = None, path=None) -> TinyVLM:
    """The shipped embedded VLM (``vlmlab/assets/embedded_vlm.safetensors``) on the embedded CLIP, offline."""
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    from vlmlab.models import load_clip
    from vlmlab.runtime import REPO_ROOT

    path = Path(path) if path else REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; `make train-embedded-vlm` rebuilds it")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    bundle = bundle or load_clip("embedded", device="cpu")
    if meta.get("trunk", bundle.identity) != bundle.identity:
        warnings.warn(f"{path.name} was trained on the trunk of {meta['trunk']}, not of {bundle.identity}: its "
                      "projector reads features it never saw; `make train-embedded-vlm` retrains it", stacklevel=2)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    return _rebuild_vlm(bundle, json.loads(meta["vocab"]), VLMConfig(**json.loads(meta["config"])), state, None, False)
