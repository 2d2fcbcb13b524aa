"""Class text features of R CoOp contexts in one pass of the frozen text tower (batched CoOp).

For R runs with the same classes, prompt r of class c is t_rc = [prefix_r | suffix_rc]: with a unified
context the first P positions (SOS + the context before the class name) are the same for every class
of run r; with a class-specific context (or the class name in front) only SOS is (P = 1). Under the
causal mask those positions only attend to each other, so (exactly):

    prefix_r runs through the tower once per run (batch R, as ``vlmlab.prompts.encode_shared_prefix``);
    each block's queries/keys/values of the prefix, Q_r, K_r = LN(x_r) W_k, V_r = LN(x_r) W_v, are computed
    once per run: they give the prefix's own causal attention and K_r, V_r are shared by its C class rows
    (not recomputed per row); scores = [q K_r^T | q K_rc^T + causal]; the last block is evaluated at the
    readout (EOS) token only, the one position ``ln_final`` pools.

The attention is written out (softmax(q k^T / sqrt(d_h)) v per head), the same formula as
``nn.MultiheadAttention`` with open_clip's ``ResidualAttentionBlock`` around it (the prefix's too: CPU
flash attention's backward takes 0.6 ms per call in bf16 at these sizes, 6x its fp32 time); results equal
``PromptLearner.forward`` up to float rounding (``tests/test_coop_batched.py``). The readout-only last
block is most of the gain for a class-specific context (each row's L positions pass L - 1 blocks fully and
the last one at its EOS only). Towers this does not cover (no causal mask, custom blocks) take the plain
full forward over the R x C prompts.

With the context at the end, the suffix (CLASS . EOS) holds no context: it enters as a constant, so the
(R, C, L, W) prompt tensor and the gradient of the first block's suffix rows are never built
(``prompt_parts``); the result is unchanged to the bit (``tests/test_coop_batched.py``; notebook 03 gave
the same tables and final losses). In bf16 on the embedded model this makes an end-context step 1.06-1.12x
faster (old and new code alternated in one process, 1-15 runs per step); at notebook 03's scale the gain
is inside this VM's run-to-run noise.

Runs of other class lists (other datasets, one prompt design) stack as pieces
(``stacked_text_features``): the prefixes along the runs, every piece's class rows flattened into one
(N, S, W) batch with the suffixes zero-padded to the longest, so the step's small operations run once for
all datasets; in the prefix attention each row attends to its own run's keys and values, copied to the
rows (``_row_runs``). One piece is the same arithmetic as before, to the bit (notebook 03 with
``stack_runs: dataset`` reproduced the shipped runs' accuracies and final losses).

``train_coop``'s step calls it with one context (R = 1), so a run trained alone and the same run trained in
a group take the same arithmetic; ``PromptLearner.forward`` (evaluation, TPT) keeps the plainer
``encode_shared_prefix`` path.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmlab.prompts import (PromptLearner, _cast_dtype, _eos_positions, encode_token_embeddings, frozen,
                            supports_shared_prefix)


def prefix_length(learner: PromptLearner) -> int:
    """Leading positions shared by every class row of a run: SOS + the context before the class name
    (unified context), else SOS alone (class-specific context, class token in front)."""
    return max(1, learner.shared_prefix)


def supports_prefix_groups(learner: PromptLearner) -> bool:
    """Causal tower, EOS readout, plain blocks with packed q/k/v projections (any prompt design)."""
    if not (learner.fast and supports_shared_prefix(learner.tower)):
        return False
    return all(b.attn._qkv_same_embed_dim and b.attn.bias_k is None and not b.attn.add_zero_attn
               for b in learner.tower.transformer.resblocks)


def _split_heads(x: Tensor, h: int) -> Tensor:
    """(..., T, W) -> (..., H, T, W/H)."""
    return x.unflatten(-1, (h, x.shape[-1] // h)).transpose(-3, -2)


def _qkv(attn: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def _pieces(x: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """Rows (N, ...) split into the pieces' (R_d, C_d, ...) views, N = sum R_d C_d (rows run-major)."""
    out, o = [], 0
    for r, c in sizes:
        out.append(x[o:o + r * c].unflatten(0, (r, c)))
        o += r * c
    return out


def _row_runs(sizes: Sequence[tuple[int, int]], device=None) -> Tensor:
    """The run of each class row (N,), rows run-major: piece d's R_d runs each hold C_d rows."""
    per_run = torch.tensor([c for r, c in sizes for _ in range(r)], device=device)     # (R,) classes of each run
    return torch.repeat_interleave(torch.arange(len(per_run), device=device), per_run)


