"""Train the embedded VLM (``TinyVLM``) as LLaVA is built, in three stages; ``make train-embedded-vlm``.

1. *language pre-training* (the LM alone, no images): dialogues of ``vlmlab.blind.corpus`` in which
   every image is a slot of ``slot_tokens`` mixtures of its attribute words' embeddings ("A [red star
   grass ...] B [blue ring sky ...] which image has a red object ? answer A or B ." -> "A"), mostly
   letter questions, some captions and single-image questions. Its first ``query_last_steps`` are
   one-turn letter questions with the asked value repeated at the prompt's end (the curriculum of the
   ``corpus`` docstring). LLaVA starts from a pre-trained LLM; this stage stands in for it;
2. *alignment* (LLaVA stage 1): the projector alone, the LM frozen, on captions ("describe the image ."
   -> a world caption) and, unlike LLaVA's captions-only stage (``align_questions=False``), single- and
   multi-image questions, plus ``word_alignment_loss``: each image's mean projected token is pulled
   to the mean embedding of its attribute words, where stage 1's slots live; and
   ``word_classification_loss``: each attribute is classified from that token among its words, so the
   projection keeps shape and texture too (without it they fell to chance on single images);
3. *instruction tuning* (LLaVA stage 2): projector and LM on images: captions, single-image questions
   and multi-image letter questions (2-4 labelled images, 1-3 turns), in the notebook's answer format,
   with ``word_classification_loss`` still on (``tune_classify``): without it the tuned projector let
   shape go again (single-image shape / texture 12.0 / 53.2 %, the 4-image shape control 46.5 %; with it
   24.8 / 80.9 / 83.3 %).

Why this recipe (held-out 4-image / 2-image letter questions; ``MODEL_CARD.md`` has the table):

* the curriculum: on text alone (the same Llama, 64 dialogues per step, lr 2e-3, 2-4 images, all
  four attributes) the value in its natural place only left letter accuracy at chance for 1,800 steps;
  with the value repeated last, 100 % by step 600; 500 steps of that and then the natural place only:
  70 % at step 900, 98 % at 1,000;
* mixtures, not words: with slots of words, stage 1 reached 100 % in words, but neither captions-only
  alignment (27 % / 54 % after 1,500 instruction steps) nor alignment with questions (23 % / 48 % after
  alignment, 25 % / 51 % 500 instruction steps later) carried it over to image tokens; with mixture
  slots and the word-alignment loss, 66 % / 78 % after 250 alignment steps, 80 % / 90 % after 1,000.

The vision trunk is the shipped CLIP's, frozen throughout, so the patch tokens of the image pool are
computed once. The notebook's four vision-centric tasks (depth, correspondence, odd-one-out, style
match) are in no stage, as CV-Bench and BLINK were not in LLaVA's data. At the end the control
questions of notebook 05 (``tasks.control_task``: held-out scenes in the tasks' answer formats) and
single-image questions on held-out pool images are measured; ``train_log.json`` and the weights'
metadata keep them.

Deterministic for a thread count (seeded), resumable from ``checkpoints/embedded_vlm/last.pt``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlmlab.blind.corpus import (MULTI_QUESTIONS, SINGLE_QUESTIONS, SLOT_ATTRIBUTES, Dialogue, Mixture, answer_word,
                                 attribute_word_ids, collate, encode, slot_mixture)
from vlmlab.blind.tasks import CONTROLS, LETTERS, control_task, options_text
from vlmlab.blind.vlm import TinyVLM, VLMConfig, WordTokenizer
from vlmlab.models.train_embedded import load_checkpoint
from vlmlab.runtime import REPO_ROOT, get_logger, progress, seed_everything
from vlmlab.world.captions import caption
from vlmlab.world.datasets import training_pool
from vlmlab.world.scene import COUNT_WORDS

__all__ = ["MULTI_QUESTIONS", "SINGLE_QUESTIONS", "VLMTrainConfig", "answer_word", "train"]
log = get_logger(__name__)

WEIGHTS = REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"
STAGES = ("language", "alignment", "instruction")


@dataclass(frozen=True)
class VLMTrainConfig:
    text_steps: int = 2500       # stage 1: the LM on text-only dialogues (images as slots)
    align_steps: int = 1000      # stage 2: the projector alone (LM frozen) ...
    align_questions: bool = True  # ... on captions and questions; False: captions only, as LLaVA's stage 1
    slot_tokens: int = 8         # stage 1 writes an image as this many word-embedding mixtures (0: as words)
    word_align: float = 1.0      # stage 2: weight of word_alignment_loss
    word_classify: float = 1.0   # stage 2: weight of word_classification_loss (0: off, the recipe before 2026-12)
    tune_classify: float = 1.0   # stage 3: the same loss's weight while the LM is tuned (0: stage 2 only)
    steps: int = 3000            # stage 3: projector + LM on images
    text_batch_size: int = 64
    batch_size: int = 32
    lr: float = 2e-3             # stages 1 and 2
    tune_lr: float = 1e-3        # stage 3
    warmup: int = 100
    weight_decay: float = 0.01
    query_last_steps: int = 800  # stage 1 curriculum: one-turn letter questions only, the asked value repeated last
    pool_size: int = 20_000
    vision_layer: str = "layer3+layer4"  # VisionTrunk's outputs; "+pool" adds the CLIP embedding to every token
    width: int = 96
    layers: int = 4
    heads: int = 4
    mlp: int = 256
    seed: int = 0
    threads: int = 2
    ckpt_every: int = 200
    eval_every: int = 250

    def stage_of(self, step: int) -> tuple[int, int, int]:
        """(stage index, step within the stage, the stage's length) of global ``step``."""
        lengths = (self.text_steps, self.align_steps, self.steps)
        for stage, n in enumerate(lengths):
            if step < n:
                return stage, step, n
            step -= n
        raise IndexError("step past the end of training")

    @property
    def total_steps(self) -> int:
        return self.text_steps + self.align_steps + self.steps


def vocabulary_texts(scenes, rng: np.random.Generator, n_captions: int = 20_000) -> list[str]:
    """Every text the mixture and the notebook's tasks can produce, for the word-level vocabulary."""
    from vlmlab.blind.tasks import correspondence_task, depth_task, odd_one_out_task, style_task
    from vlmlab.world.scene import BACKGROUNDS, COLOURS, SHAPES, STYLES

    texts = [caption(scenes[i % len(scenes)], rng) for i in range(n_captions)]
    texts += [q for qs in SINGLE_QUESTIONS.values() for q in qs] + ["describe the image ."]
    texts += list(SHAPES) + list(COLOURS) + list(STYLES) + list(BACKGROUNDS) + list(COUNT_WORDS)
    texts += [options_text(4)] + [t.format("") for t in MULTI_QUESTIONS.values()]
    texts += [make(1, size=64).segments()[-1] for make in (depth_task, correspondence_task, odd_one_out_task, style_task)]
    return texts


def image_order(dialogues: list[Dialogue]) -> list[int]:
    """The pool indices of the batch's images, in the order their tokens appear."""
    return [d.images[p] for d in dialogues for p in d.parts if not isinstance(p, str)]


def batch_tensors(dialogues: list[Dialogue], tokenizer: WordTokenizer, feats: torch.Tensor | None, scenes,
                  rng: np.random.Generator, slot_tokens: int = 0) -> tuple:
    """ids, tags, labels, mask and the images in order: patches (M, P, C); for words (``feats`` None), the
    slot mixtures [(word ids, weights)] when ``slot_tokens`` > 0, else ``None`` (slot words in the ids)."""
    if feats is None and not slot_tokens:
        rows = [encode(d, tokenizer, scenes=scenes, rng=rng) for d in dialogues]
        return (*collate(rows), None)
    order = image_order(dialogues)
    rows = [encode(d, tokenizer, n_patches=slot_tokens if feats is None else feats.shape[1]) for d in dialogues]
    if feats is None:
        return (*collate(rows), [slot_mixture(scenes[i], rng, tokenizer, slot_tokens) for i in order])
    return (*collate(rows), feats[order].float())


def image_inputs(vlm: TinyVLM, images) -> torch.Tensor | None:
    """What ``TinyVLM.forward`` takes as ``patches``: patch tensors as they are; slot mixtures as LM-width tokens."""
    if images is None or isinstance(images, torch.Tensor):
        return images
    table = vlm.lm.get_input_embeddings().weight
    return torch.cat([torch.as_tensor(w, dtype=table.dtype) @ table[torch.tensor(ids)] for ids, w in images])


def lm_loss(vlm: TinyVLM, ids, tags, labels, mask, images) -> torch.Tensor:
    logits = vlm(ids, image_inputs(vlm, images), mask, tags=tags).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def word_alignment_loss(vlm: TinyVLM, patches: torch.Tensor, scene_list, tokenizer: WordTokenizer) -> torch.Tensor:
    """Stage 2's auxiliary loss: each image's mean projected token against the mean embedding of its
    attribute words (what a slot mixture averages to), squared error relative to the target's norm."""
    table = vlm.lm.get_input_embeddings().weight.detach()
    target = torch.stack([table[attribute_word_ids(s, tokenizer)].mean(0) for s in scene_list])
    mean = vlm.projector(patches).mean(1)
    return (((mean - target) ** 2).sum(-1) / (target ** 2).sum(-1)).mean()


def attribute_vocabulary(scenes) -> dict[str, list[str]]:
    """Per attribute of ``SLOT_ATTRIBUTES``, the sorted answer words the scenes use."""
    return {a: sorted({answer_word(s, a) for s in scenes}) for a in SLOT_ATTRIBUTES}


def word_classification_loss(vlm: TinyVLM, patches: torch.Tensor, scene_list, tokenizer: WordTokenizer,
                             vocab: dict[str, list[str]], temperature: float = 0.07) -> torch.Tensor:
    """Stage 2's second auxiliary loss: every attribute of each image is classified from its mean projected
    token among that attribute's words (cosine to the words' input embeddings / ``temperature``, cross-
    entropy, mean over the attributes), so the projection keeps each attribute, not only those the
    word-alignment regression fits first (shape and texture: a linear probe on the mean trunk patch gets
    80 / 86 %, on the mean projected token of a VLM trained without this loss 44 / 43 %)."""
    table = F.normalize(vlm.lm.get_input_embeddings().weight.detach(), dim=-1)
    z = F.normalize(vlm.projector(patches).mean(1), dim=-1)                        # (M, W)
    losses = []
    for attr, words in vocab.items():
        ids = torch.tensor([tokenizer.token_id(w.split()[0]) for w in words])
        y = torch.tensor([words.index(answer_word(s, attr)) for s in scene_list])
        losses.append(F.cross_entropy(z @ table[ids].T / temperature, y))
    return torch.stack(losses).mean()


@torch.no_grad()
def letter_accuracy(vlm: TinyVLM, mixture: Mixture, feats: torch.Tensor | None, k: int = 4, n: int = 240,
                    batch: int = 60, slot_tokens: int = 0) -> float:
    """Accuracy (%) on ``n`` held-out one-turn letter questions with ``k`` images, scored among the k letters
    at the prompt's end (as ``option_logprobs`` scores the notebook's questions); ``feats`` None: words."""
    vlm.eval()
    letters = torch.tensor([vlm.tokenizer.token_id(x) for x in LETTERS[:k]])
    query_last, mixture.query_last = mixture.query_last, False
    correct = 0
    for _ in range(0, n, batch):
        dialogues = [mixture.multi(k=k, turns=1) for _ in range(batch)]
        truth = [LETTERS.index(d.parts[-1]) for d in dialogues]
        for d in dialogues:
            d.parts = d.parts[:-1]                               # the prompt, without the answer
        ids, tags, _, mask, images = batch_tensors(dialogues, vlm.tokenizer, feats, mixture.scenes, mixture.rng,
                                                   slot_tokens)
        last = mask.sum(1) - 2                                   # the token before the appended <eos>
        logits = vlm(ids, image_inputs(vlm, images), mask, tags=tags).logits[torch.arange(len(ids)), last][:, letters]
        correct += int((logits.argmax(-1) == torch.tensor(truth)).sum())
    mixture.query_last = query_last
    vlm.train()
    return 100.0 * correct / n


@torch.no_grad()
def single_accuracy(vlm: TinyVLM, scenes, feats: torch.Tensor, attr: str) -> float:
    """Accuracy (%) on single-image questions about ``attr`` (the answer's first word scored among the
    values' first words; ``position`` is left out, its answers share first words)."""
    from vlmlab.blind.vlm import answer_logits

    vlm.eval()
    values = sorted({answer_word(s, attr) for s in scenes})
    ids = torch.tensor([vlm.tokenizer.token_id(v.split()[0]) for v in values])    # first words are unique here
    q = SINGLE_QUESTIONS[attr][0]
    logits = torch.cat([answer_logits(vlm, [[0, q]] * len(feats[i:i + 256]), list(feats[i:i + 256].float()[:, None]))
                        for i in range(0, len(feats), 256)])[:, ids]
    truth = [values.index(answer_word(s, attr)) for s in scenes]
    return 100.0 * float(np.mean(logits.argmax(-1).numpy() == np.array(truth)))


@torch.no_grad()
def control_accuracy(vlm: TinyVLM, n: int = 400, seed: int = 123) -> dict[str, float]:
    """Accuracy (%) on notebook 05's control questions (``tasks.CONTROLS``: held-out rendered scenes, the
    vision-centric tasks' answer formats, trained attributes), scored by ``option_logprobs``."""
    from vlmlab.blind.experiment import predictions, trunk_patches

    vlm.eval()
    out = {}
    for name in CONTROLS:
        task = control_task(name, n, seed=seed)
        out[name] = 100.0 * float(np.mean(predictions(vlm, task, trunk_patches(vlm, task.images)) == task.answers))
    return out


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _stage_setup(vlm: TinyVLM, cfg: VLMTrainConfig, stage: int):
    """(trained parameters, base learning rate, batch size, mixture weights caption/single/multi)."""
    lm, proj = list(vlm.lm.parameters()), list(vlm.projector.parameters())
    return [(lm, cfg.lr, cfg.text_batch_size, (0.1, 0.3, 0.6)),
            (proj, cfg.lr, cfg.batch_size, (0.3, 0.2, 0.5) if cfg.align_questions else (1.0, 0.0, 0.0)),
            (proj + lm, cfg.tune_lr, cfg.batch_size, (0.15, 0.45, 0.4))][stage]


def train(cfg: VLMTrainConfig, out: Path, ckpt_dir: Path, bundle=None) -> dict:
    from vlmlab.models import load_clip

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bundle = bundle or load_clip("embedded")
    images, scenes = training_pool(cfg.pool_size, seed=cfg.seed + 7)
    tokenizer = WordTokenizer.from_texts(vocabulary_texts(scenes, np.random.default_rng(cfg.seed)))
    torch.manual_seed(cfg.seed)
    vlm = TinyVLM(bundle, tokenizer, VLMConfig(vision_layer=cfg.vision_layer, width=cfg.width, layers=cfg.layers,
                                             heads=cfg.heads, mlp=cfg.mlp))
    t_encode = time.time()
    with torch.no_grad():
        feats = torch.cat([vlm.vision(images[i:i + 512]).half()
                           for i in progress(range(0, len(images), 512), desc="encode pool")])    # (N, P, C)
    t_encode = time.time() - t_encode
    split = int(0.95 * len(scenes))                                # the last 5 % of the pool: validation
    train_scenes, val_scenes = scenes[:split], scenes[split:]
    val_feats = feats[split:]
    mixture = Mixture(train_scenes, rng)
    vocab = attribute_vocabulary(scenes)
    val_mix = Mixture(val_scenes, np.random.default_rng(cfg.seed + 1))

    history, start, state = [], 0, None
    ckpt = ckpt_dir / "last.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state["config"] != asdict(cfg) or state.get("trunk", bundle.identity) != bundle.identity:
            log.warning("checkpoint %s has another config or was trained on another CLIP; starting afresh", ckpt)
            state = None
        else:
            vlm.projector.load_state_dict(state["projector"]); vlm.lm.load_state_dict(state["lm"])
            rng.bit_generator.state = state["rng"]; torch.set_rng_state(state["torch_rng"])
            val_mix.rng.bit_generator.state = state["val_rng"]
            history, start = state["history"], state["step"]
            log.info("resumed from %s at step %d", ckpt, start)
    t0 = time.time() - (history[-1]["time_s"] if history else 0.0)
    bar = progress(range(start, cfg.total_steps), desc="train embedded VLM", total=cfg.total_steps, initial=start)
    opt, opt_stage = None, None
    for step in bar:
        stage, local, n_steps = cfg.stage_of(step)
        params, base_lr, batch_size, weights = _stage_setup(vlm, cfg, stage)
        if opt_stage != stage:
            vlm.lm.requires_grad_(stage != 1)
            vlm.projector.requires_grad_(stage != 0)
            opt = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
            if state is not None and state.get("stage") == stage:
                opt.load_state_dict(state["opt"])
            opt_stage = stage
        mixture.query_last = stage == 0 and local < cfg.query_last_steps
        if mixture.query_last:                    # the curriculum's first phase: one-turn letter questions only
            mixture.weights, mixture.turns = np.array([0.0, 0.0, 1.0]), (1, 1)
        else:
            mixture.weights, mixture.turns = np.asarray(weights) / sum(weights), (1, 3)
        for g in opt.param_groups:
            g["lr"] = _lr(local, n_steps, base_lr, cfg.warmup)
        vlm.train()
        dialogues = [mixture.draw() for _ in range(batch_size)]
        ids, tags, labels, mask, images = batch_tensors(dialogues, tokenizer, None if stage == 0 else feats,
                                                        train_scenes, rng, cfg.slot_tokens)
        loss = lm_loss(vlm, ids, tags, labels, mask, images)
        align = cfg.word_align if stage == 1 else 0.0
        classify = {1: cfg.word_classify, 2: cfg.tune_classify}.get(stage, 0.0)
        if align or classify:
            scenes_in_order = [train_scenes[i] for i in image_order(dialogues)]
            if align:
                loss = loss + align * word_alignment_loss(vlm, images, scenes_in_order, tokenizer)
            if classify:
                loss = loss + classify * word_classification_loss(vlm, images, scenes_in_order, tokenizer, vocab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        rec = {"step": step + 1, "stage": STAGES[stage], "loss": loss.item(), "time_s": time.time() - t0}
        if (local + 1) % cfg.eval_every == 0 or local + 1 == n_steps:
            words = stage == 0
            rec["val_letter_acc_4"] = letter_accuracy(vlm, val_mix, None if words else val_feats, k=4,
                                                      slot_tokens=cfg.slot_tokens)
            rec["val_letter_acc_2"] = letter_accuracy(vlm, val_mix, None if words else val_feats, k=2,
                                                      slot_tokens=cfg.slot_tokens)
            log.info("step %d (%s%s) loss %.3f held-out letter accuracy: 4 images %.1f%%, 2 images %.1f%%",
                     step + 1, STAGES[stage], ", text only" if words else "", rec["loss"],
                     rec["val_letter_acc_4"], rec["val_letter_acc_2"])
        history.append(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(stage=STAGES[stage], loss=f"{loss.item():.3f}", refresh=False)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.total_steps or local + 1 == n_steps:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"projector": vlm.projector.state_dict(), "lm": vlm.lm.state_dict(), "opt": opt.state_dict(),
                        "stage": stage, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "val_rng": val_mix.rng.bit_generator.state,
                        "history": history, "step": step + 1, "config": asdict(cfg), "trunk": bundle.identity}, tmp)
            os.replace(tmp, ckpt)
    train_time = history[-1]["time_s"] if history else 0.0
    stage_time = {name: sum(b["time_s"] - a["time_s"] for a, b in zip(history, history[1:]) if b["stage"] == name)
                  for name in STAGES}
    t_eval = time.time()
    summary = {"config": asdict(cfg), "history": history, "train_time_s": train_time, "encode_pool_s": t_encode,
               "stage_time_s": stage_time, "vocab_size": len(tokenizer),
               "parameters": sum(v.numel() for v in vlm.state().values()),
               "val_single_acc": {a: single_accuracy(vlm, val_scenes, val_feats, a)
                                  for a in SINGLE_QUESTIONS if a != "position"},
               "val_letter_acc_4": letter_accuracy(vlm, val_mix, val_feats, k=4, n=600),
               "val_letter_acc_2": letter_accuracy(vlm, val_mix, val_feats, k=2, n=600),
               "control_acc": control_accuracy(vlm)}
    summary["eval_time_s"] = time.time() - t_eval
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in vlm.state().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = {k: summary[k] for k in ("val_single_acc", "val_letter_acc_4", "val_letter_acc_2", "control_acc")}
    save_file(weights, str(out), metadata=vlm.metadata() | {"train_config": json.dumps(asdict(cfg)),
                                                             "measured": json.dumps(measured)})
    (ckpt_dir / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(VLMTrainConfig):
        if isinstance(f.default, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    p.add_argument("--ckpt-dir", type=Path, default=REPO_ROOT / "checkpoints" / "embedded_vlm")
    args = vars(p.parse_args(argv))
    out, ckpt_dir = args.pop("out"), args.pop("ckpt_dir")
    summary = train(VLMTrainConfig(**args), out, ckpt_dir)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
