"""Vision-only readouts: answer the multiple-choice tasks from the image encoder alone.

Fu et al. read each task out of the VLM's own vision encoder (``hidden_in_plain_sight.md`` §3):
odd-one-out by [CLS]/embedding similarity (the odd image is the least similar to the others), art style
by Gram matrices G = F F^T of the last layer's patch features (the candidate whose Gram matrix is closest
to the reference's, in squared error), correspondence by the cosine similarity of the features
bilinearly interpolated at the reference point and at each candidate, depth by a probe trained on
patch features. The same functions run on the embedded CLIP (a ModifiedResNet: "patches" are the
cells of a stage's feature map), on open_clip ViTs (the patch tokens of the last transformer
block, [CLS] dropped) and on a LLaVA's vision tower (``vlmlab.blind.llava``: the patch tokens of
``vision_feature_layer``, the second-to-last block in LLaVA-1.5, the features its projector reads;
the doc's "last layer" for the Gram readout is not what the paper profile reads, docs/fidelity.md).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vlmlab.features import arrays_to_input
from vlmlab.models.bundle import ClipBundle


def tokens_to_grid(tokens: Tensor) -> Tensor:
    """(..., P, C) patch tokens on a square grid -> (..., C, H, W)."""
    side = int(round(tokens.shape[-2] ** 0.5))
    return tokens.transpose(-1, -2).reshape(*tokens.shape[:-2], tokens.shape[-1], side, side)


def _patch_module(visual: torch.nn.Module, layer: str | None = None):
    """The module whose output holds the patch features, and a function turning it into (N, C, H, W)."""
    if hasattr(visual, "layer4"):                               # open_clip ModifiedResNet: a stage's map
        return getattr(visual, layer or "layer4"), lambda out: out
    if hasattr(visual, "transformer"):                          # open_clip VisionTransformer
        if layer is None:
            return visual.transformer, lambda out: tokens_to_grid(out[:, 1:])            # drop [CLS]
        return visual.transformer.resblocks[int(layer)], lambda out: tokens_to_grid(out[:, 1:])
    raise TypeError(f"no patch features for {type(visual).__name__}; expected a ModifiedResNet or ViT tower")


@torch.inference_mode()
def feature_maps(bundle: ClipBundle, images: np.ndarray, layer: str | None = None,
                 batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Feature maps (N, C, H, W) of one image-tower block and unit embeddings (N, D), one forward pass.

    ``layer``: a ModifiedResNet stage (``"layer1"`` .. ``"layer4"``, default the last) or a ViT block
    index (default the transformer's output).
    """
    module, to_map = _patch_module(bundle.model.visual, layer)
    grabbed: list[Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: grabbed.append(to_map(out).float().cpu()))
    try:
        x = torch.from_numpy(np.ascontiguousarray(images))
        emb = [bundle.encode_images(arrays_to_input(bundle, x[i:i + batch_size])).cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        hook.remove()
    return torch.cat(grabbed), torch.cat(emb)


def patch_features(bundle: ClipBundle, images: np.ndarray, layer: str | None = None,
                   batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Patch features (N, P, C) of one image-tower block and unit embeddings (N, D), one forward pass."""
    maps, emb = feature_maps(bundle, images, layer, batch_size)
    return maps.flatten(2).transpose(1, 2), emb


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


def point_features(maps: Tensor, points: Tensor, image_size: int) -> Tensor:
    """Bilinear interpolation of (N, C, H, W) maps at (N, K, 2) pixel (x, y) points -> (N, K, C)."""
    grid = (points.float() + 0.5) / image_size * 2 - 1                      # pixel centres -> [-1, 1]
    out = torch.nn.functional.grid_sample(maps.float(), grid[:, :, None, :], mode="bilinear", align_corners=False)
    return out[..., 0].transpose(1, 2)


def correspondence_readout(ref_maps: Tensor, target_maps: Tensor, points: Tensor, image_size: int) -> Tensor:
    """(Q,) candidate whose interpolated feature is most cosine-similar to the reference point's.

    ``points`` (Q, 1 + K, 2): the reference point in the first image, then the K candidates in the second.
    """
    ref = point_features(ref_maps, points[:, :1], image_size)                  # (Q, 1, C)
    cand = point_features(target_maps, points[:, 1:], image_size)             # (Q, K, C)
    return torch.nn.functional.cosine_similarity(ref, cand, dim=-1).argmax(-1)


def side_features(maps: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 2, C): mean feature of the left and of the right half of the map."""
    w = maps.shape[-1]
    return torch.stack([maps[..., : w // 2].mean((-2, -1)), maps[..., (w + 1) // 2:].mean((-2, -1))], 1)


def box_features(maps: Tensor, boxes: Tensor, image_size: int) -> Tensor:
    """(N, C, H, W) maps and (N, K, 4) pixel boxes (x1, y1, x2, y2) -> (N, K, C) mean feature in each box.

    RoIAlign (bilinear samples, ``aligned=True``) averaged over a 4x4 grid of bins, so a box smaller than a
    patch still reads the features around it.
    """
    from torchvision.ops import roi_align

    n, k = boxes.shape[:2]
    index = torch.arange(n, dtype=torch.float32).repeat_interleave(k)[:, None]
    rois = torch.cat([index, torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)], 1)
    out = roi_align(maps.float(), rois, output_size=4, spatial_scale=maps.shape[-1] / image_size, sampling_ratio=2,
                    aligned=True)
    return out.mean((-2, -1)).view(n, k, -1)


def _pair(maps: Tensor, boxes: Tensor | None, image_size: int | None) -> np.ndarray:
    """The depth probe's input: feature of A minus feature of B (halves of the map, or the two boxes)."""
    f = side_features(maps) if boxes is None else box_features(maps, boxes, image_size)
    return (f[:, 0] - f[:, 1]).numpy()


def fit_depth_probe(train_maps: Tensor, train_answers: np.ndarray, C: float = 1.0, boxes: Tensor | None = None,
                    image_size: int | None = None):
    """Logistic-regression probe on patch features: A's feature minus B's -> is B closer?

    A and B are the left and right halves of the map (the world's depth task) or the two ``boxes`` (CV-Bench
    Depth). The analogue of the paper's depth head on patch features (a DPT head trained on NYUv2 there),
    trained on the task's training questions.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return probe.fit(_pair(train_maps, boxes, image_size), np.asarray(train_answers))


def depth_readout(probe, maps: Tensor, boxes: Tensor | None = None, image_size: int | None = None) -> Tensor:
    """(Q,) 0 if object A is predicted closer, 1 if object B."""
    return torch.from_numpy(probe.predict(_pair(maps, boxes, image_size))).long()