def _attend(attn: nn.MultiheadAttention, q: Tensor, kp: Tensor, vp: Tensor, ks: Tensor, vs: Tensor,
            mask: Tensor, runs: Tensor | None) -> Tensor:
    """Attention of the suffix queries to [prefix | suffix] keys, heads split.

    q (N, H, T, d): the class rows of every piece, run-major; kp, vp (R, H, P, d): the runs' prefixes;
    ks, vs (N, H, S, d); mask broadcastable to (N, H, T, S); ``runs`` (N,): each row's run (``_row_runs``),
    so that rows of run r attend to run r's prefix, or None for one piece (R runs of the same C classes),
    whose rows are contracted with the R prefixes directly. Several pieces copy each run's prefix keys/values
    to its rows and take one product for all (one batched matrix product instead of one per piece: 1.15-1.2x
    a bf16 step of 12 runs over notebook 03's 6 datasets; the gradient's error against fp32's is the same,
    0.9-1.0 % in bf16, both ways). Returns (N, T, W) after the output projection.
    """
    q = q / math.sqrt(q.shape[-1])
    r, p = kp.shape[0], kp.shape[-2]
    if runs is None:
        s_p = torch.einsum("rchtd,rhpd->rchtp", q.unflatten(0, (r, -1)), kp).flatten(0, 1)  # (N, H, T, P)
    else:
        kp, vp = kp.index_select(0, runs), vp.index_select(0, runs)                     # (N, H, P, d)
        s_p = q @ kp.transpose(-1, -2)
    s_s = q @ ks.transpose(-1, -2) + mask                                               # (N, H, T, S)
    a = torch.softmax(torch.cat([s_p, s_s], dim=-1), dim=-1)
    if runs is None:
        out_p = torch.einsum("rchtp,rhpd->rchtd", a[..., :p].unflatten(0, (r, -1)), vp).flatten(0, 1)
    else:
        out_p = a[..., :p] @ vp
    out = out_p + a[..., p:] @ vs                                                       # (N, H, T, d)
    return F.linear(out.transpose(-3, -2).flatten(-2), attn.out_proj.weight, attn.out_proj.bias)


def _block(blk, xp: Tensor, xs: Tensor, mask: Tensor, runs: Tensor | None,
           q_at: Tensor | None = None) -> tuple[Tensor | None, Tensor]:
    """One residual block on the prefixes xp (R, P, W) and the class rows' suffixes xs (N, S, W).

    ``mask`` (L, L) is the causal mask of the whole prompt; ``runs``: each class row's run, or None for one
    piece (``_attend``). The prefix's q/k/v are computed once: its
    keys/values serve its own causal attention and every class row's. ``q_at`` (N,): the last block,
    evaluated only at that suffix position per row (the readout): returns (None, (N, 1, W)); else
    (the prefixes' output (R, P, W), the suffixes' (N, S, W)).
    """
    attn, h, p = blk.attn, blk.attn.num_heads, xp.shape[-2]
    qp, kp, vp = _qkv(attn, blk.ln_1(xp))                                               # (R, P, W)
    qs, ks, vs = _qkv(attn, blk.ln_1(xs))                                               # (N, S, W)
    qp, kp, vp = _split_heads(qp, h), _split_heads(kp, h), _split_heads(vp, h)          # (R, H, P, d)
    ms = mask[p:, p:]
    if q_at is not None:
        rows = torch.arange(len(q_at), device=xs.device)
        xs, qs, ms = xs[rows, q_at].unsqueeze(1), qs[rows, q_at].unsqueeze(1), ms[q_at].unsqueeze(1)
        ms = ms.unsqueeze(1)                                                            # (N, 1, 1, S)
    out = _attend(attn, _split_heads(qs, h), kp, vp, _split_heads(ks, h), _split_heads(vs, h), ms, runs)
    xs = xs + blk.ls_1(out)
    xs = xs + blk.ls_2(blk.mlp(blk.ln_2(xs)))
    if q_at is not None:
        return None, xs
    a = torch.softmax(qp @ kp.transpose(-1, -2) / math.sqrt(qp.shape[-1]) + mask[:p, :p], dim=-1)   # (R, H, P, P)
    out = F.linear((a @ vp).transpose(-3, -2).flatten(-2), attn.out_proj.weight, attn.out_proj.bias)
    xp = xp + blk.ls_1(out)
    return xp + blk.ls_2(blk.mlp(blk.ln_2(xp))), xs


def _project(tower, x: Tensor) -> Tensor:
    proj = tower.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


