"""Distribution gap between two image sets: FID and a set-level LPIPS-style distance.

Bahng et al. (arXiv:2203.17274) relate each downstream dataset's visual-prompting gain to its gap
from the pretraining data (ImageNet as a proxy) measured by FID (Heusel et al., arXiv:1706.08500)
and LPIPS (Zhang et al., arXiv:1801.03924). The official repository has no code for either and the
protocol (images per set, pairing, network) is not published (../shared/papers/visual_prompting.md
§8), so vlmlab defines it here:

    FID(A, B)  = ||mu_A - mu_B||^2 + Tr(S_A + S_B - 2 (S_A S_B)^{1/2})   on pooled features
                 (``vlmlab.metrics.frechet_distance``)
    d(x, y)    = mean_l mean_{c,h,w} (phi^l(x)/||phi^l(x)||_c - phi^l(y)/||phi^l(y)||_c)^2
                 (``vlmlab.metrics.perceptual_distance``: channel-normalised maps, unlearned weights)
    cross      = E_{a in A, b in B} d(a, b)            mean over all (or n random) cross pairs
    within_X   = E_{x, x' in X} d(x, x')               the same inside one set (pairs i == j included)
    LPIPS-gap  = cross - (within_A + within_B) / 2     (energy-distance form; the ``lpips`` column)
Unpaired sets have no natural pairing, and ``cross`` alone is > 0 even for a set against itself
(it measures the diversity of the sets as much as their gap). The energy form is 0 for identical
sets, symmetric, and >= 0. Because d is a squared Euclidean distance in the space of the
concatenated normalised maps Phi(x) (layer l scaled by 1/sqrt(L C_l H_l W_l)), the all-pairs means
have a closed form: cross = E||Phi_a||^2 + E||Phi_b||^2 - 2 <mu_A, mu_B> and LPIPS-gap =
||mu_A - mu_B||^2 with mu_X = mean_x Phi(x); ``lpips(n_pairs=None)`` uses it (tests check it against
``perceptual_distance`` over all pairs). ``n_pairs=k`` instead averages d over k seeded random pairs
per term, which is what a black-box pair distance (the ``lpips`` package) allows.

Feature extractors (the ``feature_extractor`` argument):
    EncoderFeatures(bundle)   the project's own image encoder: pooled = the unit image embedding;
                              maps = stage outputs by forward hooks (ModifiedResNet layer1..layer4,
                              or evenly spaced ViT blocks). The embedded profile's choice, because
                              Inception and AlexNet weights would have to be downloaded.
    InceptionFeatures()       pytorch-fid's FID Inception-v3 pool3 (2048-d), paper profile.
    LpipsNet()                the ``lpips`` package (AlexNet, v0.1), paper profile.
The paper-profile extractors never download: they first look for the weight file in the torch hub
cache (``$TORCH_HOME/hub/checkpoints/``) and stop with an error naming it when it is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlmlab.data.catalog import ALEXNET_FILE, INCEPTION_FILE   # the weight files `vlmlab data fetch` gets
from vlmlab.features import arrays_to_input
from vlmlab.metrics import frechet_distance, perceptual_distance
from vlmlab.models.bundle import ClipBundle
from vlmlab.runtime import FETCH_HINT, get_logger, progress

__all__ = ["GapFeatures", "EncoderFeatures", "InceptionFeatures", "LpipsNet", "LpipsGap", "to_uint8",
           "gap_features", "fid", "lpips", "INCEPTION_FILE", "ALEXNET_FILE"]

log = get_logger("vlmlab.visual_prompts.gap")


@dataclass
class GapFeatures:
    """Features of one image set. pooled: (N, D); maps: L tensors (N, C_l, *spatial) or ``None``;
    images: the uint8 (N, H, W, 3) set, kept for black-box pair distances (``None`` otherwise)."""

    pooled: Tensor | None
    maps: list[Tensor] | None = None
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pooled if self.pooled is not None else self.images)

    @cached_property
    def phi_moments(self) -> tuple[Tensor, Tensor]:
        """Mean of Phi(x) over the set and mean of ||Phi(x)||^2 (float64), all the exact ``lpips`` needs;
        computed once per set (the reference set is compared with every dataset)."""
        if self.maps is None:
            raise ValueError("phi_moments needs feature maps")
        mu, sq = [], torch.zeros((), dtype=torch.float64)
        for part in _phi_parts(self.maps):                                       # one layer at a time
            mu.append(part.mean(0))
            sq = sq + part.pow(2).sum(1).mean()
        return torch.cat(mu), sq


def to_uint8(dataset, size: int | None = None) -> np.ndarray:
    """Images of ``dataset`` as uint8 (N, H, W, 3).

    Args:
        dataset: a uint8 array/tensor (N, H, W, 3), anything with ``.images`` (world sets), or a
            dataset of ``(PIL image, label)`` items (real sets, no transform).
        size: side of the square the PIL images are resized (shorter side) and centre-cropped to;
            required for PIL datasets, ignored for arrays.
    """
    arr = getattr(dataset, "images", dataset)
    if isinstance(arr, Tensor):
        arr = arr.cpu().numpy()
    if isinstance(arr, np.ndarray):
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        return arr
    if size is None:
        raise ValueError(f"{type(dataset).__name__} yields PIL images; pass size=... to resize them")
    count = len(dataset)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in progress(range(count), desc="load images", total=count):
        img = dataset[i][0]
        if not isinstance(img, Image.Image):
            raise TypeError(f"item {i} of {type(dataset).__name__} is {type(img).__name__}, not a PIL image; "
                            "load the dataset without a transform")
        scale = size / min(img.size)
        img = img.convert("RGB").resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                                        Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        out[i] = np.asarray(img.crop((left, top, left + size, top + size)))
    return out


class EncoderFeatures:
    """Pooled embeddings and stage maps of a CLIP image encoder (forward hooks, no grad).

    Args:
        bundle: the model; its image tower is open_clip ``ModifiedResNet`` (stages ``layer1..4``)
            or ``VisionTransformer`` (``transformer.resblocks``).
        layers: module names under ``bundle.model.visual`` to hook; ``None`` = ``layer1..layer4``
            for a ResNet, 4 evenly spaced blocks for a ViT.
        batch_size: images per forward pass.
    """

    name = "encoder"

    def __init__(self, bundle: ClipBundle, layers: list[str] | None = None, batch_size: int = 256):
        self.bundle, self.batch_size = bundle, batch_size
        visual = bundle.model.visual
        if layers is None:
            if hasattr(visual, "layer4"):
                layers = ["layer1", "layer2", "layer3", "layer4"]
            elif hasattr(visual, "transformer"):
                n = len(visual.transformer.resblocks)
                layers = [f"transformer.resblocks.{i}" for i in sorted({round((k + 1) * n / 4) - 1 for k in range(4)})]
            else:
                raise TypeError(f"no default layers for {type(visual).__name__}; pass layers=[...] "
                                f"(names from bundle.model.visual.named_modules())")
        modules = dict(visual.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise KeyError(f"layers {missing} not in bundle.model.visual; known e.g. {list(modules)[1:12]}")
        self.layers = list(layers)
        self._modules = [modules[name] for name in self.layers]

    @staticmethod
    def _as_map(out: Tensor) -> Tensor:
        """(B, C, H, W) stays; ViT tokens (B, L, W) -> (B, W, L - 1) without the class token."""
        if out.dim() == 3:
            return out[:, 1:].transpose(1, 2)
        return out

    def __call__(self, images, with_maps: bool = True) -> GapFeatures:
        """uint8 images (N, H, W, 3) -> ``GapFeatures`` (pooled unit embeddings (N, D), maps on CPU)."""
        images = to_uint8(images)
        store: list[Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: store.append(self._as_map(out).float().cpu()))
                 for m in self._modules] if with_maps else []
        pooled, maps = [], [[] for _ in self._modules]
        dev = self.bundle.device
        try:
            with torch.inference_mode(), self.bundle.autocast():
                for i in range(0, len(images), self.batch_size):
                    batch = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch_size])).to(dev)
                    store.clear()
                    pooled.append(self.bundle.encode_images(arrays_to_input(self.bundle, batch)).float().cpu())
                    for l, out in enumerate(store):
                        maps[l].append(out)
        finally:
            for h in hooks:
                h.remove()
        return GapFeatures(torch.cat(pooled).clone(), [torch.cat(m).clone() for m in maps] if with_maps else None)

    def pooled(self, images) -> Tensor:
        return self(images, with_maps=False).pooled


def _hub_file(filename: str, torch_home: str | Path | None, package: str, what: str) -> Path:
    hub = Path(torch_home).expanduser() / "hub" if torch_home else Path(torch.hub.get_dir())
    path = hub / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: expected {str(path)!r}. vlmlab never downloads; copy "
                                f"{filename} (as {package} would download it) into {path.parent}/, or point "
                                f"torch_home= / $TORCH_HOME at a folder holding hub/checkpoints/{filename}. Without "
                                f"it, use the embedded profile's EncoderFeatures instead. {FETCH_HINT}.")
    if torch_home:
        torch.hub.set_dir(str(hub))
    return path


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"the paper-profile gap metric needs the '{pip_name}' package (pip install {pip_name}); "
                          f"or use the embedded profile's EncoderFeatures") from err


class InceptionFeatures:
    """FID Inception-v3 pool3 features (2048-d) from pytorch-fid, loaded from a local file only."""

    name = "inception"

    def __init__(self, torch_home: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        _hub_file(INCEPTION_FILE, torch_home, "pytorch-fid", "FID Inception-v3")
        inception = _require("pytorch_fid.inception", "pytorch-fid").inception
        self.model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.inference_mode()
    def pooled(self, images) -> Tensor:
        images = to_uint8(images)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i:i + self.batch_size]).permute(0, 3, 1, 2).float().div(255).to(self.device)
            out.append(self.model(x)[0].flatten(1).cpu())  # (B, 2048); resized to 299 inside
        return torch.cat(out)


class LpipsNet:
    """The ``lpips`` package's learned LPIPS (AlexNet backbone, v0.1 heads), local weights only."""

    name = "lpips"

    def __init__(self, net: str = "alex", torch_home: str | Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64):
        if net != "alex":
            raise ValueError(f"LpipsNet: net={net!r}; only 'alex' (the LPIPS default) is wired to a local file check")
        _hub_file(ALEXNET_FILE, torch_home, "torchvision (for lpips)", "LPIPS AlexNet backbone")
        lp = _require("lpips", "lpips")
        self.model = lp.LPIPS(net=net, version="0.1", verbose=False).to(device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.inference_mode()
    def pair_distance(self, images_a: np.ndarray, images_b: np.ndarray) -> Tensor:
        """LPIPS of paired uint8 images (N, H, W, 3) x 2 -> (N,)."""
        out = []
        for i in range(0, len(images_a), self.batch_size):
            a, b = (torch.from_numpy(x[i:i + self.batch_size]).permute(0, 3, 1, 2).float().div(255).to(self.device)
                    for x in (images_a, images_b))
            out.append(self.model(a, b, normalize=True).flatten().cpu())
        return torch.cat(out)


def gap_features(dataset, extractor, size: int | None = None) -> GapFeatures:
    """Everything ``fid`` and ``lpips`` need of one set, computed once (pass it instead of the dataset)."""
    if isinstance(dataset, GapFeatures):
        return dataset
    images = to_uint8(dataset, size=size)
    if isinstance(extractor, EncoderFeatures):
        return extractor(images)
    pooled = extractor.pooled(images) if hasattr(extractor, "pooled") else None
    return GapFeatures(pooled, None, images)


def fid(dataset_a, dataset_b, feature_extractor, size: int | None = None) -> float:
    """Frechet distance between the pooled features of two image sets.

    Args:
        dataset_a, dataset_b: image sets (see ``to_uint8``) or their ``GapFeatures``.
        feature_extractor: anything with ``pooled(images) -> (N, D)`` (``EncoderFeatures``,
            ``InceptionFeatures``).
        size: resize side for PIL datasets.
    """
    fa, fb = (gap_features(d, feature_extractor, size) for d in (dataset_a, dataset_b))
    if fa.pooled is None or fb.pooled is None:
        raise TypeError(f"{type(feature_extractor).__name__} gives no pooled features; use EncoderFeatures or "
                        "InceptionFeatures for FID")
    return frechet_distance(fa.pooled, fb.pooled)


@dataclass(frozen=True)
class LpipsGap:
    """Set-level LPIPS-style distance (module docstring): distance = cross - (within_a + within_b) / 2."""

    distance: float
    cross: float
    within_a: float
    within_b: float
    n_pairs: int | None  # None = exact all-pairs means


def _phi_parts(maps: list[Tensor], eps: float = 1e-10):
    """Phi(x) layer by layer: channel-normalised maps, flattened and scaled so that, concatenated,
    ||Phi(x) - Phi(y)||^2 = perceptual_distance(x, y). Yields (N, C_l H_l W_l) float64 blocks."""
    n_layers = len(maps)
    for m in maps:
        yield (m / (m.norm(dim=1, keepdim=True) + eps)).flatten(1).double() / np.sqrt(n_layers * m[0].numel())


def _pair_means(fa: GapFeatures, fb: GapFeatures, extractor, n_pairs: int, rng: np.random.Generator,
                chunk: int = 256) -> float:
    i, j = rng.integers(len(fa), size=n_pairs), rng.integers(len(fb), size=n_pairs)
    total = 0.0
    for k in range(0, n_pairs, chunk):                      # bounded memory: chunk pairs at a time
        ik, jk = i[k:k + chunk], j[k:k + chunk]
        if fa.maps is not None and fb.maps is not None:
            d = perceptual_distance([m[ik] for m in fa.maps], [m[jk] for m in fb.maps])
        elif hasattr(extractor, "pair_distance") and fa.images is not None and fb.images is not None:
            d = extractor.pair_distance(fa.images[ik], fb.images[jk])
        else:
            raise TypeError(f"{type(extractor).__name__} gives neither feature maps nor pair_distance; "
                            "use EncoderFeatures or LpipsNet")
        total += float(d.double().sum())
    return total / n_pairs


def lpips(dataset_a, dataset_b, feature_extractor, n_pairs: int | None = None, seed: int = 0,
          size: int | None = None) -> LpipsGap:
    """Set-level LPIPS-style distance between two image sets (definition in the module docstring).

    Args:
        dataset_a, dataset_b: image sets (see ``to_uint8``) or their ``GapFeatures``.
        feature_extractor: ``EncoderFeatures`` (maps; exact or sampled) or ``LpipsNet`` (sampled only).
        n_pairs: ``None`` = exact means over all pairs (maps only); k = k seeded random pairs per term.
        seed: seed of the random pairs (the three terms use one generator, in the order cross, a, b).
        size: resize side for PIL datasets.

    Returns:
        ``LpipsGap``; ``distance`` is 0 for identical sets in the exact form and symmetric in (a, b).
    """
    fa, fb = (gap_features(d, feature_extractor, size) for d in (dataset_a, dataset_b))
    if n_pairs is None:
        if fa.maps is None or fb.maps is None:
            raise ValueError(f"lpips(n_pairs=None) needs feature maps, which {type(feature_extractor).__name__} "
                             "does not give; pass n_pairs=1000 (or more) to sample pairs")
        (mu_a, sq_a), (mu_b, sq_b) = fa.phi_moments, fb.phi_moments           # mean Phi, mean ||Phi||^2
        cross = float(sq_a + sq_b - 2 * mu_a @ mu_b)
        within_a, within_b = float(2 * sq_a - 2 * mu_a @ mu_a), float(2 * sq_b - 2 * mu_b @ mu_b)
        return LpipsGap(float((mu_a - mu_b).pow(2).sum()), cross, within_a, within_b, None)
    if n_pairs < 1:
        raise ValueError(f"lpips: n_pairs must be >= 1 or None (exact), got {n_pairs}")
    rng = np.random.default_rng(seed)
    cross = _pair_means(fa, fb, feature_extractor, n_pairs, rng)
    within_a = _pair_means(fa, fa, feature_extractor, n_pairs, rng)
    within_b = _pair_means(fb, fb, feature_extractor, n_pairs, rng)
    return LpipsGap(cross - (within_a + within_b) / 2, cross, within_a, within_b, n_pairs)
