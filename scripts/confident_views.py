"""How the confident-view readout of TPT, ZERO and TDA's multi-view setting behaves on notebook 02's streams.

For each corruption, the first ``--n`` images of the embedded profile's stream, 64 views each, two kinds of view:
``crops`` (TPT's ImageNet views: random resized crops and flips, ``vlmlab.tta.base.encode_item_views``) and ``augmix``
(TDA's A/V/R/S views, ``vlmlab.tta.base.encode_augmix_views``). Prints the accuracy of the image alone (view 0),
of the mean logits of all views, and of the mean logits of the 10 % lowest-entropy views (the readout of
TPT, ZERO and TDA), and how many images that readout gives to its most frequent class.

    python scripts/confident_views.py --corruptions gaussian_noise contrast brightness --n 160
"""
from __future__ import annotations

import argparse

import torch

from vlmlab.data.sources import corrupted, load_source
from vlmlab.metrics import softmax_entropy_from_logits
from vlmlab.models import load_clip
from vlmlab.params import load
from vlmlab.prompts import zero_shot_weights
from vlmlab.tta.base import encode_augmix_views, encode_item_views, image_source


def readouts(z: torch.Tensor, y: torch.Tensor, fraction: float = 0.1) -> dict[str, float]:
    """Accuracies of view 0, the mean of all views and the mean of the confident views; z: (N, V, C) logits."""
    keep = softmax_entropy_from_logits(z).argsort(1)[:, :int(z.shape[1] * fraction)]        # (N, k)
    confident = torch.gather(z, 1, keep[..., None].expand(-1, -1, z.shape[2])).mean(1)
    acc = lambda logits: 100.0 * float((logits.argmax(1) == y).double().mean())             # noqa: E731
    return {"view 0": acc(z[:, 0]), "all views": acc(z.mean(1)), "confident": acc(confident),
            "top class share": float(torch.bincount(confident.argmax(1)).max()) / len(y)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corruptions", nargs="+", default=["gaussian_noise", "contrast", "brightness"])
    ap.add_argument("--n", type=int, default=160, help="images per corruption")
    ap.add_argument("--seed", type=int, default=0, help="the views' seed")
    ap.add_argument("--logit-scale", type=float, default=100.0,
                    help="TDA's 100 (default); 0 = the model's (TPT's and ZERO's)")
    args = ap.parse_args()
    P = load("02_uniinfo_tta", "embedded", {})
    bundle = load_clip(P.model, P.pretrained, "cpu", precision=P.precision)
    clean = load_source(P.source, n=P.n_images, seed=P.seed, classnames=P.classnames)
    text = zero_shot_weights(bundle, list(clean.classnames), P.template, mode=P.text_mode).cpu()
    scale = args.logit_scale or bundle.logit_scale
    print("| corruption | views | view 0 | all views | confident 10 % | top class share |\n|---|---|--:|--:|--:|--:|")
    for corruption in args.corruptions:
        ds = corrupted(P.source, clean, corruption, P.severity, n=P.n_images, seed=P.seed, corruption_seed=P.seed)
        src, idx = image_source(bundle, ds), torch.arange(min(args.n, len(ds.labels)))
        y = torch.as_tensor(ds.labels)[idx]
        parts = [idx[i:i + 16] for i in range(0, len(idx), 16)]
        kinds = {"crops": lambda p: encode_item_views(bundle, src, p, 64, args.seed),
                 "augmix": lambda p: encode_augmix_views(bundle, src, p, 64, args.seed)}
        for kind, encode in kinds.items():
            r = readouts(scale * torch.cat([encode(p) for p in parts]) @ text.T, y)
            print(f"| {corruption} | {kind} | {r['view 0']:.1f} | {r['all views']:.1f} | {r['confident']:.1f} | "
                  f"{r['top class share']:.2f} |")


if __name__ == "__main__":
    main()
