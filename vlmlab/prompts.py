"""Prompt templates, prompt ensembles and zero-shot classifier weights.

Templates are data: ``IMAGENET_TEMPLATES`` are the 80 ImageNet templates of OpenAI's CLIP notebook
``Prompt_Engineering_for_ImageNet.ipynb`` (same order as ``open_clip.zero_shot_metadata``);
``IMAGENET_TEMPLATES_7`` the 7 the notebook singles out (used by Tip-Adapter).

Two ensembles (``zero_shot_weights(mode=...)``), for template embeddings e_t(c) of class c:
    "clip":           w(c) = normalize( mean_t normalize(e_t(c)) )   CLIP notebook, TDA, Tip-Adapter
    "mean_then_norm": w(c) = normalize( mean_t e_t(c) )              UniInfo (uniinfo_tta.md §2.1)
With one template both are normalize(e(c)).

``PromptLearner`` (bottom of this file) is CoOp's learnable context over the frozen text encoder,
shared by ``vlmlab.coop`` and ``vlmlab.tta.tpt``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmlab.models.bundle import ClipBundle

SIMPLE_TEMPLATE = "a photo of a {}."

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.",
    "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)

IMAGENET_TEMPLATES_7: tuple[str, ...] = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

MODES = ("clip", "mean_then_norm")


def _templates(templates: str | Sequence[str]) -> list[str]:
    out = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in out if t.count("{}") != 1]
    if not out or bad:
        raise ValueError(f"templates need exactly one '{{}}' each; got {bad or out!r}")
    return out


def clean_classname(name: str) -> str:
    """CoOp's rule: underscores become spaces ("sea_lake" -> "sea lake")."""
    return name.replace("_", " ").strip()


def fill(templates: str | Sequence[str], classnames: Sequence[str], clean: bool = True) -> list[list[str]]:
    """Prompts per class: ``out[c][t] = templates[t].format(classnames[c])`` (C lists of T strings)."""
    ts = _templates(templates)
    return [[t.format(clean_classname(c) if clean else c) for t in ts] for c in classnames]


def zero_shot_weights(bundle: ClipBundle, classnames: Sequence[str], templates: str | Sequence[str] = SIMPLE_TEMPLATE,
                      mode: str = "clip", batch_size: int = 1024) -> Tensor:
    """Text classifier from a prompt ensemble.

    Args:
        bundle: the model.
        classnames: C names.
        templates: one template or T templates with one ``{}``.
        mode: ``"clip"`` or ``"mean_then_norm"`` (see the module docstring).
        batch_size: prompts encoded per forward pass; all C*T prompts go through in chunks.
    Returns:
        (C, D) float32 unit rows, on the bundle's device; a normal tensor (usable in autograd).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {MODES}")
    prompts = fill(templates, classnames)
    n_t = len(prompts[0]) if prompts else 1
    flat = [p for per_class in prompts for p in per_class]                       # C*T, class-major
    with torch.inference_mode(), bundle.autocast():
        emb = bundle.encode_texts(flat, normalize=(mode == "clip"), batch_size=batch_size)  # (C*T, D)
    emb = emb.float().reshape(len(prompts), n_t, -1)                             # (C, T, D), a normal tensor
    return F.normalize(emb.mean(dim=1), dim=-1)                                  # (C, D)


def zero_shot_logits(feats: Tensor, weights: Tensor, scale: float = 100.0) -> Tensor:
    """``scale * feats @ weights.T``: (N, D) x (C, D) -> (N, C), on ``feats``' device and dtype.

    ``scale`` is usually ``bundle.logit_scale`` (100 for OpenAI CLIP).
    """
    return scale * feats @ weights.to(device=feats.device, dtype=feats.dtype).T


# ---------------------------------------------------------------------------------------------------------------
# Learnable prompt context (CoOp, Zhou et al., IJCV 2022, arXiv:2109.01134), shared by vlmlab.coop and vlmlab.tta.tpt.
#
#   prompt_i = [SOS] [V]_1 .. [V]_M [CLASS_i] . [EOS]           position "end"
#            = [SOS] [V]_1 .. [V]_{M/2} [CLASS_i] [V]_{M/2+1} .. [V]_M . [EOS]   "middle"
#            = [SOS] [CLASS_i] [V]_1 .. [V]_M . [EOS]           "front" (in CoOp's code, not in the paper)
#   g(prompt_i) = ln_final(transformer(prompt_i + pos))[EOS position] @ text_projection
# Reference checked: KaiyangZhou/CoOp ff61507 ``trainers/coop.py`` (PromptLearner, TextEncoder).
# ``ctx_dtype``: the context's storage (and so its SGD arithmetic); cast to the model's dtype in forward. CoOp's
# fp16 model keeps it in fp16 (``PREC: fp16``); float32 is vlmlab's default for the embedded profile. CSC with a
# phrase init is allowed (each class starts from the phrase; CoOp silently ignores CSC when CTX_INIT is set);
# the text tower's weights stop requiring grad while the graph is built, so no gradient ever reaches the model;
# with a causal mask the sequence is cut after the last EOS (tokens after it cannot reach the EOS readout), and
# a unified context's shared prefix is encoded once for all classes (exact; ``encode_shared_prefix``).
# ---------------------------------------------------------------------------------------------------------------

POSITIONS = ("end", "middle", "front")


@dataclass(frozen=True)
class _TextTower:
    """The pieces of an open_clip text tower (``CLIP`` keeps them flat, ``CustomTextCLIP`` in ``.text``)."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: Tensor | nn.Module | None
    attn_mask: Tensor | None
    pool_type: str
    eos_id: int | None
    context_length: int


