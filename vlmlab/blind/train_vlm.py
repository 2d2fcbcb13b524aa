"""Train the embedded VLM (``TinyVLM``) on world captions and question-answer pairs; ``make train-embedded-vlm``.

The language model has no pre-training to start from, so the recipe has two stages:

1. *language and alignment*: projector and LM trained together on a mixture of captioning
   ("describe the image ." -> a world caption), single-image questions ("what colour is it ?" -> "red")
   and multi-image letter questions ("A <img> B <img> C <img> which image shows a star ? answer A , B or
   C ." -> "B"), the analogue of LLaVA's instruction data. Measured: the single-image questions are
   learned (colour 93 %, shape 43 %), the multi-image letter questions are not (chance) within this
   budget; MODEL_CARD.md says what was tried;
2. *projector only*: the LM frozen, the projector trained on the same mixture, the stage the paper's
   controlled VLMs share (``hidden_in_plain_sight.md`` §4).

The vision trunk is the shipped CLIP's, frozen throughout, so its patch tokens are computed once
and cached. None of the notebook's four vision-centric tasks (depth, correspondence, odd-one-out,
style) is in the mixture: the VLM meets them as the paper's VLMs met CV-Bench and BLINK.

Deterministic (seeded, one thread), resumable from ``checkpoints/embedded_vlm/last.pt``.
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

from vlmlab.blind.tasks import LETTERS, options_text
from vlmlab.blind.vlm import EOS, PAD, TinyVLM, WordTokenizer, pad_batch
from vlmlab.models.train_embedded import load_checkpoint
from vlmlab.runtime import REPO_ROOT, get_logger, progress, seed_everything
from vlmlab.world.captions import caption
from vlmlab.world.datasets import training_pool
from vlmlab.world.scene import COUNT_WORDS

log = get_logger(__name__)

WEIGHTS = REPO_ROOT / "vlmlab" / "assets" / "embedded_vlm.safetensors"

SINGLE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "shape": ("what shape is it ?", "what object is in the image ?"),
    "colour": ("what colour is it ?", "what colour is the object ?"),
    "texture": ("what pattern does it have ?",),
    "count": ("how many objects are there ?",),
    "position": ("where is the object ?",),
    "background": ("what is the background ?",),
    "style": ("what style is the image ?",),
}
MULTI_QUESTIONS: dict[str, str] = {
    "shape": "which image shows a {} ?",
    "colour": "which image has a {} object ?",
    "style": "which image is a {} ?",
    "background": "which image has a {} background ?",
}


def answer_word(scene, attr: str) -> str:
    return COUNT_WORDS[scene.count - 1] if attr == "count" else str(getattr(scene, attr))


@dataclass(frozen=True)
class VLMTrainConfig:
    steps: int = 2000            # stage 1: projector + LM
    projector_steps: int = 300   # stage 2: projector only
    batch_size: int = 32
    lr: float = 2e-3
    projector_lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.01
    pool_size: int = 20_000
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 200
    eval_every: int = 400
    caption_p: float = 0.3       # share of captioning examples
    multi_p: float = 0.4         # share of multi-image letter questions (the rest: single-image questions)


class Mixture:
    """Draws training examples (image indices, prompt segments, answer text) from a pool of scenes."""

    def __init__(self, scenes, rng: np.random.Generator, caption_p: float = 0.3, multi_p: float = 0.4):
        self.scenes, self.rng, self.caption_p, self.multi_p = scenes, rng, caption_p, multi_p
        self.by_value = {a: {} for a in MULTI_QUESTIONS}
        for i, s in enumerate(scenes):
            for a in MULTI_QUESTIONS:
                self.by_value[a].setdefault(answer_word(s, a), []).append(i)

    def caption(self):
        i = int(self.rng.integers(len(self.scenes)))
        return [i], [0, "describe the image ."], caption(self.scenes[i], self.rng)

    def single(self):
        i = int(self.rng.integers(len(self.scenes)))
        s = self.scenes[i]
        attrs = [a for a in SINGLE_QUESTIONS if a != "position" or s.count == 1]
        attr = attrs[int(self.rng.integers(len(attrs)))]
        q = SINGLE_QUESTIONS[attr][int(self.rng.integers(len(SINGLE_QUESTIONS[attr])))]
        return [i], [0, q], answer_word(s, attr)

    def multi(self):
        k = int(self.rng.integers(2, 5))
        attr = list(MULTI_QUESTIONS)[int(self.rng.integers(len(MULTI_QUESTIONS)))]
        values = list(self.by_value[attr])
        target_value = values[int(self.rng.integers(len(values)))]
        pool = self.by_value[attr][target_value]
        target = pool[int(self.rng.integers(len(pool)))]
        others = []
        while len(others) < k - 1:
            j = int(self.rng.integers(len(self.scenes)))
            if answer_word(self.scenes[j], attr) != target_value:
                others.append(j)
        pos = int(self.rng.integers(k))
        images = others[:pos] + [target] + others[pos:]
        segments = []
        for n in range(k):
            segments += [LETTERS[n], n]
        segments.append(MULTI_QUESTIONS[attr].format(target_value) + " " + options_text(k))
        return images, segments, LETTERS[pos]

    def draw(self):
        u = self.rng.random()
        if u < self.caption_p:
            return self.caption()
        return self.multi() if u < self.caption_p + self.multi_p else self.single()


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


def sequences(vlm: TinyVLM, examples, n_patches: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt + answer + <eos> per example -> ids, attention mask, labels (-100 outside the answer)."""
    seqs, starts = [], []
    for _, segments, answer in examples:
        prompt = vlm.encode_prompt(segments, n_patches)
        seqs.append(prompt + vlm.tokenizer.encode(answer) + [EOS])
        starts.append(len(prompt))
    ids, mask, _ = pad_batch(seqs)
    labels = ids.clone()
    for r, s in enumerate(starts):
        labels[r, :s] = -100
    labels[ids == PAD] = -100
    return ids, mask, labels


