"""Train the embedded CLIP from scratch on the procedural world (``make train-embedded``).

Recipe: CLIP's symmetric InfoNCE loss (Radford et al. 2021, arXiv:2103.00020) over a fixed,
seeded pool of world images whose captions are re-drawn every time an image is used. A share
of each batch is degraded (noise, blur, dark, bright, low contrast, pixelation, JPEG, fog;
``degrade``) and its caption then usually says so ("a noisy photo of ..."), as web alt-text
does. These are vlmlab's own mild degradations, not the ImageNet-C implementations that the
notebooks evaluate on. Checkpoints every ``ckpt_every`` steps; rerunning resumes.

    python -m vlmlab.models.train_embedded            # the shipped recipe: 4,000 steps, 2 threads
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vlmlab.models.embedded import build_embedded
from vlmlab.runtime import REPO_ROOT, get_logger, progress, seed_everything
from vlmlab.world.datasets import WORLD_VERSION
from vlmlab.world import (BACKGROUNDS, COLOURS, POSITIONS, QUALITY_WORDS, SHAPES, STYLES, TEXTURES, caption, load,
                          training_pool)

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    pool_size: int = 50_000
    degrade_p: float = 0.45
    seed: int = 0
    ckpt_every: int = 200
    eval_every: int = 400
    threads: int = 2  # the shipped run's; the same thread count on the same machine type gives the same weights
    aux_weight: float = 1.0  # weight of the attribute-prediction heads on the image embedding (0 = pure CLIP)
    # Degradation strengths: the recipe of the shipped weights (MODEL_CARD.md). The first shipped model
    # used noise_max 0.22, contrast_min 0.12, no impulse noise and 1,600 steps: 79.8 % clean, but Gaussian
    # and impulse noise and contrast at severity 5 fell below twice chance.
    noise_max: float = 0.4       # Gaussian noise sigma drawn from U(0.04, noise_max)
    contrast_min: float = 0.04   # contrast factor drawn from U(contrast_min, 0.45)
    impulse: bool = True         # also salt-and-pepper noise (amount U(0.02, 0.25)), captioned "noisy"/"speckled"


def _smooth(shape: tuple[int, ...], cells: int, gen: torch.Generator) -> torch.Tensor:
    grid = torch.rand(shape[0], 1, cells, cells, generator=gen)
    return F.interpolate(grid, size=shape[-2:], mode="bilinear", align_corners=False)


def degrade(x: torch.Tensor, kind: str, gen: torch.Generator, noise_max: float = 0.22,
            contrast_min: float = 0.12) -> torch.Tensor:
    """Apply one training degradation to a batch (B, 3, S, S) in [0, 1], per-image strengths."""
    b = x.shape[0]

    def u(lo, hi):
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=gen))

    if kind == "noise":
        x = x + u(0.04, noise_max) * torch.randn(x.shape, generator=gen)
    elif kind == "blur":
        sigma = float(0.6 + 1.4 * torch.rand(1, generator=gen))
        x = torch.stack([_gauss(img, sigma) for img in x])
    elif kind == "dark":
        x = x * u(0.2, 0.55)
    elif kind == "bright":
        x = x + (1 - x) * u(0.3, 0.65)
    elif kind == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = m + (x - m) * u(contrast_min, 0.45)
    elif kind == "impulse":
        amount = u(0.02, 0.25)
        hit = torch.rand(x.shape, generator=gen) < amount
        salt = (torch.rand(x.shape, generator=gen) < 0.5).float()
        x = torch.where(hit, salt, x)
    elif kind == "pixelate":
        f = int(torch.randint(2, 5, (1,), generator=gen))
        s = x.shape[-1]
        x = F.interpolate(F.avg_pool2d(x, f, ceil_mode=True), size=(s, s), mode="nearest")
    elif kind == "jpeg":
        from torchvision.io import decode_jpeg, encode_jpeg
        q = int(torch.randint(6, 25, (1,), generator=gen))
        u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        x = torch.stack([decode_jpeg(encode_jpeg(img, quality=q)) for img in u8]).float() / 255
    elif kind == "fog":
        a = u(0.3, 0.65)
        x = x * (1 - a) + a * (0.6 + 0.4 * _smooth(x.shape, 4, gen))
    else:
        raise KeyError(f"unknown degradation {kind!r}; known: {sorted(QUALITY_WORDS)}")
    return x.clamp(0, 1)


def _gauss(img: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur
    k = 2 * int(math.ceil(2.5 * sigma)) + 1
    return gaussian_blur(img, [k, k], [sigma, sigma])


ATTRIBUTES = {"shape": SHAPES, "colour": list(COLOURS), "texture": TEXTURES, "count": [1, 2, 3, 4],
              "position": list(POSITIONS), "background": BACKGROUNDS, "style": STYLES}


def attribute_labels(scenes) -> dict[str, torch.Tensor]:
    """Integer label per attribute for each scene; position is -1 (ignored) when count > 1.

    ``sign`` is the digit on the scene's sign (world 2), -1 when it has none.
    """
    out = {}
    for name, values in ATTRIBUTES.items():
        index = {v: i for i, v in enumerate(values)}
        out[name] = torch.tensor([index[getattr(s, name)] for s in scenes])
    out["position"] = torch.where(torch.tensor([s.count for s in scenes]) == 1, out["position"], -1)
    out["sign"] = torch.tensor([-1 if s.sign is None else s.sign for s in scenes])
    return out


class AttributeHeads(torch.nn.Module):
    """Linear read-outs of the world attributes from the image embedding (training aid only; not shipped).

    World 2 adds a head for the digit on a sign, as the shape head exists: the contrastive loss
    alone rarely needs the digit to tell a batch's captions apart, so a small CLIP would not learn
    to read it (the world's analogue of the OCR that real CLIP learns from web scale).
    """

    def __init__(self, dim: int, world: int = 1):
        super().__init__()
        sizes = {k: len(v) for k, v in ATTRIBUTES.items()} | ({"sign": 10} if world >= 2 else {})
        self.heads = torch.nn.ModuleDict({k: torch.nn.Linear(dim, n) for k, n in sizes.items()})

    def loss(self, z: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0
        for k, h in self.heads.items():
            if k == "sign" and not bool((labels[k] >= 0).any()):
                continue  # no signed image in this batch
            total = total + F.cross_entropy(h(z), labels[k], ignore_index=-1)
        return total


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


@torch.inference_mode()
def quick_eval(bundle, images: np.ndarray, labels: torch.Tensor, classnames, template: str) -> float:
    """Zero-shot top-1 (%) on uint8 images with one template."""
    bundle.model.eval()
    w = bundle.encode_texts([template.format(c) for c in classnames])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    z = torch.cat([bundle.encode_images(bundle.normalize_pixels(x[i:i + 512])) for i in range(0, len(x), 512)])
    return float(((z @ w.T).argmax(1) == labels).float().mean() * 100)


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint, read with ``torch.load(weights_only=True)``: tensors, numbers, strings,
    lists, tuples and dicts only (the RNG states are tensors and dicts of ints), so a checkpoint
    from elsewhere can run no code. An unreadable one stops with its path and the fix."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"cannot resume from checkpoint {path}: {type(err).__name__}: {err}. It is damaged, "
                           f"or holds objects other than tensors and plain values; delete it to start "
                           f"afresh.") from err


def train(cfg: TrainConfig, out: Path, ckpt_dir: Path, world: int = WORLD_VERSION) -> dict:
    """Train the embedded CLIP on world ``world``'s pool and captions (``vlmlab.world.captions``).

    Resumes from ``ckpt_dir/last.pt`` when it holds the same config and world; writes float16
    weights to ``out`` with the config and world version in the metadata.
    """
    torch.set_num_threads(cfg.threads)
    gen = seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    bundle = build_embedded("cpu")
    model = bundle.model
    images, scenes = training_pool(cfg.pool_size, seed=cfg.seed, world=world)
    pool = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, 3, S, S) uint8
    labels = attribute_labels(scenes)
    heads = AttributeHeads(bundle.embed_dim, world)
    val = load("objects", "val", n=400, seed=cfg.seed)
    named = list(model.named_parameters()) + list(heads.named_parameters(prefix="aux"))
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    history, start = [], 0
    ckpt = ckpt_dir / "last.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state["config"] == asdict(cfg) and state.get("world_version", 1) == world:
            model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
            heads.load_state_dict(state["heads"])
            gen.set_state(state["gen"]); rng.bit_generator.state = state["rng"]
            history, start = state["history"], state["step"]
            log.info("resumed from %s at step %d", ckpt, start)
        else:
            log.warning("checkpoint %s has another config or world version; starting afresh", ckpt)
    kinds = sorted(k for k in QUALITY_WORDS if k != "impulse" or cfg.impulse)
    t0 = time.time() - (history[-1]["time_s"] if history else 0.0)
    bar = progress(range(start, cfg.steps), desc="train embedded CLIP", total=cfg.steps, initial=start)
    for step in bar:
        model.train()
        idx = torch.randint(0, len(pool), (cfg.batch_size,), generator=gen)
        x = pool[idx].float() / 255
        kind_of = torch.randint(0, len(kinds), (cfg.batch_size,), generator=gen)
        hit = torch.rand(cfg.batch_size, generator=gen) < cfg.degrade_p
        quality = [None] * cfg.batch_size
        for k, name in enumerate(kinds):
            sel = torch.nonzero(hit & (kind_of == k)).flatten()
            if len(sel):
                x[sel] = degrade(x[sel], name, gen, cfg.noise_max, cfg.contrast_min)
                for i in sel.tolist():
                    quality[i] = name
        texts = [caption(scenes[int(i)], rng, quality[j], world=world) for j, i in enumerate(idx)]
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg)
        emb = model.encode_image(bundle.normalize_pixels(x))
        zi = F.normalize(emb, dim=-1)
        zt = F.normalize(model.encode_text(bundle.tokenizer(texts)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * zi @ zt.T
        target = torch.arange(len(x))
        clip_loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        aux_loss = heads.loss(emb, {k: v[idx] for k, v in labels.items()}) if cfg.aux_weight else torch.zeros(())
        loss = clip_loss + cfg.aux_weight * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        rec = {"step": step + 1, "loss": loss.item(), "clip_loss": clip_loss.item(), "aux_loss": aux_loss.item(), "lr": _lr(step, cfg), "time_s": time.time() - t0}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            rec["val_objects_acc"] = quick_eval(bundle, val.images, val.labels, val.classnames, val.template)
            log.info("step %d loss %.3f val objects %.1f%%", step + 1, rec["loss"], rec["val_objects_acc"])
        history.append(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "rng": rng.bit_generator.state, "history": history, "heads": heads.state_dict(), "step": step + 1,
                        "config": asdict(cfg), "world_version": world}, tmp)
            os.replace(tmp, ckpt)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"config": json.dumps(asdict(cfg)), "world_version": str(world)})
    summary = {"config": asdict(cfg), "history": history, "wall_time_s": history[-1]["time_s"],
               "final_val_objects_acc": history[-1].get("val_objects_acc")}
    (ckpt_dir / "train_log.json").write_text(json.dumps(summary, indent=1))
    _plot_loss(history, ckpt_dir / "loss_curve.png")
    return summary


def _plot_loss(history: list[dict], path: Path) -> None:
    """Loss curves (total, CLIP part, attribute part) and validation accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3))
    steps = [h["step"] for h in history]
    for key, label in [("loss", "total"), ("clip_loss", "CLIP (InfoNCE)"), ("aux_loss", "attribute heads")]:
        if key in history[0]:
            ax.plot(steps, [h[key] for h in history], lw=0.8, label=label)
    ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.legend(fontsize=8); ax.set_title("embedded CLIP training")
    ev = [h for h in history if "val_objects_acc" in h]
    bx.plot([h["step"] for h in ev], [h["val_objects_acc"] for h in ev], "o-")
    bx.set_xlabel("step"); bx.set_ylabel("val objects zero-shot (%)"); bx.set_ylim(0, 100)
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            p.add_argument(f"--{f.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=v)
        else:
            p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "vlmlab" / "assets" / "embedded.safetensors")
    p.add_argument("--ckpt-dir", type=Path, default=REPO_ROOT / "checkpoints" / "embedded")
    p.add_argument("--world", type=int, default=WORLD_VERSION, choices=(1, 2),
                   help="caption grammar and training pool (vlmlab.world.captions); default: the shipped weights' world")
    a = vars(p.parse_args(argv))
    out, ckpt_dir, world = a.pop("out"), a.pop("ckpt_dir"), a.pop("world")
    summary = train(TrainConfig(**a), out, ckpt_dir, world=world)
    log.info("wrote %s (%.0f s, val objects %.1f%%)", out, summary["wall_time_s"], summary["final_val_objects_acc"] or -1)


if __name__ == "__main__":
    main()