def text_tower(bundle: ClipBundle) -> _TextTower:
    """The open_clip text tower of ``bundle.model`` (``CLIP`` or ``CustomTextCLIP`` with a ``TextTransformer``)."""
    m = bundle.model
    src = m if hasattr(m, "token_embedding") else getattr(m, "text", None)
    if src is None or not hasattr(src, "token_embedding") or not hasattr(src, "transformer"):
        raise TypeError(f"model {bundle.name!r} has no open_clip text transformer (token_embedding/transformer); "
                        f"prompt learning needs an open_clip CLIP or CustomTextCLIP with a TextTransformer tower")
    if getattr(src, "cls_emb", None) is not None or getattr(src, "use_pad_mask", False):
        raise TypeError(f"model {bundle.name!r}: text towers with a CLS embedding or padding mask (CoCa-style) "
                        f"are not supported by PromptLearner")
    pool = getattr(src, "text_pool_type", None) or getattr(src, "pool_type", "argmax")
    eos = getattr(src, "text_eos_id", None) if src is m else getattr(src, "eos_id", None)
    return _TextTower(src.token_embedding, src.positional_embedding, src.transformer, src.ln_final,
                      src.text_projection, src.attn_mask, pool, eos, int(src.positional_embedding.shape[0]))


@contextmanager
def frozen(tower: _TextTower):
    """Weights of the text tower stop requiring grad while a graph is built (restored after).

    The graph then has no weight-gradient nodes: backward is cheaper and no ``.grad`` ever lands
    on the model, whatever the caller does with it. Not thread-safe (runs use processes).
    """
    mods = [tower.transformer, tower.ln_final] + ([tower.text_projection] if isinstance(tower.text_projection, nn.Module) else [])
    params = [p for m in mods for p in m.parameters() if p.requires_grad]
    if isinstance(tower.text_projection, Tensor) and tower.text_projection.requires_grad:
        params.append(tower.text_projection)
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _cast_dtype(tower: _TextTower, x: Tensor) -> torch.dtype:
    return tower.transformer.get_cast_dtype() if hasattr(tower.transformer, "get_cast_dtype") else x.dtype


def _readout(tower: _TextTower, x: Tensor, tokens: Tensor, offset: int = 0) -> Tensor:
    """Pool (N, L, W) at the readout token (``offset``: positions cut from the front), then project."""
    rows = torch.arange(x.shape[0], device=x.device)
    if tower.pool_type == "argmax":
        x = x[rows, tokens.argmax(dim=-1) - offset]
    elif tower.pool_type == "eos":
        x = x[rows, (tokens == tower.eos_id).int().argmax(dim=-1) - offset]
    elif tower.pool_type == "first":
        x = x[:, 0]
    elif tower.pool_type == "last":
        x = x[:, -1]
    else:
        raise TypeError(f"text pool_type {tower.pool_type!r} has no single readout token; PromptLearner needs "
                        f"'argmax', 'eos', 'first' or 'last'")
    proj = tower.text_projection
    if proj is None:
        return x                                                                              # (N, W)
    return proj(x) if isinstance(proj, nn.Module) else x @ proj                               # (N, D)