def lm_loss(vlm: TinyVLM, ids, mask, labels, patches) -> torch.Tensor:
    logits = vlm(ids, patches, mask).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


@torch.no_grad()
def letter_accuracy(vlm: TinyVLM, mixture: Mixture, feats: torch.Tensor, n: int = 240, batch: int = 60) -> float:
    """Accuracy on held-out multi-image letter questions (option-letter likelihood, 4 images each)."""
    from vlmlab.blind.vlm import option_logprobs

    vlm.eval()
    correct = 0
    for _ in range(0, n, batch):
        qs = []
        while len(qs) < batch:
            q = mixture.multi()
            if len(q[0]) == 4:
                qs.append(q)
        lp = option_logprobs(vlm, [s for _, s, _ in qs], [feats[i].float() for i, _, _ in qs], list(LETTERS))
        correct += sum(LETTERS[int(p)] == a for p, (_, _, a) in zip(lp.argmax(-1), qs))
    return 100.0 * correct / n


@torch.no_grad()
def single_accuracy(vlm: TinyVLM, scenes, feats: torch.Tensor, attr: str) -> float:
    """Accuracy on single-image questions about ``attr`` (the answer's first word scored among the values'
    first words; ``position`` is left out, its answers share first words)."""
    from vlmlab.blind.vlm import answer_logits

    vlm.eval()
    values = sorted({answer_word(s, attr) for s in scenes})
    ids = torch.tensor([vlm.tokenizer.token_id(v.split()[0]) for v in values])    # first words are unique here
    q = SINGLE_QUESTIONS[attr][0]
    logits = torch.cat([answer_logits(vlm, [[0, q]] * len(feats[i:i + 256]), list(feats[i:i + 256].float()[:, None]))
                        for i in range(0, len(feats), 256)])[:, ids]
    truth = [values.index(answer_word(s, attr)) for s in scenes]
    return 100.0 * float(np.mean(logits.argmax(-1).numpy() == np.array(truth)))


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(cfg: VLMTrainConfig, out: Path, ckpt_dir: Path, bundle=None) -> dict:
    from vlmlab.models import load_clip

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bundle = bundle or load_clip("embedded")
    images, scenes = training_pool(cfg.pool_size, seed=cfg.seed + 7)
    tokenizer = WordTokenizer.from_texts(vocabulary_texts(scenes, np.random.default_rng(cfg.seed)))
    torch.manual_seed(cfg.seed)
    vlm = TinyVLM(bundle, tokenizer)
    with torch.no_grad():
        feats = torch.cat([vlm.vision(images[i:i + 512]).half()
                           for i in progress(range(0, len(images), 512), desc="encode pool")])    # (N, P, C)
    n_patches = feats.shape[1]
    split = int(0.95 * len(scenes))                                # the last 5 % of the pool: validation
    mix = Mixture(scenes[:split], rng, cfg.caption_p, cfg.multi_p)
    val_mix = Mixture(scenes[split:], np.random.default_rng(cfg.seed + 1))
    val_offset = split

    stages = [("joint", cfg.steps, cfg.lr, list(vlm.projector.parameters()) + list(vlm.lm.parameters())),
              ("projector", cfg.projector_steps, cfg.projector_lr, list(vlm.projector.parameters()))]
    history, start = [], 0
    ckpt = ckpt_dir / "last.pt"
    state = None
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state["config"] != asdict(cfg):
            log.warning("checkpoint %s has another config; starting afresh", ckpt)
            state = None
        else:
            vlm.projector.load_state_dict(state["projector"]); vlm.lm.load_state_dict(state["lm"])
            rng.bit_generator.state = state["rng"]; torch.set_rng_state(state["torch_rng"])
            val_mix.rng.bit_generator.state = state["val_rng"]
            history, start = state["history"], state["step"]
            log.info("resumed from %s at step %d", ckpt, start)
    total = cfg.steps + cfg.projector_steps
    t0 = time.time() - (history[-1]["time_s"] if history else 0.0)
    bar = progress(range(start, total), desc="train embedded VLM", total=total, initial=start)
    opt, opt_stage = None, None
    for step in bar:
        stage = 0 if step < cfg.steps else 1
        name, n_steps, base_lr, params = stages[stage]
        local = step - (0 if stage == 0 else cfg.steps)
        if opt_stage != stage:
            vlm.lm.requires_grad_(stage == 0)
            opt = torch.optim.AdamW(params, lr=base_lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
            if state is not None and state.get("stage") == stage:
                opt.load_state_dict(state["opt"])
            opt_stage = stage
        for g in opt.param_groups:
            g["lr"] = _lr(local, n_steps, base_lr, cfg.warmup)
        vlm.train()
        batch = [mix.draw() for _ in range(cfg.batch_size)]
        ids, mask, labels = sequences(vlm, batch, n_patches)
        patches = torch.cat([feats[idx].float() for idx, _, _ in batch])
        loss = lm_loss(vlm, ids, mask, labels, patches)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        rec = {"step": step + 1, "stage": name, "loss": loss.item(), "time_s": time.time() - t0}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == total:
            val_feats = feats[val_offset:]
            rec["val_letter_acc"] = letter_accuracy(vlm, val_mix, val_feats)
            log.info("step %d (%s) loss %.3f val letter accuracy %.1f%%", step + 1, name, rec["loss"], rec["val_letter_acc"])
        history.append(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == total:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"projector": vlm.projector.state_dict(), "lm": vlm.lm.state_dict(), "opt": opt.state_dict(),
                        "stage": stage, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "val_rng": val_mix.rng.bit_generator.state,
                        "history": history, "step": step + 1, "config": asdict(cfg)}, tmp)
            os.replace(tmp, ckpt)
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in vlm.state().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out), metadata=vlm.metadata() | {"train_config": json.dumps(asdict(cfg))})
    val_scenes, val_feats = scenes[val_offset:], feats[val_offset:]
    summary = {"config": asdict(cfg), "history": history, "wall_time_s": history[-1]["time_s"],
               "final_val_letter_acc": history[-1].get("val_letter_acc"), "vocab_size": len(tokenizer),
               "val_single_acc": {a: single_accuracy(vlm, val_scenes, val_feats, a)
                                  for a in SINGLE_QUESTIONS if a != "position"},
               "parameters": sum(v.numel() for v in vlm.state().values())}
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
