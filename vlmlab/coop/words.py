"""Nearest vocabulary words of learned context vectors (CoOp §"Interpreting the learned prompts").

For each context vector v_m (M rows of width W), the k token-embedding rows e_j closest in
Euclidean distance ||v_m - e_j||_2 (``torch.cdist``), decoded to words with the model's BPE
vocabulary. Reference checked: KaiyangZhou/CoOp ff61507 ``interpret_prompt.py`` (which hard-codes
RN50's table; here the bundle's own table is searched, 49,408 rows for every CLIP tokenizer).
CoOp only interprets unified context; a class-specific context (C, M, W) is read row by row here.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch
from torch import Tensor

from vlmlab.models.bundle import ClipBundle
from vlmlab.prompts import text_tower


def vocabulary(bundle: ClipBundle) -> dict[int, str]:
    """Token id -> readable word piece (byte-level BPE symbols mapped back to text, ``</w>`` dropped)."""
    from vlmlab.models.openclip import tokenizer_vocab

    vocab = tokenizer_vocab(bundle)
    byte_decoder = getattr(bundle.tokenizer, "byte_decoder", None)
    if not byte_decoder:
        return vocab
    out = {}
    for i, s in vocab.items():
        try:
            out[i] = bytearray(byte_decoder[ch] for ch in s).decode("utf-8", errors="replace")
        except KeyError:
            out[i] = s
    return out


def nearest_words(context_vectors: Tensor, k: int = 3, bundle: ClipBundle | None = None, *,
                  table: Tensor | None = None, vocab: Mapping[int, str] | None = None) -> list[list[tuple[str, float]]]:
    """The ``k`` nearest vocabulary words of each context vector.

    Args:
        context_vectors: (M, W) (or (W,)) learned context.
        k: words per vector.
        bundle: where the token-embedding table and vocabulary come from (unless both are given).
        table: (V, W) token embeddings. vocab: token id -> word.
    Returns:
        M lists of ``(word, distance)``, nearest first.
    """
    if table is None or vocab is None:
        if bundle is None:
            raise ValueError("nearest_words needs a bundle, or both table= and vocab=")
        table = text_tower(bundle).token_embedding.weight if table is None else table
        vocab = vocabulary(bundle) if vocab is None else vocab
    ctx = context_vectors.detach().float().reshape(-1, context_vectors.shape[-1])       # (M, W)
    emb = table.detach().float().to(ctx.device)                                          # (V, W)
    if emb.shape[1] != ctx.shape[1]:
        raise ValueError(f"context width {ctx.shape[1]} != token-embedding width {emb.shape[1]}: the context "
                         f"was learned on another model")
    dist = torch.cdist(ctx, emb)                                                         # (M, V)
    d, idx = dist.topk(min(k, emb.shape[0]), dim=1, largest=False)
    return [[(vocab.get(int(j), f"<{int(j)}>"), float(x)) for j, x in zip(row_i, row_d)]
            for row_i, row_d in zip(idx.tolist(), d.tolist())]


def nearest_words_table(ctx: Tensor, k: int, bundle: ClipBundle, **columns) -> pd.DataFrame:
    """Long table (``columns``..., class_index, ctx_index, rank, word, distance) of a learned context.

    ``ctx``: (M, W) unified or (C, M, W) class-specific (class_index -1 for unified).
    """
    rows = []
    blocks = [(-1, ctx)] if ctx.dim() == 2 else list(enumerate(ctx))
    for c, block in blocks:
        for m, words in enumerate(nearest_words(block, k, bundle)):
            rows += [{**columns, "class_index": c, "ctx_index": m + 1, "rank": r + 1, "word": w, "distance": d}
                     for r, (w, d) in enumerate(words)]
    return pd.DataFrame(rows)
