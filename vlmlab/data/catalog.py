"""Every dataset and weight file the paper profile needs: where it lives, how to tell it is complete, how to get it.

One ``Item`` per thing to obtain. ``where`` says where the loaders look and what "complete" means:

    Tree(candidates, require, n_dirs, min_files, parts)   a folder under the data root (first candidate
                                                          that exists wins, as in ``vlmlab.data.real``)
    File(path, base, hash_prefix, known_hash, alternatives)   one file under the data root or the torch hub
                                                          checkpoints folder (``$TORCH_HOME/hub/checkpoints``), or
                                                          the first of its ``alternatives`` that exists
    HubCache(repo_id, repo_type, needs)                   files in the Hugging Face cache (open_clip tags, LLaVA)

``get`` says how to obtain it: ``Archive`` / ``Download`` (a URL, fetched by pooch with its published
checksum when one is known), ``HubRepo`` (huggingface_hub), or ``Manual`` (a licence or a login stands
in the way; the step and the reason). ``vlmlab data status`` (``vlmlab.data.check``) reads this table and
``vlmlab data fetch`` (``vlmlab.data.fetch``) acts on it.

The table is built from the loaders' own constants where they are L1 (``real.COOP_DATASETS``,
``real.IMAGENET_C_CORRUPTIONS``); the paper-profile extractors of ``vlmlab.visual_prompts.gap`` import their
weight file names from here; ``tests/data/test_catalog.py`` checks the rest (torchvision, the blind
benchmarks, open_clip tags, ``params/paper/*.yaml``) against it. Sizes are approximate download sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlmlab.data.real import COOP_DATASETS, HOW_TO_GET, IMAGENET_C_CORRUPTIONS, IMAGENET_V2_URL, SYNSET_FILES

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception weights
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"                # torchvision AlexNet, the LPIPS backbone
GB = 1e9
COOP_SPLITS_URL = "the Google Drive links of KaiyangZhou/CoOp DATASETS.md"


@dataclass(frozen=True)
class Tree:
    """A folder under the data root; complete when every ``parts`` subfolder has ``n_dirs`` class folders,
    every ``require`` pattern matches, and at least ``min_files`` images lie below it."""
    candidates: tuple[str, ...]
    require: tuple[str, ...] = ()
    n_dirs: int | None = None
    min_files: int | None = None
    parts: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class File:
    """One file: ``base`` "data" (under the data root) or "torch_hub" (``<torch hub>/checkpoints/``)."""
    path: str
    base: str = "data"
    known_hash: str | None = None      # "md5:<hex>" / "sha256:<hex>", as pooch spells it
    hash_prefix: str | None = None     # torch hub file names end in the first 8 hex digits of their sha256
    alternatives: tuple[str, ...] = ()  # other names the loaders accept, tried in order after ``path``


@dataclass(frozen=True)
class HubCache:
    """Files of a Hugging Face repo in the HF cache; each ``needs`` group: one of its names must be there.
    A ``model.safetensors.index.json`` there also requires every shard it lists."""
    repo_id: str
    needs: tuple[tuple[str, ...], ...]
    repo_type: str = "model"


@dataclass(frozen=True)
class Archive:
    """A URL fetched by pooch; ``moves``: (folder or file inside the archive, destination under the data
    root); ``None`` archive folder = a single file, not an archive."""
    url: str
    known_hash: str | None
    moves: tuple[tuple[str | None, str], ...]


@dataclass(frozen=True)
class HubRepo:
    """A Hugging Face repo fetched by huggingface_hub into its cache; ``place``: copied from there into this
    folder under the data root (datasets), ``None``: stays in the cache (weights)."""
    repo_id: str
    repo_type: str = "model"
    allow_patterns: tuple[str, ...] | None = None
    place: str | None = None


@dataclass(frozen=True)
class Manual:
    """Not downloadable by vlmlab: what to do and why (licence, login, a Google Drive link)."""
    steps: str
    reason: str


@dataclass(frozen=True)
class Item:
    name: str
    what: str
    notebooks: tuple[str, ...]
    where: Tree | File | HubCache
    get: tuple[Archive, ...] | HubRepo | Manual
    size_gb: float
    optional: bool = False
    profiles: tuple[str, ...] = ("paper",)

    @property
    def fetchable(self) -> bool:
        return not isinstance(self.get, Manual)

    def how(self) -> str:
        """How to obtain it, in one line (the status table's last column)."""
        if isinstance(self.get, Manual):
            return f"manual: {self.get.steps} ({self.get.reason})"
        return f"vlmlab data fetch {self.name}"


@dataclass(frozen=True)
class Places:
    """Where to look: the data root, the Hugging Face cache (``None``: huggingface_hub's default) and the
    torch hub folder (``None``: ``torch.hub.get_dir()``)."""
    data_root: Path
    hf_cache: Path | None = None
    torch_hub: Path | None = None

    def torch_checkpoints(self) -> Path:
        if self.torch_hub is not None:
            return Path(self.torch_hub) / "checkpoints"
        import torch
        return Path(torch.hub.get_dir()) / "checkpoints"

    def file(self, spec: File) -> Path:
        return (self.torch_checkpoints() if spec.base == "torch_hub" else Path(self.data_root)) / spec.path

    def candidates(self, spec: File) -> list[Path]:
        """Where ``spec`` may be: its ``path``, then its ``alternatives``, in order."""
        return [self.file(File(p, spec.base)) for p in (spec.path, *spec.alternatives)]

    def found_file(self, spec: File) -> Path:
        """The first of ``candidates(spec)`` that exists; ``spec.path``'s when none does."""
        paths = self.candidates(spec)
        return next((p for p in paths if p.is_file()), paths[0])


# ---------------------------------------------------------------------------------------------- the table
NB01, NB02, NB03, NB04, NB05 = ("01_uniformity_analysis", "02_uniinfo_tta", "03_coop_shots",
                                "04_visual_prompt_fid", "05_vlm_blind_tests")
IMAGENET_LOGIN = "ImageNet's terms of access require an account on image-net.org"
# CoOp sets by name: (min images, archive or None, size GB, notebooks); folders come from real.COOP_DATASETS.
_COOP = {
    "Caltech101": (8242, None, 0.13, (NB03,)),
    "OxfordPets": (7349, Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                                 "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c", (("images", "oxford_pets/images"),)),
                   0.79, (NB03, NB04)),
    "StanfordCars": (16185, None, 1.9, (NB03,)),
    "Flowers102": (8189, Archive("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                                 "md5:52808999861908f626f3c1f4e79d11fa", (("jpg", "oxford_flowers/jpg"),)),
                   0.33, (NB03, NB04)),
    "Food101": (101000, Archive("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                                "md5:85eeb15f3717b99a5da872d97d918f87", (("food-101/images", "food-101/images"),)),
                5.0, (NB03, NB04)),
    "FGVCAircraft": (10000, Archive("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/"
                                    "fgvc-aircraft-2013b.tar.gz", None, (("fgvc-aircraft-2013b/data", "fgvc_aircraft"),)),
                     2.75, (NB03,)),
    "SUN397": (108754, Archive("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                               "md5:8ca2778205c41d23104230ba66911c7a", (("SUN397", "sun397/SUN397"),)), 37.0, (NB03, NB04)),
    "DTD": (5640, Archive("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                          "md5:fff73e5086ae6bdbea199a49dfb8a4c1", (("dtd/images", "dtd/images"),)), 0.63, (NB03, NB04)),
    "EuroSAT": (27000, Archive("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                               "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                               "md5:c8fa014336c82ac7804f0398fcb19387", (("2750", "eurosat/2750"),)), 0.09, (NB03, NB04)),
    "UCF101": (13320, None, 0.5, (NB03, NB04)),
}
_COOP_MANUAL = {
    "Caltech101": Manual("extract 101_ObjectCategories.tar.gz (inside caltech-101.zip of "
                         "https://data.caltech.edu/records/mzrjq-6wc02) into <root>/caltech-101/",
                         "the archive nests a tarball inside a zip behind a records page"),
    "StanfordCars": Manual("put cars_train/ and cars_test/ into <root>/stanford_cars/ (CoOp DATASETS.md)",
                           "the Stanford site is offline; the mirrors (Kaggle) need a login"),
    "UCF101": Manual("extract UCF-101-midframes.zip into <root>/ucf101/", f"shared only through {COOP_SPLITS_URL}"),
}


def _coop_items() -> list[Item]:
    items = []
    for name, (min_files, archive, size, nbs) in _COOP.items():
        folder, image_sub, split_file = COOP_DATASETS[name]
        if name == "FGVCAircraft":
            tree = Tree((folder,), require=("images", "variants.txt", *(f"images_variant_{s}.txt"
                                                                      for s in ("train", "val", "test"))),
                        min_files=min_files)
        else:
            tree = Tree((f"{folder}/{image_sub}" if image_sub else folder,), min_files=min_files)
        get = (archive,) if archive else _COOP_MANUAL[name]
        items.append(Item(f"coop/{name}", f"CoOp {name} images", nbs, tree, get, size))
        if split_file:
            items.append(Item(f"coop/{name}-split", f"CoOp split file {split_file}", nbs, File(f"{folder}/{split_file}"),
                              Manual(f"download {split_file} from {COOP_SPLITS_URL} into <root>/{folder}/",
                                     "Google Drive has no stable direct URL"), 0.001))
    return items


def _imagenet_items() -> list[Item]:
    tar = "https://people.eecs.berkeley.edu/~hendrycks/{}.tar"
    zenodo = "https://zenodo.org/records/2235448/files/{}.tar"
    groups = {"noise": IMAGENET_C_CORRUPTIONS[0:3], "blur": IMAGENET_C_CORRUPTIONS[3:7],
              "weather": IMAGENET_C_CORRUPTIONS[7:11], "digital": IMAGENET_C_CORRUPTIONS[11:15]}
    return [
        Item("imagenet-val", "ImageNet val (50,000 images)", (NB01, NB02, NB03, NB04),
             Tree(("imagenet/val", "imagenet/images/val"), n_dirs=1000, min_files=50000),
             Manual("download ILSVRC2012_img_val.tar from https://image-net.org, sort it into <root>/imagenet/val/<wnid>/",
                    IMAGENET_LOGIN), 6.4),
        Item("imagenet-train", "ImageNet train, CoOp layout (1.28 M images)", (NB02, NB03),
             Tree(("imagenet/images/train", "imagenet/train"), n_dirs=1000, min_files=1281167),
             Manual("download ILSVRC2012_img_train.tar from https://image-net.org, extract into "
                    "<root>/imagenet/images/train/<wnid>/", IMAGENET_LOGIN), 138.0),
        Item("imagenet-classnames", "CoOp's ImageNet classnames.txt", (NB03,), File("imagenet/classnames.txt"),
             Manual(f"download classnames.txt from {COOP_SPLITS_URL} into <root>/imagenet/", "Google Drive"), 0.00003),
        Item("imagenet-synsets", "ImageNet's WordNet synonym lists (UniInfo's class names; classnames: synsets)",
             (NB01, NB02), File(f"imagenet/{SYNSET_FILES[0]}", alternatives=tuple(f"imagenet/{f}" for f in SYNSET_FILES[1:])),
             Manual(HOW_TO_GET["imagenet-synsets"], IMAGENET_LOGIN), 0.00003),
        Item("imagenet-c", "ImageNet-C, 15 corruptions x 5 severities", (NB01, NB02),
             Tree(("imagenet-c",), n_dirs=1000, parts=tuple(f"{c}/{s}" for c in IMAGENET_C_CORRUPTIONS for s in range(1, 6))),
             tuple(Archive(zenodo.format(g), None, tuple((c, f"imagenet-c/{c}") for c in cs)) for g, cs in groups.items()),
             63.0),
        Item("imagenet-a", "ImageNet-A (7,500 images, 200 classes)", (NB01, NB03),
             Tree(("imagenet-a", "imagenet-adversarial/imagenet-a"), n_dirs=200, min_files=7500),
             (Archive(tar.format("imagenet-a"), None, (("imagenet-a", "imagenet-a"),)),), 0.69),
        Item("imagenet-r", "ImageNet-R (30,000 images, 200 classes)", (NB01, NB03),
             Tree(("imagenet-r", "imagenet-rendition/imagenet-r"), n_dirs=200, min_files=30000),
             (Archive(tar.format("imagenet-r"), None, (("imagenet-r", "imagenet-r"),)),), 2.1),
        Item("imagenet-v2", "ImageNet-V2 matched-frequency (10,000 images, 1000 classes)", (NB03,),
             Tree(("imagenetv2/imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency-format-val"),
                  n_dirs=1000, min_files=10000),
             (Archive(IMAGENET_V2_URL, None, (("imagenetv2-matched-frequency-format-val",
                                              "imagenetv2/imagenetv2-matched-frequency-format-val"),)),), 1.26),
        Item("imagenet-sketch", "ImageNet-Sketch (50,889 images, 1000 classes)", (NB03,),
             Tree(("imagenet-sketch/images", "imagenet-sketch/sketch", "sketch"), n_dirs=1000, min_files=50889),
             Manual("download ImageNet-Sketch from https://github.com/HaohanWang/ImageNet-Sketch and extract its "
                    "1000 class folders into <root>/imagenet-sketch/images/<wnid>/", "Google Drive / Kaggle"), 8.4),
    ]


def _nb04_items() -> list[Item]:
    svhn = "http://ufldl.stanford.edu/housenumbers/{}_32x32.mat"
    return [
        Item("cifar10", "CIFAR-10 (torchvision layout)", (NB04,),
             Tree(("cifar10/cifar-10-batches-py",), require=("data_batch_5", "test_batch", "batches.meta")),
             (Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a",
                      (("cifar-10-batches-py", "cifar10/cifar-10-batches-py"),)),), 0.17),
        Item("cifar100", "CIFAR-100 (torchvision layout)", (NB04,),
             Tree(("cifar100/cifar-100-python",), require=("train", "test", "meta")),
             (Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5:eb9058c3a382ffc7106e4002c42a8d85",
                      (("cifar-100-python", "cifar100/cifar-100-python"),)),), 0.17),
        Item("svhn", "SVHN train and test .mat files", (NB04,), Tree(("svhn",), require=("train_32x32.mat", "test_32x32.mat")),
             (Archive(svhn.format("train"), "md5:e26dedcc434d2e4c54c9b2d4a06d8373", ((None, "svhn/train_32x32.mat"),)),
              Archive(svhn.format("test"), "md5:eb5a983be6a315427106f1b164d9cef3", ((None, "svhn/test_32x32.mat"),))), 0.24),
        Item("clevr", "CLEVR v1.0 (torchvision CLEVRClassification layout)", (NB04,),
             Tree(("clevr/clevr/CLEVR_v1.0",), require=("images/train", "images/val", "scenes/CLEVR_train_scenes.json",
                                                        "scenes/CLEVR_val_scenes.json"), min_files=85000),
             (Archive("https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip", "md5:b11922020e72d0cd9154779b2d3d07d2",
                      (("CLEVR_v1.0", "clevr/clevr/CLEVR_v1.0"),)),), 18.0),
        Item("resisc45", "NWPU-RESISC45 (45 classes x 700 images)", (NB04,), Tree(("RESISC45",), n_dirs=45, min_files=31500),
             Manual("extract NWPU-RESISC45 into <root>/RESISC45/<class>/", "its authors share it through OneDrive"), 0.4),
        Item("inception-fid", "pytorch-fid Inception-v3 weights", (NB04,), File(INCEPTION_FILE, "torch_hub", hash_prefix="6726825d"),
             (Archive(f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}", None,
                      ((None, INCEPTION_FILE),)),), 0.1),
        Item("alexnet-lpips", "torchvision AlexNet weights (LPIPS backbone)", (NB04,),
             File(ALEXNET_FILE, "torch_hub", hash_prefix="7be5be79"),
             (Archive(f"https://download.pytorch.org/models/{ALEXNET_FILE}", None, ((None, ALEXNET_FILE),)),), 0.24),
    ]


OPENCLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")   # open_clip tries them in this order
# (model, tag as params/paper spells it, open_clip's hf_hub repo, size GB, notebooks)
OPENCLIP_TAGS = (("ViT-B-16", "laion2B-s34B-b88K", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", 0.6, (NB01, NB02)),
                 ("RN50", "openai", "timm/resnet50_clip.openai", 0.41, (NB03,)),
                 ("ViT-B-32", "openai", "timm/vit_base_patch32_clip_224.openai", 0.61, (NB04,)))
LLAVA = "llava-hf/llava-1.5-7b-hf"
BLINK_FOLDERS = ("Semantic_Correspondence", "Visual_Correspondence", "Functional_Correspondence", "Art_Style")


def _nb05_items() -> list[Item]:
    return [
        Item("llava-1.5-7b", f"{LLAVA} checkpoint", (NB05,),
             HubCache(LLAVA, (("config.json",), ("model.safetensors.index.json",), ("preprocessor_config.json",),
                              ("tokenizer_config.json",))),
             HubRepo(LLAVA, allow_patterns=("*.json", "*.safetensors", "tokenizer.model")), 14.1),
        Item("cv-bench", "CV-Bench (nyu-visionx/CV-Bench)", (NB05,), Tree(("cv-bench",), require=("test.parquet",)),
             HubRepo("nyu-visionx/CV-Bench", "dataset", ("test.parquet",), place="cv-bench"), 0.3),
        Item("blink", "BLINK val, 4 subtasks (BLINK-Benchmark/BLINK)", (NB05,),
             Tree(("blink",), require=tuple(f"{s}/val-*.parquet" for s in BLINK_FOLDERS)),
             HubRepo("BLINK-Benchmark/BLINK", "dataset", tuple(f"{s}/val-*.parquet" for s in BLINK_FOLDERS), place="blink"),
             0.3),
        Item("mochi", "MOCHI (tzler/MOCHI)", (NB05,), Tree(("mochi",), require=("data/*.parquet",)),
             HubRepo("tzler/MOCHI", "dataset", ("data/*.parquet",), place="mochi"), 1.0),
        Item("blink-keypoints", "BLINK correspondence keypoints (readout only)", (NB05,),
             Tree(("blink/keypoints",), require=tuple(f"{s}.json" for s in BLINK_FOLDERS[:3])),
             Manual("write blink/keypoints/<Subtask>.json from SPair-71k, HPatches, FunKPoint (vlmlab/blind/benchmarks.py)",
                    "BLINK ships the points drawn on the images only"), 0.001, optional=True),
    ]


def _openclip_items() -> list[Item]:
    return [Item(f"openclip/{m}/{tag}", f"open_clip {m} {tag} weights", nbs, HubCache(repo, (OPENCLIP_FILES,)),
                 HubRepo(repo, allow_patterns=OPENCLIP_FILES), size)
            for m, tag, repo, size, nbs in OPENCLIP_TAGS]


ITEMS: dict[str, Item] = {i.name: i for i in (*_imagenet_items(), *_coop_items(), *_nb04_items(),
                                              *_openclip_items(), *_nb05_items())}


def select(profile: str = "paper", notebooks: list[str] | None = None, names: list[str] | None = None) -> list[Item]:
    """Items of ``profile`` needed by ``notebooks`` (``None``: all), or exactly ``names``.

    Raises:
        KeyError: an unknown name or notebook, listing the known ones.
    """
    if names:
        unknown = [n for n in names if n not in ITEMS]
        if unknown:
            raise KeyError(f"unknown data item(s) {unknown}; known: {sorted(ITEMS)}")
        return [ITEMS[n] for n in names]
    known_nbs = {nb for i in ITEMS.values() for nb in i.notebooks}
    wrong = [nb for nb in notebooks or [] if nb not in known_nbs]
    if wrong:
        raise KeyError(f"no data declared for notebook(s) {wrong}; notebooks with data: {sorted(known_nbs)}")
    return [i for i in ITEMS.values() if profile in i.profiles and (not notebooks or set(i.notebooks) & set(notebooks))]