def encode_prefix_groups(learners: Sequence[PromptLearner], prefixes: Sequence[Tensor],
                         suffixes: Sequence[Tensor]) -> list[Tensor]:
    """Unnormalised features, one (R_d, C_d, D) per piece, of prompts [prefix_r | suffix_rc].

    A piece is R_d runs of one learner (one class list): prefixes (R_d, P, W) shared by a run's classes,
    suffixes (R_d, C_d, S_d, W) (``prompt_parts``). Pieces of other class lists (other datasets) stack into
    one pass: the prefixes (P equal) along the runs, the class rows flattened, suffixes zero-padded to the
    longest S (after each row's EOS, so under the causal mask no readout sees the padding).
    """
    tower, p = learners[0].tower, prefixes[0].shape[1]
    if any(l.bundle is not learners[0].bundle for l in learners) or any(x.shape[1] != p for x in prefixes):
        raise ValueError("encode_prefix_groups: the pieces must share the text tower and the prefix length")
    s = max(x.shape[2] for x in suffixes)
    length = p + s
    cast = _cast_dtype(tower, prefixes[0])
    pos = tower.positional_embedding[:length].detach().to(cast)
    mask = tower.attn_mask[:length, :length]
    mask = (torch.zeros(mask.shape, dtype=cast, device=mask.device).masked_fill(mask, -math.inf)
            if mask.dtype == torch.bool else mask.to(cast))                            # True = blocked, as in MHA
    sizes = [tuple(x.shape[:2]) for x in suffixes]
    eos = [(_eos_positions(l.tokens, tower) - p).repeat(r)                             # (R_d C_d,) run-major,
           for l, (r, _) in zip(learners, sizes)]                                      # in the suffix
    rows = [(F.pad(x, (0, 0, 0, s - x.shape[2])) if x.shape[2] < s else x).flatten(0, 1)
            for x in suffixes]                                                          # (R_d C_d, S, W)
    one = len(suffixes) == 1
    runs = None if one else _row_runs(sizes, prefixes[0].device)                        # (N,) each row's run
    blocks = list(tower.transformer.resblocks)
    with frozen(tower):
        xp = (prefixes[0] if one else torch.cat(list(prefixes))).to(cast) + pos[:p]    # (R, P, W)
        xs = (rows[0] if one else torch.cat(rows)).to(cast) + pos[p:]                   # (N, S, W)
        q_at = eos[0] if one else torch.cat(eos)
        for i, blk in enumerate(blocks):
            xp, xs = _block(blk, xp, xs, mask, runs, q_at=q_at if i == len(blocks) - 1 else None)
        z = _project(tower, tower.ln_final(xs[:, 0]))                                   # (N, D)
    return _pieces(z, sizes)


def prompt_parts(learner: PromptLearner, ctx: Tensor) -> tuple[Tensor, Tensor]:
    """R contexts' prompts split into the per-run prefixes (R, P, W) and the class rows' suffixes (R, C, S, W).

    A unified context at the end leaves the suffix (CLASS . EOS) free of the context: it is taken from the
    token embeddings as a constant, so no gradient is computed for it (the (R, C, L, W) prompt tensor and
    the backward of the first block's suffix rows are skipped; the gradient to the context is unchanged).
    """
    p = prefix_length(learner)
    if learner.position == "end" and not learner.csc and p == 1 + learner.n_ctx:
        sos = learner.token_prefix[:1].expand(ctx.shape[0], -1, -1)                     # (R, 1, W)
        return (torch.cat([sos, ctx.to(sos.dtype)], dim=1),
                learner.token_suffix.unsqueeze(0).expand(ctx.shape[0], -1, -1, -1))
    prompts = learner.prompts(ctx)                                                      # (R, C, L, W)
    return prompts[:, 0, :p], prompts[:, :, p:]


def text_features(learner: PromptLearner, ctx: Tensor) -> Tensor:
    """Unit class features (R, C, D) of R contexts: the batched ``learner(normalize=True)``."""
    return stacked_text_features([learner], [ctx])[0]


def stacked_text_features(learners: Sequence[PromptLearner], ctxs: Sequence[Tensor]) -> list[Tensor]:
    """Unit class features of several pieces in one pass: piece d is R_d contexts ``ctxs[d]`` of learner d
    (its own classes), giving (R_d, C_d, D). The learners share the tower and the prompt design."""
    if all(supports_prefix_groups(l) for l in learners):
        parts = [prompt_parts(l, c) for l, c in zip(learners, ctxs)]
        zs = encode_prefix_groups(learners, [p for p, _ in parts], [s for _, s in parts])
    else:
        zs = []
        for learner, ctx in zip(learners, ctxs):
            prompts = learner.prompts(ctx)                                              # (R, C, L, W)
            z = encode_token_embeddings(learner.tower, prompts.flatten(0, 1), learner.tokens.repeat(len(ctx), 1))
            zs.append(z.unflatten(0, (len(ctx), learner.n_cls)))
    return [F.normalize(z.float(), dim=-1) for z in zs]