def encode_token_embeddings(tower: _TextTower, x: Tensor, tokens: Tensor) -> Tensor:
    """open_clip's text forward from token embeddings: (N, L, W) + token ids (N, L) -> (N, D) unnormalised.

    Same steps as open_clip 3.3 ``CLIP.encode_text``: add positional embeddings, run the transformer
    with its attention mask, ``ln_final``, pool (``argmax`` = the EOS token, the highest id), project.
    The tower is ``frozen``, so gradients reach ``x`` only.
    """
    length = tokens.shape[1]
    cast = _cast_dtype(tower, x)
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    with frozen(tower):
        x = x.to(cast) + tower.positional_embedding[:length].detach().to(cast)             # (N, L, W)
        x = tower.ln_final(tower.transformer(x, attn_mask=mask))                              # (N, L, W)
        return _readout(tower, x, tokens)


def supports_shared_prefix(tower: _TextTower) -> bool:
    """Causal mask, EOS readout and plain open_clip ``ResidualAttentionBlock`` layers (no custom blocks)."""
    t = tower.transformer
    blocks = getattr(t, "resblocks", None)
    return (tower.attn_mask is not None and tower.pool_type in ("argmax", "eos") and blocks is not None
            and getattr(t, "batch_first", False) and not getattr(t, "grad_checkpointing", False)
            and all(type(b).__name__ == "ResidualAttentionBlock" and not hasattr(b, "ln_1_kv")
                    and isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in blocks))


def encode_shared_prefix(tower: _TextTower, prefix: Tensor, suffix: Tensor, tokens: Tensor) -> Tensor:
    """``encode_token_embeddings`` of cat(prefix, suffix) when all N rows share the first P embeddings.

    Under a causal mask the first P positions only see each other, so they are computed once (batch 1)
    and the N suffixes attend to their keys and values: exact, and N*P fewer token positions.
    Args: prefix (1, P, W); suffix (N, S, W); tokens (N, P + S). Returns (N, D).
    """
    n, p, length = suffix.shape[0], prefix.shape[1], tokens.shape[1]
    cast = _cast_dtype(tower, suffix)
    pos = tower.positional_embedding[:length].detach().to(cast)
    mask = tower.attn_mask[:length, :length]
    with frozen(tower):
        xp, xs = prefix.to(cast) + pos[:p], suffix.to(cast) + pos[p:]                       # (1, P, W), (N, S, W)
        for blk in tower.transformer.resblocks:
            hp, hs = blk.ln_1(xp), blk.ln_1(xs)
            # built sequence-first and viewed batch-first: MultiheadAttention transposes back to contiguous
            # (L, N, W) blocks, so its projections run as matmuls (not as batched matmuls over copies of W)
            kv = torch.cat([hp.transpose(0, 1).expand(-1, n, -1), hs.transpose(0, 1)], dim=0).transpose(0, 1)
            q = hs.transpose(0, 1).contiguous().transpose(0, 1)                                # (N, S, W) view
            xs = xs + blk.ls_1(blk.attention(q_x=q, k_x=kv, v_x=kv, attn_mask=mask[p:, :]))
            xs = xs + blk.ls_2(blk.mlp(blk.ln_2(xs)))
            xp = blk(xp, attn_mask=mask[:p, :p])
        return _readout(tower, tower.ln_final(xs), tokens, offset=p)


def _eos_positions(tokens: Tensor, tower: _TextTower) -> Tensor:
    if tower.pool_type == "eos" and tower.eos_id is not None:
        return (tokens == tower.eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)


