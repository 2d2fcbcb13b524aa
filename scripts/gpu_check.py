"""GPU smoke check and GPU-hour estimate of the paper profile (issue 22): `make gpu-check`.

Runs each notebook's paper code path on random-initialised real architectures (open_clip ViT-B-16, RN50,
ViT-B-32; LLaVA-1.5-7B's shape) and synthetic 224-px images, at the paper profile's precision, with CUDA
synchronisation around each timed part and one warm-up run before it. For every workload it prints the
throughput (items/s), the peak GPU memory (``torch.cuda.max_memory_allocated``) and

    estimated hours = paper count / throughput / 3600

where the paper counts are ``PAPER_COUNTS`` below, each with where it comes from. Not in the estimate:
JPEG decoding and corruption of the real files (docs/paper_profile.md: 1,000-2,000 images/s with 8-16
loader processes), evaluation passes, and the cheap rows (linear probe, Tip-Adapter, zero-shot).

    python scripts/gpu_check.py                      # CUDA: the full check (a few minutes)
    python scripts/gpu_check.py --quick              # CUDA: tiny sizes, seconds (a smoke test only)
    python scripts/gpu_check.py --device cpu --quick --json out.json    # what the tests run
    python scripts/gpu_check.py --notebooks 02_uniinfo_tta 05_vlm_blind_tests

On a machine without CUDA (and no ``--device cpu``) it says so and exits 0. Exit 1 when a workload failed
(the table shows its error, e.g. out of GPU memory).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e`

log = logging.getLogger("vlmlab.gpu_check")
NO_CUDA = "gpu-check needs a CUDA GPU; this machine has none"
CPU_NOTE = "cpu, not an estimate of GPU hours"

# ---- the paper run's counts -----------------------------------------------------------------------
COOP_CLASSES = {"OxfordPets": 37, "Flowers102": 102, "FGVCAircraft": 100, "DTD": 47, "EuroSAT": 10,
                "StanfordCars": 196, "Food101": 101, "SUN397": 397, "Caltech101": 100, "UCF101": 101,
                "ImageNet": 1000}          # CoOp's 11 datasets (Zhou et al., IJCV 2022, Table/DATASETS.md)
COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}     # params/paper/03_coop_shots.yaml `epochs`
COOP_IMAGENET_EPOCHS = {1: 50}                             # `epochs_by_dataset`: ImageNet 50 for every K
COOP_RUNS = {1: 4, 2: 4, 4: 4, 8: 4, 16: 8}   # notebooks/src/03_coop_shots.py `variants`: 4 at every K, 4 "@16"
COOP_SEEDS, COOP_BATCH = 3, 32


def epochs_for(table: dict[int, int], shots: int) -> int:
    """CoOp's epochs for K shots: the entry of the largest key <= K (as ``CoOpConfig.epochs_for``)."""
    keys = [k for k in sorted(table) if k <= shots] or [min(table)]
    return table[keys[-1]]


