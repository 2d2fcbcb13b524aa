"""Vision-only readouts: answer the multiple-choice tasks from the image encoder alone.

Fu et al. read each task out of the VLM's own vision encoder (``hidden_in_plain_sight.md`` §3):
odd-one-out by [CLS]/embedding similarity (the odd image is the least similar to the others), art style
by Gram matrices G = F F^T of the last layer's patch features (the candidate whose Gram matrix is closest
to the reference's, in squared error). The same functions run on the embedded CLIP (a ModifiedResNet:
"patches" are the cells of its last feature map, before the attention pool) and on open_clip ViTs
(the patch tokens of the last transformer block, [CLS] dropped).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vlmlab.features import arrays_to_input
from vlmlab.models.bundle import ClipBundle


def _patch_module(visual: torch.nn.Module):
    if hasattr(visual, "layer4"):                               # open_clip ModifiedResNet
        return visual.layer4, lambda out: out.flatten(2).transpose(1, 2)            # (N, HW, C)
    if hasattr(visual, "transformer"):                          # open_clip VisionTransformer
        return visual.transformer, lambda out: out[:, 1:]                          # drop [CLS]
    raise TypeError(f"no patch features for {type(visual).__name__}; expected a ModifiedResNet or ViT tower")


@torch.inference_mode()
def patch_features(bundle: ClipBundle, images: np.ndarray, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Patch features (N, P, C) of the last image-tower block and unit embeddings (N, D), one forward pass."""
    module, to_patches = _patch_module(bundle.model.visual)
    grabbed: list[Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: grabbed.append(to_patches(out).float().cpu()))
    try:
        x = torch.from_numpy(np.ascontiguousarray(images))
        emb = [bundle.encode_images(arrays_to_input(bundle, x[i:i + batch_size])).cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        hook.remove()
    return torch.cat(grabbed), torch.cat(emb)


def gram_matrices(patches: Tensor) -> Tensor:
    """G = F^T F / P per image, for patch features F (N, P, C) -> (N, C, C)."""
    return patches.transpose(1, 2) @ patches / patches.shape[1]


def odd_one_out_readout(embeddings: Tensor) -> Tensor:
    """(Q, K, D) unit embeddings -> (Q,) index of the image least similar, in sum of cosines, to the rest."""
    sim = embeddings @ embeddings.transpose(1, 2)
    return (sim.sum(-1) - sim.diagonal(dim1=1, dim2=2)).argmin(-1)


def style_readout(grams: Tensor) -> Tensor:
    """(Q, 1 + K, C, C) Gram matrices, reference first -> (Q,) candidate closest to it in squared error."""
    err = ((grams[:, 1:] - grams[:, :1]) ** 2).flatten(2).sum(-1)
    return err.argmin(-1)
