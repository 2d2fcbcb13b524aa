"""Loaders for the paper profile's real datasets under a user data root (``runtime.data_root()``).

Layouts (``<root>`` = the data root; the first existing candidate wins):

    ImageNet val   <root>/imagenet/val/<wnid>/*.JPEG  or  <root>/imagenet/images/val/<wnid>/ (CoOp)
    ImageNet-C     <root>/imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG   (Hendrycks' tarballs)
    ImageNet-A     <root>/imagenet-a/<wnid>/  or  <root>/imagenet-adversarial/imagenet-a/<wnid>/ (CoOp)
    ImageNet-R     <root>/imagenet-r/<wnid>/  or  <root>/imagenet-rendition/imagenet-r/<wnid>/ (CoOp)
    ImageNet-V2    <root>/imagenetv2/imagenetv2-matched-frequency-format-val/<class index>/ (CoOp; folders 0..999)
    ImageNet-Sketch <root>/imagenet-sketch/images/<wnid>/ (CoOp) or <root>/imagenet-sketch/sketch/<wnid>/ (the
                   release's own folder name)
    CoOp datasets  <root>/<folder>/<image_dir>/... + <root>/<folder>/split_zhou_<Name>.json

Labels of ImageNet folders are the sorted wnid order, which is the standard 1000-class index.
Class names come from a ``classnames.txt`` ("<wnid> <name>" per line, CoOp's format) looked up in
the dataset folder, then ``<root>/imagenet/``; without one the wnids themselves are the names.
Curated names: CoOp's ``classnames.txt`` (Google Drive link in KaiyangZhou/CoOp ``DATASETS.md``,
copied from CLIP's ``Prompt_Engineering_for_ImageNet.ipynb``); the same 1000 names in class-index
order are ``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES``. UniInfo instead uses all WordNet
synonyms of a class joined by ", " ("tench, Tinca tinca"; its ``dataset/idx_to_classes.json``,
``uniinfo_tta.md`` §2.1), the ILSVRC2012 devkit's synset words: ``classnames="synsets"`` reads them from
``<root>/imagenet/`` (``SYNSET_FILES``: ``synset_words.txt`` as Caffe's ilsvrc12 data names it, Kaggle's
``LOC_synset_mapping.txt``, both "<wnid> <words>" per line, or torchvision's ``meta.bin``, which
``torchvision.datasets.imagenet.parse_devkit_archive`` writes from the devkit). Any other ``classnames=`` is a
file of your own.

ImageNet-V2 and ImageNet-Sketch hold all 1000 classes, labelled by the standard index (V2's folder number,
Sketch's sorted wnids), as CoOp's ``datasets/imagenetv2.py`` and ``imagenet_sketch.py`` read them; their
class names come from a ``classnames.txt`` in their folder, then ``<root>/imagenet/``.

ImageNet-A/R hold 200 of the 1000 classes. Their labels index the 200-class subset (sorted wnids)
and ``ds.imagenet_indices`` (200,) maps them into a 1000-class head (TPT's ``imagenet_a_mask`` /
``imagenet_r_mask``); it is computed from the 1000 wnids of ``<root>/imagenet/classnames.txt`` or
``<root>/imagenet/val/``, and is ``None`` (with a warning) when neither is there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from vlmlab.data.base import IMAGE_EXTENSIONS, DatasetNotFound, ImageDataset, log
from vlmlab.runtime import FETCH_HINT, data_root

IMAGENET_C_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression")
IMAGENET_C_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

# classnames="synsets": UniInfo's class names, every WordNet synonym joined by ", ", looked for under <root>/imagenet/.
SYNSETS = "synsets"
SYNSET_FILES = ("synset_words.txt", "LOC_synset_mapping.txt", "meta.bin")

IMAGENET_V2_URL = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz"

# One line per dataset: how to obtain it (CoOp's per-dataset instructions live in its DATASETS.md).
HOW_TO_GET = {
    "imagenet": "download ILSVRC2012 val from https://image-net.org, sort it into <wnid>/ folders "
                "(torchvision ImageFolder layout) and add CoOp's classnames.txt (KaiyangZhou/CoOp DATASETS.md)",
    "imagenet-synsets": "Kaggle's ImageNet (imagenet-object-localization-challenge) has LOC_synset_mapping.txt, Caffe's "
                        "ilsvrc12 data synset_words.txt: copy either into <root>/imagenet/; or put "
                        "ILSVRC2012_devkit_t12.tar.gz (image-net.org) there and run torchvision.datasets.imagenet."
                        "parse_devkit_archive('<root>/imagenet'), which writes meta.bin",
    "imagenet-c": "download noise/blur/weather/digital(/extra).tar from https://zenodo.org/record/2235448 "
                  "(hendrycks/robustness) and extract them into <root>/imagenet-c/",
    "imagenet-a": "download https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar and extract it into <root>/",
    "imagenet-r": "download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and extract it into <root>/",
    "imagenetv2": f"download {IMAGENET_V2_URL} and extract it into <root>/imagenetv2/ (CoOp DATASETS.md; "
                  "https://github.com/modestyachts/ImageNetV2)",
    "imagenet-sketch": "download ImageNet-Sketch (https://github.com/HaohanWang/ImageNet-Sketch: Google Drive or "
                       "Kaggle) and extract its class folders into <root>/imagenet-sketch/images/ (CoOp DATASETS.md)",
    "ImageNet": "see 'imagenet' above; CoOp layout <root>/imagenet/images/{train,val}/ + classnames.txt",
    "Caltech101": "101_ObjectCategories.tar.gz from https://data.caltech.edu/records/mzrjq-6wc02 into <root>/caltech-101/ "
                  "+ split_zhou_Caltech101.json (CoOp DATASETS.md)",
    "OxfordPets": "images.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ into <root>/oxford_pets/ "
                  "+ split_zhou_OxfordPets.json (CoOp DATASETS.md)",
    "StanfordCars": "cars_train/cars_test images into <root>/stanford_cars/ + split_zhou_StanfordCars.json "
                    "(CoOp DATASETS.md)",
    "Flowers102": "102flowers.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into <root>/oxford_flowers/ "
                  "+ split_zhou_OxfordFlowers.json (CoOp DATASETS.md)",
    "Food101": "food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ into <root>/ "
               "+ split_zhou_Food101.json (CoOp DATASETS.md)",
    "FGVCAircraft": "fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/; move its "
                    "data/ folder to <root>/fgvc_aircraft/ (images/, variants.txt, images_variant_*.txt)",
    "SUN397": "SUN397.tar.gz from https://vision.princeton.edu/projects/2010/SUN/ into <root>/sun397/ "
              "+ split_zhou_SUN397.json (CoOp DATASETS.md)",
    "DTD": "dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/ into <root>/ "
           "+ split_zhou_DescribableTextures.json (CoOp DATASETS.md)",
    "EuroSAT": "EuroSAT.zip (RGB) from https://github.com/phelber/EuroSAT into <root>/eurosat/ (gives 2750/) "
               "+ split_zhou_EuroSAT.json (CoOp DATASETS.md)",
    "UCF101": "UCF-101-midframes.zip (CoOp DATASETS.md) into <root>/ucf101/ + split_zhou_UCF101.json",
}

# CoOp's 11 datasets: name -> (folder, image_dir, split file); paths as in KaiyangZhou/CoOp datasets/*.py.
# FGVCAircraft has no JSON (official images_variant_<split>.txt); ImageNet has none either (val = test).
COOP_DATASETS: dict[str, tuple[str, str, str | None]] = {
    "ImageNet": ("imagenet", "images", None),
    "Caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "OxfordPets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "StanfordCars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "Flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "Food101": ("food-101", "images", "split_zhou_Food101.json"),
    "FGVCAircraft": ("fgvc_aircraft", "images", None),
    "SUN397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "DTD": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "EuroSAT": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "UCF101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}


def _missing(path: Path, what: str, how: str) -> DatasetNotFound:
    return DatasetNotFound(f"{what} not found: looked in {str(path)!r}. To obtain it: {HOW_TO_GET[how]}. "
                           f"Point vlmlab at your data with data_root= or $VLMLAB_DATA; {FETCH_HINT}.")


def _first_dir(candidates: list[Path], what: str, how: str) -> Path:
    for c in candidates:
        if c.is_dir():
            return c
    looked = " or ".join(repr(str(c)) for c in candidates)
    raise DatasetNotFound(f"{what} not found: looked in {looked}. To obtain it: {HOW_TO_GET[how]}. "
                          f"Point vlmlab at your data with data_root= or $VLMLAB_DATA; {FETCH_HINT}.")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_folders(image_dir: Path, label_of=None) -> tuple[list[str], list[tuple[str, int]]]:
    """ImageFolder scan: sorted class folders -> (folder names, (path, label) samples). The label is the folder's
    place in sorted order, or ``label_of(folder)`` (folders then sorted by it) when given."""
    folders = [e.name for e in os.scandir(image_dir) if e.is_dir() and not e.name.startswith(".")]
    folders = sorted(folders, key=label_of) if label_of else sorted(folders)
    if not folders:
        raise DatasetNotFound(f"no class folders in {str(image_dir)!r} (expected <class>/<image> files)")
    samples = []
    for label, folder in enumerate(folders):
        names = sorted(e.name for e in os.scandir(image_dir / folder) if e.is_file() and _is_image(e.name))
        samples += [(str(image_dir / folder / n), label_of(folder) if label_of else label) for n in names]
    return folders, samples


def read_classnames(path: str | Path) -> dict[str, str]:
    """CoOp ``classnames.txt``: lines ``"<wnid> <class name>"`` -> {wnid: name}, file order kept.

    A torchvision ImageNet ``meta.bin`` (any ``.bin``) gives each wnid's synonyms joined by ", ", in wnid order.
    """
    path = Path(path)
    if path.suffix == ".bin":
        from torchvision.datasets.imagenet import load_meta_file
        wnid_to_classes, _ = load_meta_file(path.parent, path.name)
        return {w: ", ".join(wnid_to_classes[w]) for w in sorted(wnid_to_classes)}
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            out[wnid] = name.strip() or wnid
    return out


def synset_file(root=None) -> Path:
    """The WordNet synonym list under ``<root>/imagenet/`` (the first of ``SYNSET_FILES`` there).

    Raises:
        DatasetNotFound: none is there; the message says where each comes from.
    """
    folder = data_root(root) / "imagenet"
    found = next((folder / f for f in SYNSET_FILES if (folder / f).is_file()), None)
    if found is None:
        raise DatasetNotFound(
            f"classnames='synsets' needs ImageNet's WordNet synonym list in {str(folder)!r}, one of {SYNSET_FILES}. "
            f"It ships with ImageNet: {HOW_TO_GET['imagenet-synsets']}. Or set classnames to '' for CoOp's "
            f"curated names (classnames.txt; a departure from UniInfo's prompts, docs/fidelity.md)")
    return found


def _class_files(classnames: str | Path | None, root: Path, defaults: list[Path]) -> list[Path]:
    """Class-name files to try: ``defaults`` (None / ""), the synonym list ("synsets") or the file given."""
    if not classnames:
        return defaults
    if str(classnames) == SYNSETS:
        return [synset_file(root)]
    if not Path(classnames).is_file():          # a file asked for by name is never silently replaced by wnids
        raise FileNotFoundError(f"classnames={str(classnames)!r} is not a file; give a '<wnid> <name>' file, "
                                f"'{SYNSETS}' or '' (classnames.txt)")
    return [Path(classnames)]


def _names_for(wnids: list[str], files: list[Path]) -> list[str]:
    for f in files:
        if f.is_file():
            table = read_classnames(f)
            missing = [w for w in wnids if w not in table]
            if missing:
                raise KeyError(f"{str(f)!r} has no class name for {missing[:3]} ({len(missing)} missing); "
                               f"use CoOp's classnames.txt or fix the file")
            return [table[w] for w in wnids]
    log.info("no classnames.txt in %s; using folder names as class names", [str(f) for f in files])
    return list(wnids)


def _build(samples, classnames, name, image_dir, split, *, transform, on_error, verify, n, max_per_class,
           seed, meta=None, imagenet_indices=None) -> ImageDataset:
    ds = ImageDataset(samples, classnames, name, root=image_dir, split=split, transform=transform, meta=meta,
                      on_error=on_error, imagenet_indices=imagenet_indices)
    ds = ds.limit(n=n, max_per_class=max_per_class, seed=seed)
    if verify:
        ds.verify()
    log.info("%s %s: %d images, %d classes from %s", name, split, len(ds), len(classnames), image_dir)
    return ds


def _imagenet_folder(image_dir: Path, name: str, split: str, classnames_files: list[Path], kw) -> ImageDataset:
    wnids, samples = _scan_folders(image_dir)
    return _build(samples, _names_for(wnids, classnames_files), name, image_dir, split, **kw)


def imagenet_val(root=None, *, classnames=None, transform=None, on_error="raise", verify=False,
                 n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet validation set (50,000 images, 1000 classes), labels = sorted wnid index.

    Args:
        root: data root (default ``runtime.data_root()``).
        classnames: a ``classnames.txt`` to use instead of ``<root>/imagenet/classnames.txt``, or ``"synsets"``
            for the WordNet synonym lists (UniInfo's class names; see the module docstring).
        n, max_per_class, seed: optional seeded subset (``ImageDataset.limit``).
    """
    root = data_root(root)
    image_dir = _first_dir([root / "imagenet" / "val", root / "imagenet" / "images" / "val"], "ImageNet val", "imagenet")
    files = _class_files(classnames, root, [root / "imagenet" / "classnames.txt"])
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    return _imagenet_folder(image_dir, "imagenet", "test", files, kw)


