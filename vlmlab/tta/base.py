"""Test-time adaptation: one interface, three regimes, one runner.

A method (:class:`TTAMethod`) is set up once with a :class:`Context` (model bundle, class
texts, few-shot support) and then consumes a :class:`Stream` of test items, batch by batch,
returning logits (B, C). The runner :func:`run_stream` owns the regime:

    static    no state from test data (No-adapt, linear probe, Tip-Adapter): any batch size
    episodic  reset before every image (TPT, ZERO, MTA): one image at a time
    online    state carried through one stream (TDA, UniInfo): ``method.batch_size`` items per step

``method.reset()`` runs at the start of every stream, so each (corruption, severity) starts
from the pretrained model. A stream is visited in a seeded random order (the reference loaders
shuffle: UniInfo seed 42, TPT seed 0, TDA seed 1; here one run seed) and the logits come back in
dataset order. What a batch carries is what the method declares in ``inputs``:

    "feats"   (B, D)        unit single-view features (from the feature cache, else encoded)
    "raw_feats" (B, D)      the same before normalisation, the image encoder's output (the linear probe's,
                            as lpclip's): cached unit features times their cached norms, else encoded
    "views"   (B, V, D)     unit features of V views, view 0 = the image itself, the rest
                            RandomResizedCrop(S, scale 0.08-1, ratio 3/4-4/3) + horizontal flip
                            (TPT/ZERO/MTA's ImageNet augmentation), all views in one forward
    "augmix_views" (B, V, D) unit features of V views, view 0 = the image itself, the rest AugMix views
                            of the raw image (``vlmlab.data.augmix``: TDA's ImageNet-A/V/R/S setting),
                            encoded per batch, never cached; they arrive in ``Batch.views``
    "images"  (B, 3, S, S)  normalised model input

Views are drawn from a generator seeded with (view_seed, item index), so ZERO, MTA and TPT see
the same views of an image and can share cached view features. Departure: the crop is taken
from the model input (S x S after resize and centre crop), not from the raw file; for ImageNet-C
(224 x 224 files) and the 64 px world the two coincide. ``Stream.view_source = "raw"`` (notebook 02's
``views_from``) crops the raw file as the references do (``RandomResizedCrop(S)``, bilinear, then the
flip, on ``ImageSource.crops``; view 0 stays the served input, their base transform).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode

from vlmlab.checkpoints import Checkpoint, checkpoint_path
from vlmlab.data.augment import SCALE, augmented_inputs
from vlmlab.data.augmix import augmix_inputs
from vlmlab.features import arrays_to_input
from vlmlab.models.bundle import ClipBundle
from vlmlab.runcache import closure_fingerprint, tensor_digest
from vlmlab.runtime import get_logger, progress, seed_everything, thread_map

log = get_logger("vlmlab.tta")

REGIMES = ("static", "episodic", "online")
INPUTS = ("feats", "raw_feats", "views", "augmix_views", "images")
VIEW_SOURCES = ("served", "raw")
BICUBIC, BILINEAR = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR


def check_view_source(source: str) -> str:
    """``source`` if it names where "views" are cropped from (``VIEW_SOURCES``), else a ValueError."""
    if source not in VIEW_SOURCES:
        raise ValueError(f"views are cropped from one of {VIEW_SOURCES}, not {source!r}")
    return source


@dataclass(frozen=True)
class TTAConfig:
    """Base of every method's hyperparameters (frozen; paper defaults in each subclass)."""

    def replace(self, **overrides) -> "TTAConfig":
        """A copy with ``overrides``; an unknown key raises naming it and the known ones."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise KeyError(f"{type(self).__name__} has no field(s) {bad}; known: {sorted(known)}")
        return type(self)(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **overrides})


class ImageSource(Protocol):
    """Normalised model input on demand: ``len(src)`` items, ``src(idx) -> (b, 3, S, S)``."""

    def __len__(self) -> int: ...

    def __call__(self, idx: Tensor) -> Tensor: ...

    def crops(self, idx: Tensor, views: Sequence[int], seed: int, scale=SCALE, interpolation=BICUBIC) -> Tensor: ...

    def augmix(self, idx: Tensor, views: Sequence[int], seed: int) -> Tensor: ...


class ArrayImages:
    """Images held as uint8 (N, H, W, 3) arrays (the world), converted per batch with ``arrays_to_input``."""

    def __init__(self, bundle: ClipBundle, images: np.ndarray):
        self.bundle, self.images = bundle, images

    def __len__(self) -> int:
        return len(self.images)

    def digest(self, idx: Tensor | None = None) -> str:
        """sha1 of the arrays (of items ``idx``): what ``stream_key`` keys in-memory images by."""
        images = self.images if idx is None else self.images[np.asarray(idx)]
        return tensor_digest(torch.from_numpy(np.ascontiguousarray(images)))

    def __call__(self, idx: Tensor) -> Tensor:
        batch = torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(idx)]))
        return arrays_to_input(self.bundle, batch.to(self.bundle.device))

    def crops(self, idx: Tensor, views: Sequence[int], seed: int, scale=SCALE, interpolation=BICUBIC) -> Tensor:
        """Normalised model input of a random resized crop (``scale`` of the area, to S x S by ``interpolation``)
        and flip of each *raw* array image (not of the served one): view ``views[b]`` of item ``idx[b]``
        (``vlmlab.data.augment.augmented_inputs``: torchvision's ``RandomResizedCrop`` draw on
        ``view_rng(seed, item, view)``)."""
        return augmented_inputs(self.bundle, self, np.asarray(idx).tolist(), views, seed, scale,
                                interpolation=interpolation).to(self.bundle.device)

    def augmix(self, idx: Tensor, views: Sequence[int], seed: int) -> Tensor:
        """Normalised model input of AugMix view ``views[b]`` of raw item ``idx[b]`` (``vlmlab.data.augmix``,
        drawn on ``view_rng(seed, item, view)``)."""
        return augmix_inputs(self.bundle, self, np.asarray(idx).tolist(), views, seed).to(self.bundle.device)


class DatasetImages:
    """Images of an on-disk dataset (items ``(PIL, label)``), through ``bundle.preprocess``.

    Files of a batch are decoded by ``workers`` threads (PIL releases the GIL while decoding).
    """

    def __init__(self, bundle: ClipBundle, dataset, workers: int = 8):
        self.bundle, self.dataset, self.workers = bundle, dataset, workers

    def __len__(self) -> int:
        return len(self.dataset)

    def digest(self, idx: Tensor | None = None) -> str | None:
        """The dataset's cache key (``ImageDataset.key``: its files' relative paths and labels, as the feature
        cache keys it) with the items ``idx``; ``None`` for a dataset without a ``key``."""
        key = getattr(self.dataset, "key", None)
        return key if key is None or idx is None else f"{key}:{tensor_digest(torch.as_tensor(idx).long())}"

    def _load(self, i: int) -> Tensor:
        x = self.dataset[i][0]
        return x if isinstance(x, Tensor) else self.bundle.preprocess(x)

    def __call__(self, idx: Tensor) -> Tensor:
        xs = thread_map(self._load, np.asarray(idx).tolist(), self.workers)
        return torch.stack(xs).to(self.bundle.device)

    def crops(self, idx: Tensor, views: Sequence[int], seed: int, scale=SCALE, interpolation=BICUBIC) -> Tensor:
        """As ``ArrayImages.crops``, from each decoded file (the raw image, before ``bundle.preprocess``): what a
        ``RandomResizedCrop(S, scale, interpolation) + RandomHorizontalFlip`` transform feeds the model."""
        raw = self.dataset if getattr(self.dataset, "transform", None) is None else self.dataset.with_transform(None)
        return augmented_inputs(self.bundle, raw, np.asarray(idx).tolist(), views, seed, scale,
                                workers=self.workers, interpolation=interpolation).to(self.bundle.device)

    def augmix(self, idx: Tensor, views: Sequence[int], seed: int) -> Tensor:
        """As ``ArrayImages.augmix``, from each decoded file (before ``bundle.preprocess``), as TDA's
        ``AugMixAugmenter`` receives it."""
        raw = self.dataset if getattr(self.dataset, "transform", None) is None else self.dataset.with_transform(None)
        return augmix_inputs(self.bundle, raw, np.asarray(idx).tolist(), views, seed,
                             workers=self.workers).to(self.bundle.device)


def image_source(bundle: ClipBundle, dataset) -> ImageSource:
    """The right source for a world set (``.images`` array) or an on-disk dataset."""
    return ArrayImages(bundle, dataset.images) if hasattr(dataset, "images") else DatasetImages(bundle, dataset)


@dataclass
class Support:
    """A few-shot support set and its validation part (for hyperparameter search, never the test set).

    Attributes:
        feats: (M, D) unit features. labels: (M,). images: the M images (Tip-Adapter augments them).
        val_feats: (M', D). val_labels: (M',). source: "clean" or "target" (where the shots came from).
        norms, val_norms: (M,), (M',) norms of the encoder output before normalisation, or None.
    """

    feats: Tensor
    labels: Tensor
    images: ImageSource | None
    val_feats: Tensor
    val_labels: Tensor
    shots: int
    source: str = "clean"
    norms: Tensor | None = None
    val_norms: Tensor | None = None

    def raw(self, split: str = "train") -> Tensor:
        """(M, D) the encoder output before normalisation of the "train" or "val" part (unit features times
        their norms)."""
        feats, norms = (self.feats, self.norms) if split == "train" else (self.val_feats, self.val_norms)
        if norms is None:
            raise ValueError("this support set carries no norms (Support(..., norms=, val_norms=)); the linear "
                             "probe's raw features need them, or use features='normalized'")
        return feats * norms[:, None]


@dataclass
class Context:
    """What every method is set up with.

    Attributes:
        bundle: the model (never modified by a method). classnames: C names.
        text: (C, D) unit class text embeddings of the run's prompt. template: that prompt.
        support: few-shot support (linear probe, Tip-Adapter) or None. seed: the run seed.
    """

    bundle: ClipBundle
    classnames: list[str]
    text: Tensor
    template: str = "a photo of a {}."
    support: Support | None = None
    seed: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def class_text(self, templates: str = "run") -> Tensor:
        """(C, D) unit class embeddings for a method's ``templates`` switch.

        ``"run"``: the run's prompt (``text``, every method of the table under one prompt); ``"imagenet7"``:
        the 7-template ensemble of TDA's and Tip-Adapter's ImageNet code (``clip_classifier``: each prompt's
        embedding normalised, averaged over the templates, normalised; ``vlmlab.prompts.IMAGENET_TEMPLATES_7``).
        """
        if templates == "run":
            return self.text
        if templates == "imagenet7":
            from vlmlab.prompts import IMAGENET_TEMPLATES_7, zero_shot_weights
            return zero_shot_weights(self.bundle, self.classnames, IMAGENET_TEMPLATES_7, mode="clip").to(self.text)
        raise ValueError(f"templates={templates!r}; use 'run' (the run's prompt) or 'imagenet7'")


@dataclass
class Stream:
    """The test items of one (corruption, severity), with whatever is precomputed.

    Attributes:
        labels: (N,) true classes (read by the runner's caller, never by a method).
        images: model input on demand (needed unless every input a method reads is precomputed).
        feats: (N, D) precomputed single-view features, or None. views: (N, V, D), or None.
        norms: (N,) norms of the encoder output before normalisation (with ``feats``), or None.
        view_seed: seed of the view augmentations. name, severity: what the stream is.
        view_source: where "views" are cropped: "served" (the model input, the default) or "raw" (the file).
    """

    labels: Tensor
    images: ImageSource | None = None
    feats: Tensor | None = None
    views: Tensor | None = None
    view_seed: int = 0
    name: str = ""
    severity: int = 0
    norms: Tensor | None = None
    view_source: str = "served"

    def __post_init__(self):
        check_view_source(self.view_source)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Tensor) -> "Stream":
        """The items ``idx`` (precomputed tensors sliced; images re-indexed lazily)."""
        idx = torch.as_tensor(idx).long()
        images = None if self.images is None else _Subset(self.images, idx)
        return Stream(self.labels[idx], images, None if self.feats is None else self.feats[idx],
                      None if self.views is None else self.views[idx], self.view_seed, self.name, self.severity,
                      None if self.norms is None else self.norms[idx], self.view_source)


class _Subset:
    def __init__(self, src: ImageSource, idx: Tensor):
        self.src, self.idx = src, idx

    def __len__(self) -> int:
        return len(self.idx)

    def digest(self, idx: Tensor | None = None) -> str | None:
        inner = getattr(self.src, "digest", None)
        return None if inner is None else inner(self.idx if idx is None else self.idx[torch.as_tensor(idx).long()])

    def __call__(self, idx: Tensor) -> Tensor:
        return self.src(self.idx[torch.as_tensor(idx).long()])

    def augmix(self, idx: Tensor, views: Sequence[int], seed: int) -> Tensor:
        return self.src.augmix(self.idx[torch.as_tensor(idx).long()], views, seed)

    def crops(self, idx: Tensor, views: Sequence[int], seed: int, scale=SCALE, interpolation=BICUBIC) -> Tensor:
        return self.src.crops(self.idx[torch.as_tensor(idx).long()], views, seed, scale, interpolation)


@dataclass
class Batch:
    """One batch as a method sees it: ``index`` (B,) dataset positions, and the declared inputs."""

    index: Tensor
    feats: Tensor | None = None
    views: Tensor | None = None
    images: Tensor | None = None
    raw_feats: Tensor | None = None


class TTAMethod:
    """Base class. Subclasses set ``config_cls``, ``regime``, ``inputs`` and implement ``predict``."""

    config_cls: type[TTAConfig] = TTAConfig
    regime: str = "static"
    inputs: tuple[str, ...] = ("feats",)
    needs_support: bool = False
    second_pass: bool = False          # True: the runner calls ``predict_offline`` on every item afterwards

    def __init__(self, config: TTAConfig | None = None):
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{type(self).__name__} takes a {self.config_cls.__name__}, got {type(self.config).__name__}")
        self.ctx: Context | None = None

    @property
    def batch_size(self) -> int:
        """Items per ``predict`` call (episodic methods: 1)."""
        return 1 if self.regime == "episodic" else int(getattr(self.config, "batch_size", 256))

    @property
    def n_views(self) -> int:
        return int(getattr(self.config, "n_views", 1))

    @property
    def logit_scale(self) -> float:
        """The config's ``logit_scale`` when set, else the bundle's (1 / temperature)."""
        return getattr(self.config, "logit_scale", None) or self.ctx.bundle.logit_scale

    def setup(self, ctx: Context) -> None:
        """Bind the context (text, support). Called once per context, before any stream."""
        if self.needs_support and ctx.support is None:
            raise ValueError(f"{type(self).__name__} needs a few-shot support set: pass Context(support=...)")
        self.ctx = ctx

    def reset(self) -> None:
        """Forget everything learned from test data (start of a stream; episodic: every image)."""

    def predict(self, batch: Batch) -> Tensor:
        """Logits (B, C) for ``batch`` (online methods may update their state first or after)."""
        raise NotImplementedError

    def predict_offline(self, batch: Batch) -> Tensor:
        """Second-pass logits after the stream (only when ``second_pass``)."""
        raise NotImplementedError

    def stream_state(self) -> dict[str, Tensor]:
        """What a caller reads from the method after a stream besides the logits (``run_stream_cached`` stores
        it); none by default."""
        return {}

    def load_stream_state(self, state: dict[str, Tensor]) -> None:
        """Restore ``stream_state()`` as it was after the stream (a cached run)."""

    def resume_state(self) -> dict | None:
        """An online method's whole state part-way through a stream (tensors, numbers, lists and dicts of them),
        which ``run_stream``'s checkpoint keeps so a stopped stream resumes; None: the method cannot resume
        (the default). Episodic methods need none: ``reset()`` starts every image afresh."""
        return None

    def load_resume_state(self, state: dict) -> None:
        """Restore ``resume_state()``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ---- views --------------------------------------------------------------------------------

def random_resized_boxes(n: int, size: int, g: torch.Generator, scale=(0.08, 1.0),
                         ratio=(3 / 4, 4 / 3)) -> Tensor:
    """``n`` crop boxes (x0, y0, x1, y1) by torchvision's RandomResizedCrop rule (10 tries, then centre)."""
    area = float(size * size)
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for _ in range(n):
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(scale[0], scale[1], generator=g))
            aspect = math.exp(float(torch.empty(1).uniform_(log_r[0], log_r[1], generator=g)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= size and 0 < h <= size:
                y0 = int(torch.randint(0, size - h + 1, (1,), generator=g))
                x0 = int(torch.randint(0, size - w + 1, (1,), generator=g))
                break
        else:                                                       # fallback: whole image (square input)
            w = h = size
            x0 = y0 = 0
        boxes.append((x0, y0, x0 + w, y0 + h))
    return torch.tensor(boxes, dtype=torch.float32)


def make_views(x: Tensor, n_views: int, seeds: Sequence[int], scale=(0.08, 1.0), keep_original: bool = True) -> Tensor:
    """Augmented views of each image: (B, 3, S, S) -> (B, V, 3, S, S).

    View 0 is the image itself when ``keep_original``; the others are random resized crops with a
    horizontal flip of probability 0.5, drawn from ``torch.Generator(seeds[b])``. One ``roi_align``
    call (one sample per output pixel, half-pixel aligned) resizes every crop bilinearly, which is
    ``resize(crop, S, bilinear)`` except that samples at a crop's border may read the pixel just
    outside it; crops are never smaller than the output, so no antialiasing is needed.
    """
    from torchvision.ops import roi_align

    b, _, s, _ = x.shape
    n_aug = n_views - 1 if keep_original else n_views
    rois, flips = [], []
    for i in range(b):
        g = torch.Generator().manual_seed(int(seeds[i]))
        boxes = random_resized_boxes(n_aug, s, g, scale)
        rois.append(torch.cat([torch.full((n_aug, 1), float(i)), boxes], 1))
        flips.append(torch.rand(n_aug, generator=g) < 0.5)
    rois = torch.cat(rois).to(x)                                    # (B*n_aug, 5)
    crops = roi_align(x, rois, output_size=(s, s), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    flip = torch.cat(flips).to(x.device)
    crops[flip] = crops[flip].flip(-1)
    crops = crops.reshape(b, n_aug, *x.shape[1:])
    return torch.cat([x[:, None], crops], 1) if keep_original else crops


def view_seed(base: int, index: int) -> int:
    """Seed of the views of item ``index``: the same for every method and order."""
    return (int(base) * 1_000_003 + int(index)) % (2**63 - 1)


@torch.no_grad()
def encode_views(bundle: ClipBundle, x: Tensor, n_views: int, seeds: Sequence[int]) -> Tensor:
    """Unit features of ``n_views`` views per image, all in one forward: (B, 3, S, S) -> (B, V, D)."""
    v = make_views(x, n_views, seeds)                               # (B, V, 3, S, S)
    with bundle.autocast():
        z = bundle.encode_images(v.flatten(0, 1))                   # (B*V, D)
    return z.float().reshape(x.shape[0], n_views, -1)


def _encode_image_and_views(bundle: ClipBundle, src: ImageSource, idx: Tensor, n_views: int, draw,
                            first: Tensor | None = None) -> Tensor:
    """View 0 the served input of each item (``first``, or ``src(idx)``), views 1..V-1 ``draw(items, views)``,
    all in one forward: (B, V, D)."""
    idx = torch.as_tensor(idx).long()
    b, n_aug = len(idx), n_views - 1
    first = src(idx) if first is None else first                    # (B, 3, S, S)
    rest = draw(idx.repeat_interleave(n_aug), list(range(1, n_views)) * b).to(first)
    x = torch.cat([first[:, None], rest.reshape(b, n_aug, *first.shape[1:])], 1)
    with bundle.autocast():
        z = bundle.encode_images(x.flatten(0, 1))                   # (B*V, D)
    return z.float().reshape(b, n_views, -1)


@torch.no_grad()
def encode_raw_views(bundle: ClipBundle, src: ImageSource, idx: Tensor, n_views: int, seed: int,
                     first: Tensor | None = None) -> Tensor:
    """Unit features of the image and ``n_views - 1`` crops of its raw file: (B,) item indices -> (B, V, D).

    The crops are the references' test-time views (TPT's ``AugMixAugmenter`` without AugMix:
    ``RandomResizedCrop(S)``, scale 0.08-1, bilinear, and a flip), drawn on ``view_rng(seed, item, view)``;
    view 0 is the served model input (their base transform; ``first`` when the caller has it)."""
    return _encode_image_and_views(bundle, src, idx, n_views,
                                   lambda i, v: src.crops(i, v, seed, scale=(0.08, 1.0), interpolation=BILINEAR),
                                   first)


@torch.no_grad()
def encode_augmix_views(bundle: ClipBundle, src: ImageSource, idx: Tensor, n_views: int, seed: int,
                        first: Tensor | None = None) -> Tensor:
    """Unit features of the image and ``n_views - 1`` AugMix views of its raw file: (B,) item indices ->
    (B, V, D), as TDA's ``AugMixAugmenter`` (view 0: the served model input, ``first`` when the caller has it)."""
    return _encode_image_and_views(bundle, src, idx, n_views, lambda i, v: src.augmix(i, v, seed), first)


def encode_item_views(bundle: ClipBundle, src: ImageSource, idx: Tensor, n_views: int, seed: int,
                      source: str = "served", first: Tensor | None = None) -> Tensor:
    """The "views" input of items ``idx`` (B, V, D): crops of the served input (``encode_views``, item i's
    generator seeded ``view_seed(seed, i)``) or of the raw file (``encode_raw_views``); ``first``: the items'
    served input when the caller has loaded it."""
    if check_view_source(source) == "raw":
        return encode_raw_views(bundle, src, idx, n_views, seed, first)
    idx = torch.as_tensor(idx).long()
    return encode_views(bundle, src(idx) if first is None else first, n_views,
                        [view_seed(seed, i) for i in idx.tolist()])


@torch.no_grad()
def encode_single(bundle: ClipBundle, x: Tensor, normalize: bool = True) -> Tensor:
    with bundle.autocast():
        return bundle.encode_images(x, normalize=normalize).float()


# ---- runner -------------------------------------------------------------------------------

def _fetch(method: TTAMethod, stream: Stream, idx: Tensor, bundle: ClipBundle) -> Batch:
    batch = Batch(index=idx)
    need = set(method.inputs)
    images = None
    raw_cached = stream.feats is not None and stream.norms is not None
    if ("images" in need or ("feats" in need and stream.feats is None) or ("raw_feats" in need and not raw_cached)
            or ("views" in need and (stream.views is None or stream.views.shape[1] < method.n_views))
            or "augmix_views" in need):
        if stream.images is None:
            raise ValueError(f"{type(method).__name__} needs {sorted(need)} but stream {stream.name!r} has no "
                             "images and not every input precomputed; pass Stream(images=image_source(...))")
        images = stream.images(idx)
    if "images" in need:
        batch.images = images
    if "feats" in need:
        batch.feats = stream.feats[idx].to(bundle.device) if stream.feats is not None else encode_single(bundle, images)
    if "raw_feats" in need:
        batch.raw_feats = ((stream.feats[idx] * stream.norms[idx, None]).to(bundle.device) if raw_cached
                           else encode_single(bundle, images, normalize=False))
    if "views" in need:
        if stream.views is not None and stream.views.shape[1] >= method.n_views:
            batch.views = stream.views[idx, :method.n_views].to(bundle.device)
        else:
            batch.views = encode_item_views(bundle, stream.images, idx, method.n_views, stream.view_seed,
                                            stream.view_source, first=images)
    if "augmix_views" in need:
        batch.views = encode_augmix_views(bundle, stream.images, idx, method.n_views, stream.view_seed, images)
    return batch


def stream_order(n: int, seed: int, shuffle: bool = True) -> Tensor:
    """The visiting order: a permutation seeded by ``seed`` (or 0..n-1)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)


def run_stream(method: TTAMethod, stream: Stream, *, seed: int = 0, shuffle: bool = True,
               fetch: int = 8, desc: str | None = None, checkpoint: Checkpoint | None = None) -> Tensor:
    """Run one stream through ``method`` (already ``setup``) and return logits (N, C) in dataset order.

    Args:
        method: a set-up method; ``reset()`` is called here first (fresh model per stream).
        stream: the items. seed: seeds torch (method randomness) and the visiting order.
        shuffle: visit in a seeded random order (the references shuffle).
        fetch: episodic methods: images whose inputs are fetched (views encoded) together.
        checkpoint: episodic methods and online methods with a ``resume_state`` (TDA)
            (``vlmlab.checkpoints.Checkpoint``, whose ``expect`` names this run): the logits so far, how many
            items were visited, torch's random states and the method's ``resume_state()`` are written there
            after the first batch (episodic: fetch group) that ends ``every_s`` seconds after the last write,
            and a run started again on the same file continues after the saved item, to the logits of a run
            never stopped (an episodic method starts every image from ``reset()``, so it needs no state of its
            own). TPT on one ImageNet-C corruption takes about an hour on a GPU, TDA with AugMix views about
            45 minutes. Other online methods (UniInfo: minutes per stream) ignore it.
    """
    if method.ctx is None:
        raise RuntimeError(f"{type(method).__name__}.setup(ctx) must be called before run_stream")
    bundle, n = method.ctx.bundle, len(stream)
    seed_everything(seed)
    method.reset()
    order = stream_order(n, seed, shuffle)
    out = torch.empty(n, method.ctx.n_classes)
    step = fetch if method.regime == "episodic" else method.batch_size
    resumable = method.regime == "episodic" or method.resume_state() is not None
    checkpoint = checkpoint if resumable else None
    done = 0
    if checkpoint is not None and (state := checkpoint.load()) is not None:
        out, done = state["logits"], int(state["done"])
        _set_rng_states(state["rng"])
        if state["method"] is not None:
            method.load_resume_state(state["method"])
        log.info("%s %s: resumed after %d of %d images", type(method).__name__, stream.name, done, n)
    starts = range(done, n, step)
    bar = progress(starts, desc=desc or f"{type(method).__name__} {stream.name}", total=len(starts), leave=False,
                   disable=True if len(starts) < 20 else None)
    for s in bar:
        idx = order[s:s + step]
        batch = _fetch(method, stream, idx, bundle)
        if method.regime == "episodic":
            for j in range(len(idx)):
                method.reset()
                one = Batch(idx[j:j + 1], **{k: None if t is None else t[j:j + 1] for k, t in
                                             (("feats", batch.feats), ("views", batch.views), ("images", batch.images),
                                              ("raw_feats", batch.raw_feats))})
                out[idx[j]] = method.predict(one).detach().float().cpu()[0]
        else:
            out[idx] = method.predict(batch).detach().float().cpu()
        if checkpoint is not None:
            checkpoint.save(lambda: {"logits": out, "done": s + len(idx), "rng": _rng_states(),
                                     "method": method.resume_state()})
    if method.second_pass:
        step = int(getattr(method.config, "eval_batch_size", 128))
        for s in range(0, n, step):
            idx = torch.arange(s, min(s + step, n))
            out[idx] = method.predict_offline(_fetch(method, stream, idx, bundle)).detach().float().cpu()
    return out


def _rng_states() -> dict:
    """torch's global random states (CPU and every CUDA device), which a method could draw from."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["cpu"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def stream_key(method: TTAMethod, stream: Stream, *, seed: int = 0, shuffle: bool = True,
               fetch: int = 8) -> dict | None:
    """Cache key of ``run_stream(method, stream, ...)`` (``vlmlab.runcache``): the method and its config, the
    model, class names, prompt and class texts, everything the stream holds (labels, features, norms, views, a
    digest of its images), the view seed and source, the run's seed, order and fetch size, and a fingerprint of
    the method's code and every vlmlab module it imports (``closure_fingerprint``) with the torch version.

    Images held in memory (the world) are keyed by their bytes; images on disk (the paper profile) by the
    dataset's key, its files' relative paths and labels, as the feature cache keys their features, so an
    interrupted paper-profile grid resumes from the streams it finished.

    ``None`` (the run is not cached) for static methods (no state from test data: one product of features),
    for a context with a few-shot support set, for a dataset without a key, and for a method whose module has
    no source file (a class defined in a notebook)."""
    ctx = method.ctx
    if ctx is None or method.regime == "static" or ctx.support is not None:
        return None
    try:
        code = closure_fingerprint(type(method).__module__)
    except (ImportError, ValueError):                   # no source file, or __main__ (a notebook's class)
        return None
    held = stream_digest(stream)
    if held is None:
        return None
    return {"kind": "tta-stream", "method": type(method).__name__, "config": asdict(method.config),
            "model": ctx.bundle.identity, "classnames": list(ctx.classnames), "template": ctx.template,
            "text": tensor_digest(ctx.text), "seed": int(seed), "shuffle": bool(shuffle),
            "fetch": int(fetch) if method.regime == "episodic" else None,
            "stream": held | {"view_seed": int(stream.view_seed), "view_source": stream.view_source},
            "code": code}


def stream_digest(stream: Stream) -> dict | None:
    """Digests of what ``stream`` holds (labels, features, norms, views, images), or ``None`` when its images
    cannot be keyed. Computed once per stream and kept on it while it holds the same tensors (the paper
    profile's views are gigabytes, read by three methods)."""
    parts = (stream.labels, stream.feats, stream.norms, stream.views, stream.images)
    memo = stream.__dict__.get("_digest")
    if memo is not None and all(a is b for a, b in zip(memo[0], parts)):
        return memo[1]
    images = None
    if stream.images is not None:
        images = stream.images.digest() if hasattr(stream.images, "digest") else None
        if images is None:
            return None
    held = {"labels": tensor_digest(stream.labels), "feats": tensor_digest(stream.feats),
            "norms": tensor_digest(stream.norms), "views": tensor_digest(stream.views), "images": images}
    stream.__dict__["_digest"] = (parts, held)
    return held


def run_stream_cached(method: TTAMethod, stream: Stream, *, cache=None, seed: int = 0, shuffle: bool = True,
                      fetch: int = 8, desc: str | None = None,
                      checkpoint_every_s: float = 300.0) -> tuple[Tensor, bool]:
    """``run_stream``, or its result stored in ``cache`` (a ``vlmlab.features.FeatureCache``) under
    ``stream_key``: the logits and the method's ``stream_state()``, restored with ``load_stream_state``. Returns
    (logits, whether they came from the cache). A run that cannot be keyed (``stream_key`` is None) runs.

    A run that can resume (episodic, or an online method with a ``resume_state``: ``run_stream``) keeps its
    progress beside its cache entry while it runs (``run_stream``'s ``checkpoint``, written every
    ``checkpoint_every_s`` seconds; ``vlmlab.checkpoints.checkpoint_path``), so a stream that was stopped
    resumes after its last saved image; the file is deleted once the run is stored."""
    key = stream_key(method, stream, seed=seed, shuffle=shuffle, fetch=fetch) if cache is not None else None
    if key is not None and (hit := cache.get(key)) is not None:
        method.load_stream_state({k[len("state."):]: v for k, v in hit.items() if k.startswith("state.")})
        return hit["logits"], True
    path = checkpoint_path(cache, key) if key is not None else None
    logits = run_stream(method, stream, seed=seed, shuffle=shuffle, fetch=fetch, desc=desc,
                        checkpoint=Checkpoint(path, key, "TTA stream checkpoint", checkpoint_every_s))
    if key is not None:
        cache.put(key, {"logits": logits, **{f"state.{k}": v for k, v in method.stream_state().items()}})
        path.unlink(missing_ok=True)
    return logits, False


# ---- cost ---------------------------------------------------------------------------------

class _PeakRSS:
    """Peak resident memory above the starting level, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.002):
        import psutil
        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def __enter__(self):
        import ctypes
        import gc
        gc.collect()
        try:                                                        # hand freed heap back to the OS (glibc)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.base = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss - self.base)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def measure_cost(method: TTAMethod, stream: Stream, *, seed: int = 0, repeats: int = 1) -> dict[str, Any]:
    """Wall time per image and peak memory of ``run_stream`` on ``stream``.

    One untimed pass measures memory (and warms up), then the best of ``repeats`` timed passes.
    Pass a stream without precomputed ``feats``/``views`` to include the image encoder's cost.
    Peak memory: CUDA ``max_memory_allocated`` above the level before the run on a GPU; on CPU the
    peak rise of the process's resident set above its level after ``gc`` and glibc ``malloc_trim``,
    sampled every 2 ms (approximate: it misses memory the allocator reuses without returning it).
    """
    dev = method.ctx.bundle.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        run_stream(method, stream, seed=seed, desc="cost")
        torch.cuda.synchronize(dev)
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        with _PeakRSS() as mem:
            run_stream(method, stream, seed=seed, desc="cost")
        peak = mem.peak / 2**20
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        run_stream(method, stream, seed=seed, desc="cost")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - t0)
    return {"ms_per_image": 1000.0 * best / max(len(stream), 1), "peak_mem_mb": peak,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}"}
