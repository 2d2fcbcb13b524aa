"""LoRA for open_clip image towers, placed as UniInfo places it (Adachi et al., arXiv:2505.12912).

A LoRA linear layer keeps its pretrained weight W0 (out, in) frozen and learns A (r, in), B (out, r):
    y = x (W0 + s B A)^T + b,   s = alpha / sqrt(r)          (r = 16, alpha = 2: s = 0.5)
A is Kaiming-uniform (a = sqrt 5), B is zero, so the adapted model starts equal to the frozen one.
Reference checked: kzkadc/uninfo ``loralib/layers.py`` (``LinearLoRA``, ``PlainMultiheadAttentionLoRA``,
scaling alpha/sqrt(r), bias frozen) and ``lora_utils.py`` (``vit_to_lora``; trainable = names
containing ``lora_``). Gradient (``backward``): the reference's forward adds s B A to a detached
W0, runs the layer, then subtracts s B A from the weight *in place through* ``.data``, so the
gradient sent to the layer's input is computed with the stale W0 (dL/dx = g W0, not
g (W0 + s B A)); the gradients of A and B are exact. ``backward="reference"`` (default, what the
published numbers come from) reproduces this as y = x W0^T + b + x.detach() (s B A)^T;
``backward="exact"`` differentiates y = x (W0 + s B A)^T + b. We do not use peft: its adapter on
``nn.MultiheadAttention`` is one LoRA on the fused in_proj, scaled alpha/r, which is a different
adapter (884,736 parameters on ViT-B-16 instead of 1,179,648; practical_notes.md addendum).

Placement (``apply_lora``):
  * open_clip ``VisionTransformer``: every ``nn.MultiheadAttention`` in
    ``transformer.resblocks`` becomes :class:`LoRAMultiheadAttention`, with separate q, k, v
    projections split from ``in_proj_weight`` and the out projection, LoRA on all four.
    ViT-B-16: 12 blocks x 4 x 16 x (768 + 768) = 1,179,648 trainable parameters.
  * open_clip ``ModifiedResNet`` (the embedded model): its only attention layer,
    ``attnpool``, becomes :class:`LoRAAttentionPool` (the same computation, through the
    projections' own forward) with LoRA on ``q_proj``, ``k_proj``, ``v_proj`` and ``c_proj``
    (the same q, k, v, out placement). ``extra="bn"`` also trains the affine weight and bias of every
    BatchNorm (running statistics stay frozen; the model stays in eval mode), an option for
    towers whose attention pool alone cannot move the embeddings enough.

``frozen_prefix(visual)`` splits a tower into the part before the first adapted module (computed
once, without gradient, and shared by student and teacher) and the adapted rest.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BACKWARDS = ("reference", "exact")

__all__ = ["LoRALinear", "LoRAMultiheadAttention", "LoRAAttentionPool", "BACKWARDS", "apply_lora", "lora_parameters", "merge_lora",
           "frozen_prefix", "trainable_count"]


class LoRALinear(nn.Module):
    """``nn.Linear`` with a frozen weight and a trainable low-rank update.

    Args:
        base: the pretrained layer; its weight and bias are copied and frozen.
        r: rank. alpha: LoRA alpha; the update is scaled by ``alpha / sqrt(r)`` (UniInfo's loralib).
        backward: ``"reference"`` (input gradient through the stale W0, as loralib) or ``"exact"``.
    """

    def __init__(self, base: nn.Linear, r: int = 16, alpha: float = 2.0, backward: str = "reference"):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        if backward not in BACKWARDS:
            raise ValueError(f"LoRA backward {backward!r}: use one of {BACKWARDS} (module docstring)")
        self.backward = backward
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight0 = nn.Parameter(base.weight.detach().clone(), requires_grad=False)      # (out, in)
        self.bias = (nn.Parameter(base.bias.detach().clone(), requires_grad=False)
                     if base.bias is not None else None)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))                   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=base.weight.dtype,
                                               device=base.weight.device))                   # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.r, self.alpha, self.scaling = r, alpha, alpha / math.sqrt(r)

    @property
    def weight(self) -> Tensor:
        """W0 + s B A, (out, in); differentiable in A and B."""
        return self.weight0 + self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        if self.backward == "exact":
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight0, self.bias) + F.linear(x.detach(), self.scaling * (self.lora_B @ self.lora_A))

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding W0 + s B A (no LoRA parameters)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight0.device, dtype=self.weight0.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling:g}"


class LoRAMultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` (self- or cross-attention, no dropout) with LoRA q, k, v, out.

    Called like the module it replaces: ``attn(q, k, v, need_weights=False, attn_mask=None)``
    returns ``(output, None)``. Inputs are (B, L, E) when ``batch_first`` else (L, B, E).
    """

    def __init__(self, mha: nn.MultiheadAttention, r: int = 16, alpha: float = 2.0, backward: str = "reference"):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise NotImplementedError("LoRAMultiheadAttention supports the plain CLIP attention only "
                                      "(kdim = vdim = embed_dim, no bias_k/v, no zero attention)")
        e = mha.embed_dim
        self.embed_dim, self.num_heads, self.batch_first = e, mha.num_heads, mha.batch_first
        w, b = mha.in_proj_weight.detach(), mha.in_proj_bias
        projections = []
        for i in range(3):
            lin = nn.Linear(e, e, bias=b is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w[i * e:(i + 1) * e])
                if b is not None:
                    lin.bias.copy_(b.detach()[i * e:(i + 1) * e])
            projections.append(LoRALinear(lin, r, alpha, backward))
        self.q_proj, self.k_proj, self.v_proj = projections
        self.out_proj = LoRALinear(mha.out_proj, r, alpha, backward)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                need_weights: bool = False, attn_mask: Tensor | None = None, **_) -> tuple[Tensor, None]:
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:                                 # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, e = query.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:                          # (B, L, E) -> (B, h, L, E/h)
            return t.reshape(b, t.shape[1], h, e // h).transpose(1, 2)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        mask = attn_mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)           # (B, h, Lq, E/h)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, e))              # (B, Lq, E)
        return (out if self.batch_first else out.transpose(0, 1)), None


class LoRAAttentionPool(nn.Module):
    """open_clip's ``AttentionPool2d`` with LoRA q, k, v, c projections called through their forward.

    Same output as ``AttentionPool2d.forward`` (mean token + positional embedding, attention from
    the mean token to all tokens), but the projections run as modules, so a LoRA layer's
    ``backward`` mode applies (``F.multi_head_attention_forward`` would only read ``.weight``).
    """

    def __init__(self, pool: nn.Module, r: int = 16, alpha: float = 2.0, backward: str = "reference"):
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.num_heads = pool.num_heads
        for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
            setattr(self, name, LoRALinear(getattr(pool, name), r, alpha, backward))

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).permute(0, 2, 1)                                       # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)                  # (B, HW + 1, C)
        x = x + self.positional_embedding[None].to(x.dtype)
        b, n, e = x.shape
        h = self.num_heads
        q = self.q_proj(x[:, :1]).reshape(b, 1, h, e // h).transpose(1, 2)      # (B, h, 1, E/h)
        k, v = (p(x).reshape(b, n, h, e // h).transpose(1, 2) for p in (self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)                          # (B, h, 1, E/h)
        return self.c_proj(out.transpose(1, 2).reshape(b, e))                   # (B, out)


def _is_vit(visual: nn.Module) -> bool:
    return hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks")


def _is_modified_resnet(visual: nn.Module) -> bool:
    return hasattr(visual, "attnpool") and all(hasattr(visual.attnpool, n) for n in ("q_proj", "k_proj", "v_proj", "c_proj"))


def apply_lora(visual: nn.Module, r: int = 16, alpha: float = 2.0, extra: str = "none",
               backward: str = "reference") -> list[nn.Parameter]:
    """Freeze ``visual`` and add LoRA in place (placement: module docstring).

    Args:
        visual: an open_clip image tower (``model.visual``): ``VisionTransformer`` or ``ModifiedResNet``.
        r, alpha: LoRA rank and alpha (scaling alpha / sqrt(r)).
        extra: ``"none"`` (UniInfo) or ``"bn"`` (ModifiedResNet only: also BatchNorm affine parameters).
        backward: LoRA input gradient, ``"reference"`` (loralib's stale W0) or ``"exact"``.
    Returns:
        The trainable parameters, in module order.
    """
    if extra not in ("none", "bn"):
        raise ValueError(f"extra={extra!r}; use 'none' (UniInfo's placement) or 'bn'")
    for p in visual.parameters():
        p.requires_grad_(False)
    if _is_vit(visual):
        if extra != "none":
            raise ValueError("extra='bn' needs a BatchNorm tower (ModifiedResNet); a ViT has none")
        for block in visual.transformer.resblocks:
            if not isinstance(block.attn, nn.MultiheadAttention):
                raise TypeError(f"{type(block).__name__}.attn is {type(block.attn).__name__}, not "
                                "nn.MultiheadAttention; apply_lora supports open_clip's ResidualAttentionBlock")
            block.attn = LoRAMultiheadAttention(block.attn, r, alpha, backward)
    elif _is_modified_resnet(visual):
        visual.attnpool = LoRAAttentionPool(visual.attnpool, r, alpha, backward)
        if extra == "bn":
            for m in visual.modules():
                if isinstance(m, nn.BatchNorm2d) and m.affine:
                    m.weight.requires_grad_(True)
                    m.bias.requires_grad_(True)
    else:
        raise TypeError(f"apply_lora: unsupported image tower {type(visual).__name__}; expected open_clip's "
                        "VisionTransformer (transformer.resblocks) or ModifiedResNet (attnpool)")
    return [p for p in visual.parameters() if p.requires_grad]


def lora_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable parameters by name (LoRA A/B, plus BN affine with ``extra='bn'``)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def trainable_count(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA update into plain layers, in place; returns ``module``.

    ``LoRALinear`` becomes ``nn.Linear`` (W0 + s B A); ``LoRAMultiheadAttention`` becomes an
    ``nn.MultiheadAttention`` with the three projections fused back into ``in_proj_weight``.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        elif isinstance(child, LoRAMultiheadAttention):
            e = child.embed_dim
            q, k, v, o = (child.q_proj.merged(), child.k_proj.merged(), child.v_proj.merged(), child.out_proj.merged())
            mha = nn.MultiheadAttention(e, child.num_heads, bias=q.bias is not None, batch_first=child.batch_first,
                                        device=q.weight.device, dtype=q.weight.dtype)
            with torch.no_grad():
                mha.in_proj_weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                if q.bias is not None:
                    mha.in_proj_bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
                mha.out_proj.weight.copy_(o.weight)
                if o.bias is not None:
                    mha.out_proj.bias.copy_(o.bias)
            setattr(module, name, mha)
        else:
            merge_lora(child)
    return module


def frozen_prefix(visual: nn.Module) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """Split an adapted tower into ``(prefix, head)`` with ``head(prefix(x)) == visual(x)``.

    ``prefix`` holds no trainable parameter, so its output can be computed once per batch
    under ``no_grad`` and shared by a student and its EMA teacher (same frozen weights).
    ModifiedResNet with LoRA on ``attnpool`` only: prefix = stem + layers 1-4, head = attnpool.
    Anything else (a ViT, or ``extra='bn'``): prefix = identity, head = the whole tower.
    """
    if _is_modified_resnet(visual) and not any(p.requires_grad for n, p in visual.named_parameters()
                                               if not n.startswith("attnpool.")):
        def prefix(x: Tensor) -> Tensor:
            x = visual.stem(x)
            for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                x = layer(x)
            return x                                                           # (B, C, H', W')
        return prefix, lambda h: visual.attnpool(h)
    return (lambda x: x), (lambda x: visual(x))