def imagenet_c(root, corruption: str, severity: int = 5, *, classnames=None,
               transform=None, on_error="raise", verify=False, n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet-C, one corruption at one severity (1..5): 50,000 224x224 JPEGs, 1000 classes.

    Args:
        root: data root (``None`` = ``runtime.data_root()``).
        corruption: a folder under ``<root>/imagenet-c/`` (``IMAGENET_C_CORRUPTIONS``, ``IMAGENET_C_EXTRA``).
        severity: 1..5 (UniInfo uses 5).
    """
    if int(severity) not in range(1, 6):
        raise ValueError(f"ImageNet-C severity must be 1..5, got {severity!r}")
    root = data_root(root)
    base = root / "imagenet-c"
    image_dir = base / corruption / str(int(severity))
    if not image_dir.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        err = _missing(image_dir, f"ImageNet-C {corruption} severity {severity}", "imagenet-c")
        err.args = (err.args[0] + f" Corruptions present under {str(base)!r}: {found or 'none'}.",)
        raise err
    files = _class_files(classnames, root, [base / "classnames.txt", root / "imagenet" / "classnames.txt"])
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed,
              meta={"corruption": corruption, "severity": int(severity)})
    return _imagenet_folder(image_dir, f"imagenet-c/{corruption}/{int(severity)}", "test", files, kw)


def imagenet_1k_wnids(root=None) -> list[str] | None:
    """The 1000 ImageNet wnids in class-index order, from ``classnames.txt`` or the val folders."""
    root = data_root(root)
    f = root / "imagenet" / "classnames.txt"
    if f.is_file():
        return sorted(read_classnames(f))
    for d in (root / "imagenet" / "val", root / "imagenet" / "images" / "val"):
        if d.is_dir():
            return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
    return None


def _imagenet_subset(root, variant: str, coop_folder: str, classnames, kw) -> ImageDataset:
    root = data_root(root)
    image_dir = _first_dir([root / variant, root / coop_folder / variant], variant, variant)
    wnids, samples = _scan_folders(image_dir)
    if len(wnids) != 200:
        log.warning("%s: %d class folders in %s (the release has 200)", variant, len(wnids), image_dir)
    files = _class_files(classnames, root, [image_dir / "classnames.txt", image_dir.parent / "classnames.txt",
                                            root / "imagenet" / "classnames.txt"])
    all_wnids = imagenet_1k_wnids(root)
    indices = None
    if all_wnids is None:
        log.warning("%s: no ImageNet wnid list (looked for %s and its val/ folders); .imagenet_indices is None",
                    variant, root / "imagenet" / "classnames.txt")
    else:
        pos = {w: i for i, w in enumerate(all_wnids)}
        unknown = [w for w in wnids if w not in pos]
        if unknown:
            raise KeyError(f"{variant} folders {unknown[:3]} are not ImageNet wnids of {root / 'imagenet'}")
        indices = [pos[w] for w in wnids]
    return _build(samples, _names_for(wnids, files), variant, image_dir, "test", imagenet_indices=indices, **kw)


def imagenet_a(root=None, *, classnames=None, transform=None, on_error="raise", verify=False,
               n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet-A (7,500 natural adversarial images, 200 classes); see the module doc for ``imagenet_indices``."""
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    return _imagenet_subset(root, "imagenet-a", "imagenet-adversarial", classnames, kw)


def imagenet_r(root=None, *, classnames=None, transform=None, on_error="raise", verify=False,
               n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet-R (30,000 renditions, 200 classes); see the module doc for ``imagenet_indices``."""
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    return _imagenet_subset(root, "imagenet-r", "imagenet-rendition", classnames, kw)


def imagenet_v2(root=None, *, classnames=None, transform=None, on_error="raise", verify=False,
                n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet-V2 matched-frequency (10,000 images, 1000 classes): folder ``<k>/`` holds class ``k``.

    Class names: ``classnames.txt`` in ``<root>/imagenetv2/``, then ``<root>/imagenet/``, its wnids in sorted
    order giving classes 0..999 (CoOp's file is sorted; it reads them in file order); without one, the
    folder numbers are the names.
    """
    root = data_root(root)
    folder = "imagenetv2-matched-frequency-format-val"
    image_dir = _first_dir([root / "imagenetv2" / folder, root / folder], "ImageNet-V2", "imagenetv2")

    def class_number(folder: str) -> int:
        if not folder.isdigit():
            raise DatasetNotFound(f"ImageNet-V2 in {str(image_dir)!r} should hold class folders 0..999, found "
                                  f"{folder!r}")
        return int(folder)

    folders, samples = _scan_folders(image_dir, label_of=class_number)
    n_classes = int(folders[-1]) + 1
    if n_classes != 1000 or len(folders) != 1000:
        log.warning("ImageNet-V2: %d class folders up to %d in %s (the release has 0..999)", len(folders),
                    n_classes - 1, image_dir)
    files = _class_files(classnames, root, [image_dir.parent / "classnames.txt", root / "imagenet" / "classnames.txt"])
    table = next((read_classnames(f) for f in files if f.is_file()), None)
    if table is None:
        log.info("ImageNet-V2: no classnames.txt in %s; using folder numbers as class names", [str(f) for f in files])
        names = [str(k) for k in range(n_classes)]
    else:
        wnids = sorted(table)
        if len(wnids) < n_classes:
            raise KeyError(f"the class-name file lists {len(wnids)} wnids but ImageNet-V2 has class {n_classes - 1}")
        names = [table[w] for w in wnids[:n_classes]]
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    return _build(samples, names, "imagenetv2", image_dir, "test", **kw)


def imagenet_sketch(root=None, *, classnames=None, transform=None, on_error="raise", verify=False,
                    n=None, max_per_class=None, seed=0) -> ImageDataset:
    """ImageNet-Sketch (50,889 sketches, 1000 classes), labels = sorted wnid index as ImageNet's."""
    root = data_root(root)
    base = root / "imagenet-sketch"
    image_dir = _first_dir([base / "images", base / "sketch", root / "sketch"], "ImageNet-Sketch", "imagenet-sketch")
    files = _class_files(classnames, root, [base / "classnames.txt", root / "imagenet" / "classnames.txt"])
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    ds = _imagenet_folder(image_dir, "imagenet-sketch", "test", files, kw)
    if len(ds.classnames) != 1000:
        log.warning("ImageNet-Sketch: %d class folders in %s (the release has 1000)", len(ds.classnames), image_dir)
    return ds


def _read_split_json(path: Path, image_dir: Path, split: str) -> tuple[list, list[str]]:
    """CoOp ``split_zhou_*.json``: {"train"|"val"|"test": [[rel_path, label, classname], ...]}."""
    table = json.loads(path.read_text())
    if split not in table:
        raise KeyError(f"{str(path)!r} has no split {split!r}; it has {sorted(table)}")
    names: dict[int, str] = {}
    for part in table.values():
        for _, label, cname in part:
            names.setdefault(int(label), cname)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{str(path)!r}: labels are not 0..{len(names) - 1}")
    samples = [(str(image_dir / rel), int(label)) for rel, label, _ in table[split]]
    return samples, [names[i] for i in range(len(names))]


def _read_fgvc(folder: Path, image_dir: Path, split: str) -> tuple[list, list[str]]:
    """FGVC-Aircraft: ``variants.txt`` (class names) + ``images_variant_<split>.txt`` ("<id> <variant>")."""
    for f in (folder / "variants.txt", folder / f"images_variant_{split}.txt"):
        if not f.is_file():
            raise _missing(f, "FGVCAircraft file", "FGVCAircraft")
    classnames = [ln.strip() for ln in (folder / "variants.txt").read_text().splitlines() if ln.strip()]
    lab = {c: i for i, c in enumerate(classnames)}
    samples = []
    for ln in (folder / f"images_variant_{split}.txt").read_text().splitlines():
        if ln.strip():
            imid, _, variant = ln.strip().partition(" ")
            samples.append((str(image_dir / f"{imid}.jpg"), lab[variant]))
    return samples, classnames


def coop_dataset(root, name: str, split: str = "test", *, transform=None, on_error="raise",
                 verify=False, n=None, max_per_class=None, seed=0) -> ImageDataset:
    """One of CoOp's 11 datasets with CoOp's fixed split (``COOP_DATASETS``).

    Args:
        root: data root (``None`` = ``runtime.data_root()``).
        name: a key of ``COOP_DATASETS`` (``"OxfordPets"``, ``"EuroSAT"``, ... ``"ImageNet"``).
        split: ``"train"``, ``"val"`` or ``"test"`` (ImageNet: val = test = the official val set).
    Class names are the split file's, as CoOp uses them (prompts replace "_" by " ").
    """
    if name not in COOP_DATASETS:
        raise KeyError(f"unknown CoOp dataset {name!r}; known: {sorted(COOP_DATASETS)}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r}; use 'train', 'val' or 'test'")
    root = data_root(root)
    folder_name, image_sub, split_file = COOP_DATASETS[name]
    folder = root / folder_name
    kw = dict(transform=transform, on_error=on_error, verify=verify, n=n, max_per_class=max_per_class, seed=seed)
    if name == "ImageNet":
        sub = "train" if split == "train" else "val"
        image_dir = _first_dir([folder / "images" / sub, folder / sub], f"ImageNet {sub}", "ImageNet")
        return _imagenet_folder(image_dir, "coop/ImageNet", split, [folder / "classnames.txt"], kw)
    image_dir = folder / image_sub if image_sub else folder
    if not image_dir.is_dir():
        raise _missing(image_dir, f"{name} images", name)
    if split_file is None:
        samples, classnames = _read_fgvc(folder, image_dir, split)
    else:
        if not (folder / split_file).is_file():
            raise _missing(folder / split_file, f"{name} split file", name)
        samples, classnames = _read_split_json(folder / split_file, image_dir, split)
    return _build(samples, classnames, f"coop/{name}", image_dir, split, **kw)