def coop_steps(n_classes: int, epochs: dict[int, int], runs: dict[int, int] = COOP_RUNS,
               batch: int = COOP_BATCH) -> int:
    """Optimiser steps of one dataset and seed: sum over K of runs * epochs * steps per epoch.

    Steps per epoch follow ``train_coop``: n // batch with drop_last when n = K * C >= batch, else 1.
    """
    return sum(r * epochs_for(epochs, k) * (k * n_classes // batch if k * n_classes >= batch else 1)
               for k, r in runs.items())


def coop_reference_steps(classes: dict[str, int] = COOP_CLASSES, seeds: int = COOP_SEEDS,
                         ref: int | None = None) -> float:
    """The paper sweep's optimiser steps (runs x steps), summed over its datasets.

    ``ref`` None (the default): every step counts once. On an H200 a step's time hardly depends on C
    (``benchmarks/bench_coop_paper_grid.py``, 2026-12-04: cached M16 end 48 ms at C = 10, 54 at 100, 61 at 1,000;
    the step is bound by operator dispatch, the device busy 4 of 55 ms at C = 100). With ``ref``, a
    dataset's steps count C / ref times: the FLOP view (the text tower runs over all C class prompts every
    step), right where the arithmetic dominates (a CPU), far off on a GPU."""
    return seeds * sum(coop_steps(c, COOP_IMAGENET_EPOCHS if name == "ImageNet" else COOP_EPOCHS)
                       * (1.0 if ref is None else c / ref) for name, c in classes.items())


TTA_IMAGES = (15 * 50_000, "15 ImageNet-C corruptions x 50,000 images at severity 5, per method "
              "(params/sweeps/paper_02_uniinfo_tta.yaml: n_images and n_images_multiview null)")
PAPER_COUNTS: dict[str, dict[str, tuple[float, str]]] = {
    "01_uniformity_analysis": {
        "images": (50_000 + 15 * 50_000 + 7_500 + 30_000,
                   "ImageNet val 50,000 + 15 ImageNet-C corruptions x 50,000 (severities [5]) + ImageNet-A 7,500 + "
                   "ImageNet-R 30,000 (params/paper/01_uniformity_analysis.yaml; docs/paper_profile.md)"),
        "prompts": (1_000 * 80, "1,000 classes x 80 templates (ensemble: imagenet80)"),
    },
    "02_uniinfo_tta": {"images": TTA_IMAGES},
    "03_coop_shots": {
        "steps": (coop_reference_steps(),
                  "3 seeds x 11 datasets x (4 variants at K = 1, 2, 4, 8, 16 + 4 at K = 16) x CoOp's epochs x "
                  "K*C/32 steps, each counted once: on a GPU a step's time hardly depends on C "
                  "(params/paper/03_coop_shots.yaml, notebooks/src/03_coop_shots.py `variants`; "
                  "benchmarks/bench_coop_paper_grid.py times every C and variant and sums the grid's schedule)"),
    },
    "04_visual_prompt_fid": {
        "images": (444_000 * 1_000 * 3,
                   "~444,000 training images x 1,000 epochs x 3 prompters (docs/sweeps.md; "
                   "params/paper/04_visual_prompt_fid.yaml); evaluation each epoch adds ~11 %"),
    },
    "05_vlm_blind_tests": {
        "questions": (4_000, "~3-4 k test questions: CV-Bench Depth 600, BLINK val ~560, MOCHI trials "
                      "(docs/paper_profile.md)"),
        "finetune questions": (6 * 7 * 50 * 8, "6 variants x 7 tasks x 50 steps x 8 questions "
                               "(params/paper/05_vlm_blind_tests.yaml)"),
    },
}
NOTEBOOKS = tuple(PAPER_COUNTS)
PARAMS = Path(__file__).resolve().parents[1] / "params" / "paper"
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def paper_precision(notebook: str, params: Path = PARAMS) -> str:
    """The autocast precision of the notebook's paper run: params/paper/<nb>.yaml ``precision`` (CLIP
    notebooks) or ``dtype`` (05's LLaVA weights), else fp32 (the notebooks' default)."""
    paper = yaml.safe_load((params / f"{notebook}.yaml").read_text()) or {}
    return paper.get("precision") or DTYPES.get(paper.get("dtype"), "fp32")


PRECISION = {nb: paper_precision(nb) for nb in NOTEBOOKS}


@dataclass(frozen=True)
class Sizes:
    """How much each workload runs: the full check (CUDA) or ``--quick`` (tiny, any device)."""

    images: int = 1024           # 01: images encoded; 02: images of the feature-based methods
    batch: int = 256             # 01's batch_size (params/paper/01); 02 encodes at 512
    prompts: int = 2048
    classes: int = 1000          # 02: ImageNet's classes
    tta_batch: int = 512
    uniinfo_images: int = 256    # 4 steps of UniInfo's batch 64
    uniinfo_batch: int = 64
    multiview_images: int = 8    # TPT / ZERO / MTA: one image at a time
    views: int = 64
    coop_classes: int = 100
    coop_batch: int = 32
    coop_steps: int = 20
    vp_batch: int = 256
    vp_steps: int = 10
    questions: int = 8
    finetune_questions: int = 8
    vp_classes: int = 100        # CIFAR-100's head
    vp_prompt: int = 30          # params/paper/04 prompt_sizes
    llava: str = "llava-1.5-7b"  # or "tiny"
    image_size: int = 224        # model input side (quick: open_clip's force_image_size, same architectures)
    warmup: bool = True


QUICK = Sizes(images=2, batch=2, prompts=4, classes=3, tta_batch=2, uniinfo_images=2, uniinfo_batch=2,
              multiview_images=1, views=2, coop_classes=3, coop_batch=2, coop_steps=2, vp_batch=2, vp_steps=1,
              vp_classes=3, vp_prompt=8, questions=1, finetune_questions=1, llava="tiny", image_size=64,
              warmup=False)


# ---- timing -----------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Wall seconds of ``fn()`` between two CUDA synchronisations, and its result."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def estimate_hours(count: float, per_s: float) -> float:
    """Hours of ``count`` items at ``per_s`` items per second."""
    return count / per_s / 3600.0


def synthetic_images(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 noise: the model's cost does not depend on what the pixels show."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class Check:
    """Runs workloads and collects one row each: throughput, peak memory, paper count, hours."""

    def __init__(self, device: torch.device, sizes: Sizes):
        self.device, self.sizes, self.rows = device, sizes, []

    def run(self, notebook: str, workload: str, unit: str, n: int, fn: Callable[[], object],
            warmup: Callable[[], object] | None = None, total: bool = True):
        """Time ``fn`` (``n`` items of ``unit``) after ``warmup``; record the row; return ``fn``'s result.

        ``total``: the row is part of the paper run (False: an alternative path, left out of the total).
        """
        cuda = self.device.type == "cuda"
        count, source = PAPER_COUNTS[notebook][unit]
        row = {"notebook": notebook, "workload": workload, "unit": unit, "items": n, "total": total,
               "precision": PRECISION[notebook] if cuda else "fp32",     # autocast is CUDA-only (runtime.autocast)
               "paper_count": count, "count_source": source}
        try:
            if warmup is not None and self.sizes.warmup:
                warmup()
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            seconds, out = timed(fn, self.device)
        except Exception as err:  # noqa: BLE001  (a smoke check reports every failure and goes on)
            log.error("%s / %s failed: %s: %s", notebook, workload, type(err).__name__, err)
            self.rows.append({**row, "error": f"{type(err).__name__}: {err}"[:300]})
            return None
        per_s = n / max(seconds, 1e-9)
        row.update(seconds=seconds, per_s=per_s,
                   peak_gb=torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None,
                   hours=estimate_hours(count, per_s) if cuda else None)
        self.rows.append(row)
        log.info("%s / %s: %.3g %s/s", notebook, workload, per_s, unit)
        return out


# ---- the workloads, one function per notebook -------------------------------------------------------

def _bundle(cache: dict, name: str, device: torch.device, precision: str, image_size: int = 224):
    """A random-initialised open_clip model (seeded), shared by the notebooks that use the same one."""
    from vlmlab.models import load_clip

    if name not in cache:
        cache.clear()                        # one model on the GPU at a time
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        extra = {} if image_size == 224 else {"force_image_size": image_size}
        cache[name] = load_clip(name, None, device, precision=precision, **extra)
    cache[name].precision = precision
    return cache[name]


def check_01(chk: Check, models: dict, nb: str = "01_uniformity_analysis") -> None:
    """Notebook 01: ViT-B-16 image features at batch 256 and the 80-template text ensemble."""
    from vlmlab.features import extract_arrays

    s = chk.sizes
    bundle = _bundle(models, "ViT-B-16", chk.device, PRECISION[nb], s.image_size)
    images = synthetic_images(s.images, s.image_size)
    encode = lambda x: extract_arrays(bundle, x, np.zeros(len(x), int), "gpu-check", batch_size=s.batch)  # noqa: E731
    chk.run(nb, f"encode images (ViT-B-16, batch {s.batch})", "images", s.images, lambda: encode(images),
            lambda: encode(images[:s.batch]))
    prompts = [f"a photo of a class {i}." for i in range(s.prompts)]

    def text(p):
        with torch.inference_mode(), bundle.autocast():
            return bundle.encode_texts(p)
    chk.run(nb, "encode prompts (text tower, batch 256)", "prompts", s.prompts, lambda: text(prompts),
            lambda: text(prompts[:256]))


def _tta_inputs(chk: Check, nb: str, bundle):
    """02's shared inputs, timed: single-view features (batch 512) and 64 views per image (8 images a pass)."""
    from vlmlab.tta.base import ArrayImages, encode_item_views, encode_single

    s = chk.sizes
    src = ArrayImages(bundle, synthetic_images(max(s.images, s.uniinfo_images, s.multiview_images), s.image_size))
    def feats(m: int) -> torch.Tensor:                                       # (m, D)
        return torch.cat([encode_single(bundle, src(i)).cpu() for i in torch.arange(m).split(s.tta_batch)])

    def views(m: int) -> torch.Tensor:                                       # (m, V, D)
        return torch.cat([encode_item_views(bundle, src, i, s.views, 0).cpu() for i in torch.arange(m).split(8)])

    f = chk.run(nb, f"features (batch {s.tta_batch})", "images", s.images, lambda: feats(s.images),
                lambda: feats(min(s.tta_batch, s.images)))
    v = chk.run(nb, f"views ({s.views} per image; TPT/ZERO/MTA share them)", "images", s.multiview_images,
                lambda: views(s.multiview_images), lambda: views(1))
    return src, f, v


def check_02(chk: Check, models: dict, nb: str = "02_uniinfo_tta") -> None:
    """Notebook 02: every method the poster times, through ``run_stream`` as the notebook runs it."""
    from vlmlab.prompts import zero_shot_weights
    from vlmlab.tta import Context, Stream, build, run_stream

    s = chk.sizes
    bundle = _bundle(models, "ViT-B-16", chk.device, PRECISION[nb], s.image_size)
    names = [f"class {i}" for i in range(s.classes)]
    ctx = Context(bundle, names, zero_shot_weights(bundle, names, "a photo of a {}").cpu(), "a photo of a {}")
    src, feats, views = _tta_inputs(chk, nb, bundle)
    labels = torch.arange(len(src)) % s.classes
    streams = {"feats": None if feats is None else Stream(labels[:len(feats)], feats=feats, name="feats"),
               "images": Stream(labels[:s.uniinfo_images], images=src, name="images").subset(
                   torch.arange(s.uniinfo_images)),
               "views": None if views is None else Stream(labels[:len(views)], views=views, name="views")}
    plan = [("no_adapt", "feats", {}), ("tda", "feats", {}),
            ("uniinfo", "images", {"batch_size": s.uniinfo_batch}),
            ("tpt", "views", {"n_views": s.views}), ("zero", "views", {"n_views": s.views}),
            ("mta", "views", {"n_views": s.views})]
    for name, kind, overrides in plan:
        stream = streams[kind]
        if stream is None:
            continue                          # its inputs failed; that row already says why
        method = build(name, **overrides)
        method.setup(ctx)
        warm = stream.subset(torch.arange(min(len(stream), max(method.batch_size, 1))))
        chk.run(nb, f"{name} ({kind})", "images", len(stream), lambda: run_stream(method, stream, seed=0),
                lambda: run_stream(method, warm, seed=0))


def check_03(chk: Check, models: dict, nb: str = "03_coop_shots") -> None:
    """Notebook 03: CoOp steps of RN50 with C classes at batch 32, exact (the paper's) and cached mode."""
    from vlmlab.coop import CoOpConfig, TrainSet, train_coop

    s = chk.sizes
    bundle = _bundle(models, "RN50", chk.device, PRECISION[nb], s.image_size)
    c, b, n = s.coop_classes, s.coop_batch, s.coop_batch * s.coop_steps
    names, labels = [f"class {i}" for i in range(c)], torch.arange(n) % c
    data = SimpleNamespace(images=synthetic_images(n, s.image_size))
    cached = torch.nn.functional.normalize(torch.randn(n, min(s.views, 32), bundle.embed_dim), dim=-1)
    sets = {"exact": lambda m: TrainSet(labels[:m], data=data, indices=torch.arange(m)),
            "cached": lambda m: TrainSet(labels[:m], view_feats=cached[:m])}
    for mode, make in sets.items():
        cfg = CoOpConfig(batch_size=b, mode=mode)
        train = lambda m: train_coop(bundle, names, make(m), cfg, epochs=1)  # noqa: E731
        chk.run(nb, f"CoOp {mode} (RN50, C={c}, batch {b})", "steps", s.coop_steps, lambda: train(n),
                lambda: train(b), total=mode == "exact")


def check_04(chk: Check, models: dict, nb: str = "04_visual_prompt_fid") -> None:
    """Notebook 04: padding-prompt training steps through ViT-B-32 at batch 256 (fp16 + GradScaler)."""
    from torch.utils.data import TensorDataset

    from vlmlab.features import arrays_to_input
    from vlmlab.visual_prompts.train import VPConfig, clip_head, train_prompt

    s = chk.sizes
    bundle = _bundle(models, "ViT-B-32", chk.device, PRECISION[nb], s.image_size)
    n = s.vp_batch * s.vp_steps
    x = torch.cat([arrays_to_input(bundle, torch.from_numpy(synthetic_images(s.vp_batch, s.image_size, seed=i)))
                   for i in range(s.vp_steps)])                                         # (n, 3, 224, 224), CPU
    data = TensorDataset(x, torch.arange(n) % s.vp_classes)
    head = clip_head(bundle, [f"class {i}" for i in range(s.vp_classes)])
    cfg = VPConfig(prompt_size=s.vp_prompt, batch_size=s.vp_batch, epochs=1, warmup=0)  # warm-up: lr only, not cost
    train = lambda d: train_prompt(bundle, head, d, cfg)  # noqa: E731
    chk.run(nb, f"padding prompt steps (ViT-B-32, batch {s.vp_batch})", "images", n, lambda: train(data),
            lambda: train(TensorDataset(x[:s.vp_batch], torch.arange(s.vp_batch) % s.vp_classes)))


LLAVA_SHAPES = {   # "llava-1.5-7b": llava-hf/llava-1.5-7b-hf's config.json (CLIP ViT-L/14-336 + Vicuna-7B)
    "tiny": ({"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2},
             {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2}),
    "llava-1.5-7b": ({"image_size": 336, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
                      "num_hidden_layers": 24, "num_attention_heads": 16, "projection_dim": 768},
                     {"vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096}),
}


def _llava_processor(words: list[str], side: int, patch: int):
    """A word-level tokenizer over ``words`` and a LLaVA processor for ``side``-px inputs (no download)."""
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<pad>", "<s>", "</s>", "<image>", *words]))}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", additional_special_tokens=["<image>"])
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1), vocab


def random_llava(shape: str, words: list[str], device: torch.device):
    """A ``LlavaScorer`` around a random-initialised LLaVA of ``shape`` (built on ``device``, bf16 on CUDA).

    Mirrors ``LlavaScorer.__init__`` after its ``from_pretrained`` calls, so nothing is written to disk.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from vlmlab.blind.llava import LlavaScorer

    vision, text = LLAVA_SHAPES[shape]
    processor, vocab = _llava_processor(words, vision["image_size"], vision["patch_size"])
    config = LlavaConfig(vision_config=CLIPVisionConfig(**vision),
                         text_config=LlamaConfig(**{"vocab_size": len(vocab), **text}, pad_token_id=vocab["<pad>"]),
                         image_token_index=vocab["<image>"], vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32   # params/paper/05: dtype bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype).eval()
    scorer = object.__new__(LlavaScorer)
    scorer.processor, scorer.model, scorer.device = processor, model, device
    scorer.tokenizer, scorer.prefix = processor.tokenizer, ""
    scorer.fill = tuple(int(round(255 * m)) for m in processor.image_processor.image_mean)
    return scorer


def check_05(chk: Check, models: dict, nb: str = "05_vlm_blind_tests") -> None:
    """Notebook 05: LLaVA letter scoring (one question per forward) and vision-tower fine-tuning steps."""
    from vlmlab.blind.finetune import FinetuneConfig, finetune_llava
    from vlmlab.blind.llava import canvas
    from vlmlab.blind.tasks import style_task

    s = chk.sizes
    models.clear()
    if chk.device.type == "cuda":
        torch.cuda.empty_cache()
    task = style_task(max(s.questions, s.finetune_questions), seed=0, size=64)
    words = ["USER", ":", "ASSISTANT", "A", "B", "C", "D", ",", "or", "answer", ".", "?",
             *task.question.replace("?", " ?").split()]
    scorer = random_llava(s.llava, words, chk.device)
    canvases, texts = [canvas(q) for q in task.images], task.question_texts()
    score = lambda m: scorer.option_logprobs(canvases[:m], texts[:m], task.n_options)  # noqa: E731
    chk.run(nb, f"letter scoring ({s.llava}, bf16 on CUDA)", "questions", s.questions, lambda: score(s.questions),
            lambda: score(1))
    tune = lambda m: finetune_llava(scorer, task, "vision", config=FinetuneConfig(steps=1, batch_size=m))  # noqa: E731
    chk.run(nb, "fine-tune vision tower (AdamW, incl. the model copy)", "finetune questions", s.finetune_questions,
            lambda: tune(s.finetune_questions), lambda: tune(1))


CHECKS = {"01_uniformity_analysis": check_01, "02_uniinfo_tta": check_02, "03_coop_shots": check_03,
          "04_visual_prompt_fid": check_04, "05_vlm_blind_tests": check_05}


# ---- report -----------------------------------------------------------------------------------------

def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per notebook: total estimated hours of the rows in the paper run (None off CUDA), peak GB, failures."""
    out = {}
    for r in rows:
        nb = out.setdefault(r["notebook"], {"hours": None, "peak_gb": None, "failed": 0})
        if "error" in r:
            nb["failed"] += 1
            continue
        if r["total"] and r.get("hours") is not None:
            nb["hours"] = (nb["hours"] or 0.0) + r["hours"]
        if r.get("peak_gb") is not None:
            nb["peak_gb"] = max(nb["peak_gb"] or 0.0, r["peak_gb"])
    return out


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict], cuda: bool) -> str:
    """The check as plain text: one line per workload, one total per notebook, then where counts come from."""
    head = (f"{'notebook':<22} {'workload':<52} {'prec':<5} {'per s':>9} {'peak GB':>8} {'paper count':>13} "
            f"{'est. hours':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['notebook']:<22} {r['workload'][:52]:<52} FAILED: {r['error']}")
            continue
        hours = _fmt(r["hours"], ".2f") + ("" if r.get("total") else "*") if cuda else CPU_NOTE
        lines.append(f"{r['notebook']:<22} {r['workload'][:52]:<52} {r['precision']:<5} {r['per_s']:>9.3g} "
                     f"{_fmt(r['peak_gb'], '.1f'):>8} {r['paper_count']:>13,.0f} {hours:>10}")
    lines.append("")
    for nb, s in summarise(rows).items():
        total = f"{_fmt(s['hours'], '.1f')} GPU-h (est.), peak {_fmt(s['peak_gb'], '.1f')} GB" if cuda else CPU_NOTE
        lines.append(f"{nb:<22} total {total}" + (f", {s['failed']} FAILED" if s["failed"] else ""))
    lines.append("* an alternative to the paper's path, not in the total")
    lines.append("")
    lines.append("paper counts (per s = units below per second):")
    for nb in dict.fromkeys(r["notebook"] for r in rows):
        for unit, (count, source) in PAPER_COUNTS[nb].items():
            lines.append(f"  {nb} {unit}: {count:,.0f} = {source}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when there is one")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a tiny LLaVA: a smoke test, no estimate")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and totals to this file")
    p.add_argument("--notebooks", nargs="+", choices=NOTEBOOKS, default=list(NOTEBOOKS))
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the check; 0 when every workload ran (or there is no CUDA to check), 1 when one failed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.device != "cpu" and not torch.cuda.is_available():
        sys.stdout.write(NO_CUDA + " (run `python scripts/gpu_check.py --device cpu --quick` to test the script)\n")
        return 0
    device = torch.device(args.device or "cuda")
    chk, models = Check(device, QUICK if args.quick else Sizes()), {}
    for nb in args.notebooks:
        log.info("== %s", nb)
        CHECKS[nb](chk, models)
    cuda = device.type == "cuda"
    sys.stdout.write(f"gpu-check on {torch.cuda.get_device_name(device) if cuda else 'cpu'}"
                     f"{' (--quick)' if args.quick else ''}\n{table(chk.rows, cuda)}\n")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "quick": args.quick, "torch": torch.__version__,
                                         "rows": chk.rows, "notebooks": summarise(chk.rows)}, indent=2))
    return 1 if any("error" in r for r in chk.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