def _layout(position: str, n_ctx: int, name_lens: Sequence[int], length: int) -> Tensor:
    """(C, L): for each class's prompt position, its source in the "end" layout [SOS | ctx | CLASS . EOS].

    "middle" is [SOS | ctx[:M/2] | CLASS | ctx[M/2:] | . EOS] (CoOp's ``class_token_position``), "front"
    [SOS | CLASS | ctx | . EOS]; each source position is used once per class.
    """
    half, rows = n_ctx // 2, []
    for n in name_lens:
        sos, ctx, name = [0], list(range(1, 1 + n_ctx)), list(range(1 + n_ctx, 1 + n_ctx + n))
        rest = list(range(1 + n_ctx + n, length))
        rows.append({"end": sos + ctx + name, "middle": sos + ctx[:half] + name + ctx[half:],
                     "front": sos + name + ctx}[position] + rest)
    return torch.tensor(rows, dtype=torch.long)


class PromptLearner(nn.Module):
    """CoOp's learnable context over the frozen text encoder of a ClipBundle.

    Args:
        bundle: any loaded ClipBundle with an open_clip text transformer (embedded or open_clip).
        classnames: C class names (underscores become spaces, CoOp's rule).
        n_ctx: M, context tokens; replaced by the phrase's *word* count when ``ctx_init`` is set (CoOp's
            ``len(ctx_init.split(" "))``; ``ctx_init_length="tokens"`` uses its BPE token count instead).
        ctx_init: a phrase ("a photo of a") whose token embeddings initialise the context, or ``None``
            for random N(0, 0.02^2) vectors.
        csc: class-specific context (C, M, W) instead of one unified (M, W) context.
        position: class-token position, "end", "middle" (first M//2 vectors, class, rest) or "front".
        seed: seed of the random init (a private generator; the global RNG is untouched).
        ctx_dtype: the context's dtype (float32 default; float16 as CoOp's fp16 model stores it: the
            init is rounded to it and an optimiser steps it in it).

    Attributes:
        ctx: the only trainable parameter, (M, W) unified or (C, M, W) class-specific, ``ctx_dtype``.
        tokens: (C, L) token ids of the placeholder prompts (their EOS positions are the readout).
        name_lens: class-name token counts as they sit in the prompt (between the phrase and the EOS).
    """

    def __init__(self, bundle: ClipBundle, classnames: Sequence[str], n_ctx: int = 4,
                 ctx_init: str | None = "a photo of a", csc: bool = False, position: str = "end", seed: int = 0,
                 ctx_init_length: str = "words", ctx_dtype: torch.dtype = torch.float32):
        super().__init__()
        if ctx_init_length not in ("words", "tokens"):
            raise ValueError(f"ctx_init_length={ctx_init_length!r}; use 'words' (CoOp) or 'tokens'")
        if position not in POSITIONS:
            raise ValueError(f"position={position!r}; use one of {POSITIONS}")
        if not classnames:
            raise ValueError("classnames is empty")
        self.bundle, self.tower = bundle, text_tower(bundle)
        self.classnames = [clean_classname(c) for c in classnames]
        self.csc, self.position, self.ctx_init = bool(csc), position, (ctx_init or None)
        device, emb = bundle.device, self.tower.token_embedding
        width = emb.weight.shape[1]
        with torch.no_grad():
            if self.ctx_init:
                phrase = self.ctx_init.replace("_", " ").strip()
                ids = bundle.tokenizer([phrase]).to(device)                                   # (1, L)
                n_phrase = int(_eos_positions(ids, self.tower)[0]) - 1                        # its BPE tokens
                if n_phrase < 1:
                    raise ValueError(f"ctx_init={ctx_init!r} has no tokens")
                # CoOp: n_ctx = len(ctx_init.split(" ")) words; a phrase of more BPE tokens than words
                # ("itap of a") keeps its extra tokens fixed after the learned ones, as in trainers/coop.py
                m = min(len(phrase.split(" ")), n_phrase) if ctx_init_length == "words" else n_phrase
                init = emb(ids)[0, 1:1 + m].float()                                         # (M, W)
                init = init.expand(len(self.classnames), m, width).clone() if self.csc else init.clone()
                n_ctx, prefix = m, phrase
            else:
                if n_ctx < 1:
                    raise ValueError(f"n_ctx={n_ctx} must be >= 1")
                g = torch.Generator().manual_seed(int(seed))
                shape = (len(self.classnames), n_ctx, width) if self.csc else (n_ctx, width)
                init = (torch.randn(shape, generator=g) * 0.02).to(device)
                prefix, n_phrase = " ".join(["X"] * n_ctx), n_ctx
            self.n_ctx = n_ctx
            tokens = bundle.tokenizer([f"{prefix} {c}." for c in self.classnames]).to(device)   # (C, L)
            eos = _eos_positions(tokens, self.tower)
            if int(eos.max()) >= self.tower.context_length - 1:
                worst = self.classnames[int(eos.argmax())]
                raise ValueError(f"prompt '{prefix} {worst}.' fills or overflows the text context length "
                                 f"{self.tower.context_length}; use a smaller n_ctx or a shorter class name")
            # SOS, the phrase's tokens, CLASS, "." (merged into a class name's own final '.'), EOS
            self.name_lens = (eos - 2 - n_phrase).tolist()
            if min(self.name_lens) < 1:
                raise ValueError(f"class name {self.classnames[int(eos.argmin())]!r} has no tokens of its own")
            if self.tower.attn_mask is not None and self.tower.pool_type in ("argmax", "eos"):
                tokens = tokens[:, :int(eos.max()) + 1]                                    # causal: rest unused
            embedded = emb(tokens).float()                                                  # (C, L, W)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", embedded[:, :1], persistent=False)            # SOS
        self.register_buffer("token_suffix", embedded[:, 1 + n_ctx:], persistent=False)    # CLASS . EOS pad
        init = init.to(ctx_dtype)
        self.register_buffer("ctx_initial", init.clone(), persistent=False)
        self.register_buffer("order", _layout(position, n_ctx, self.name_lens, tokens.shape[1]).to(device),
                             persistent=False)
        self.ctx = nn.Parameter(init.clone())
        self.fast = supports_shared_prefix(self.tower)        # False: always the plain full-sequence forward

    def __setattr__(self, name, value):
        if name in ("bundle", "tower"):        # plain references: the model is not a submodule of the learner
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def n_cls(self) -> int:
        return len(self.classnames)

    @torch.no_grad()
    def reset(self) -> None:
        """Restore the initial context (phrase embedding or the seeded random draw)."""
        self.ctx.copy_(self.ctx_initial)

    def prompts(self, ctx: Tensor | None = None) -> Tensor:
        """Token embeddings of the C prompts with the context spliced in: (C, L, W).

        ``ctx``: R contexts at once, (R, M, W) unified or (R, C, M, W) class-specific (batched CoOp),
        giving (R, C, L, W); ``None`` uses the learner's own context.
        """
        single = ctx is None
        ctx = self.ctx.unsqueeze(0) if single else ctx
        r, c = ctx.shape[0], self.n_cls
        ctx = (ctx if ctx.dim() == 4 else ctx.unsqueeze(1).expand(-1, c, -1, -1)).to(self.token_prefix.dtype)
        pre = self.token_prefix.unsqueeze(0).expand(r, -1, -1, -1)                        # (R, C, 1, W)
        suf = self.token_suffix.unsqueeze(0).expand(r, -1, -1, -1)                        # (R, C, S, W)
        out = torch.cat([pre, ctx, suf], dim=2)                                           # (R, C, L, W), end
        if self.position != "end":                                  # each class's positions reordered
            order = self.order.view(1, c, -1, 1).expand(r, -1, -1, out.shape[-1])
            out = torch.gather(out, 2, order)
        return out[0] if single else out

    @property
    def shared_prefix(self) -> int:
        """Leading positions identical for every class (SOS, plus the context before the class tokens if UC)."""
        if self.csc or self.n_cls < 2:
            return 0
        return 1 + {"end": self.n_ctx, "middle": self.n_ctx // 2, "front": 0}[self.position]

    def forward(self, normalize: bool = False) -> Tensor:
        """Class text features (C, D), unnormalised unless ``normalize``; differentiable in ``ctx`` only.

        With a unified context the shared prefix (SOS + the context before the class name) is encoded
        once (``encode_shared_prefix``), which gives the same features as the full forward.
        """
        p = self.shared_prefix if self.fast else 0
        prompts = self.prompts()                                                            # (C, L, W)
        if p >= 2:
            z = encode_shared_prefix(self.tower, prompts[:1, :p], prompts[:, p:], self.tokens)
        else:
            z = encode_token_embeddings(self.tower, prompts, self.tokens)
        z = z.float()
        return F.normalize(z, dim=-1) if normalize else z
