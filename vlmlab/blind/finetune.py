"""Fine-tuning variants of a VLM on one task's training questions (Fu et al. §§8-9).

``hidden_in_plain_sight.md`` §8: prompt tuning with 1, 5 or 10 learned soft tokens before the text
prompt, everything else frozen. §9: fine-tuning one component at a time -- the language model with
LoRA (rank ``r`` on the attention projections, via ``peft``), the projector, or the vision encoder --
to see which one closes the gap to the encoder readout. Every variant minimises the same loss, the
cross-entropy of the correct option letter as the next token after the prompt (the SFT loss on the
answer), and returns a fresh copy: the base VLM is never modified. ``finetune`` trains the embedded
VLM; ``finetune_llava`` the same four variants of a ``transformers`` LLaVA checkpoint (paper profile).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.blind.tasks import LETTERS, MCTask
from vlmlab.blind.vlm import TinyVLM, answer_logits
from vlmlab.runtime import progress

VARIANTS = ("prompt", "lora", "projector", "vision")


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 120
    batch_size: int = 16
    lr_prompt: float = 1e-2
    lr_lora: float = 2e-3
    lr_projector: float = 1e-3
    lr_vision: float = 2e-4
    lora_rank: int = 8
    seed: int = 0


def with_lora(vlm: TinyVLM, rank: int = 8) -> TinyVLM:
    """A copy whose LM carries LoRA adapters (peft) on q, k, v and o of every attention block.

    peft initialises B = 0, so the copy computes exactly what ``vlm`` computes until trained.
    """
    from peft import LoraConfig, get_peft_model

    out = copy.deepcopy(vlm)
    out.lm = get_peft_model(out.lm, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    return out


def prepare(vlm: TinyVLM, variant: str, n_tokens_or_rank: int = 0, rank: int = 8) -> tuple[TinyVLM, list[Tensor]]:
    """A trainable copy of ``vlm`` for ``variant`` and the parameters it trains."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "lora":
        out = with_lora(vlm, n_tokens_or_rank or rank)
    else:
        out = copy.deepcopy(vlm)
    out.requires_grad_(False)
    if variant == "prompt":
        out.set_soft_prompt(n_tokens_or_rank)
        params = [out.soft_prompt]
    elif variant == "lora":
        params = [p for n, p in out.lm.named_parameters() if "lora_" in n]
    elif variant == "projector":
        params = list(out.projector.parameters())
    else:
        params = list(out.vision.parameters())
    for p in params:
        p.requires_grad_(True)
    return out, params


def finetune(vlm: TinyVLM, task: MCTask, variant: str, n_tokens_or_rank: int = 0,
             patches: Tensor | None = None, config: FinetuneConfig = FinetuneConfig()) -> TinyVLM:
    """Train one variant on ``task`` (its training questions) and return the tuned copy.

    ``patches`` (n, k, P, C): the frozen trunk's patch tokens of ``task``'s images, reused by every
    variant but ``vision``, which recomputes them through the (trainable) trunk each step. Seeded by
    ``config.seed`` alone (LoRA's random A too), whatever ran before, in a forked RNG.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _finetune(vlm, task, variant, n_tokens_or_rank, patches, config)


def _finetune(vlm: TinyVLM, task: MCTask, variant: str, n_tokens_or_rank: int, patches: Tensor | None,
              config: FinetuneConfig) -> TinyVLM:
    out, params = prepare(vlm, variant, n_tokens_or_rank, config.lora_rank)
    lr = {"prompt": config.lr_prompt, "lora": config.lr_lora, "projector": config.lr_projector,
          "vision": config.lr_vision}[variant]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    n_soft = n_tokens_or_rank if variant == "prompt" else 0
    segments = task.segments()
    letters = torch.tensor([out.tokenizer.token_id(c) for c in LETTERS[:task.n_options]])
    rng = np.random.default_rng(config.seed)
    out.train()
    out.vision.eval()                                           # BatchNorm statistics stay the encoder's
    for _ in progress(range(config.steps), desc=f"finetune {variant}", leave=False):
        idx = rng.choice(len(task), size=min(config.batch_size, len(task)), replace=False)
        if variant == "vision":
            imgs = task.images[idx]
            p = out.vision(imgs.reshape(-1, *imgs.shape[2:])).view(len(idx), imgs.shape[1], -1, out.vision.width)
        else:
            p = patches[idx].float()
        logits = answer_logits(out, [segments] * len(idx), list(p), n_soft)
        loss = F.cross_entropy(logits, letters[torch.as_tensor(task.answers[idx])])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return out.eval()


# ------------------------------------------------------------------------------------ LLaVA checkpoints
LLAVA_LM_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)$"   # the LM's blocks, not the vision tower's


def prepare_llava(scorer, variant: str, n_tokens_or_rank: int = 0, rank: int = 8):
    """A trainable copy of a ``LlavaScorer`` for ``variant`` and the parameters it trains.

    prompt: ``n`` new tokens ``<soft_i>`` written before every question, whose embedding rows (started at
    the mean embedding) are the only ones that receive gradients; lora: peft LoRA on q, k, v, o of every
    LM block (B = 0 at the start: the copy answers exactly as the original); projector / vision: that module.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    tuned = scorer.copy()
    model = tuned.model
    model.requires_grad_(False)
    if variant == "prompt":
        tokens = [f"<soft_{i}>" for i in range(n_tokens_or_rank)]
        tuned.tokenizer.add_tokens(tokens, special_tokens=True)
        old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tuned.tokenizer))
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            emb[old:] = emb[:old].mean(0)
        keep = torch.zeros(emb.shape[0], 1, dtype=emb.dtype, device=emb.device)
        keep[old:] = 1
        emb.requires_grad_(True)
        emb.register_hook(lambda grad: grad * keep)
        tuned.prefix = "".join(tokens) + " "
        params = [emb]
    elif variant == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=n_tokens_or_rank or rank, lora_alpha=2 * (n_tokens_or_rank or rank),
                                           lora_dropout=0.0, target_modules=LLAVA_LM_ATTENTION), model)
        params = [p for n, p in model.named_parameters() if "lora_" in n]
    else:
        params = list(tuned.module("multi_modal_projector" if variant == "projector" else "vision_tower").parameters())
    for p in params:
        p.requires_grad_(True)
    return tuned, params


def finetune_llava(scorer, task: MCTask, variant: str, n_tokens_or_rank: int = 0,
                   config: FinetuneConfig = FinetuneConfig()):
    """Train one variant of a LLaVA checkpoint on ``task`` and return the tuned copy (a ``LlavaScorer``).

    One question at a time, gradients accumulated over ``batch_size`` questions per optimiser step (a 7B
    model's activations for a whole batch would not fit); the loss is the letter cross-entropy of
    ``finetune``. Train in float32 or bfloat16: AdamW on float16 weights underflows.
    """
    from vlmlab.blind.llava import canvas

    tuned, params = prepare_llava(scorer, variant, n_tokens_or_rank, config.lora_rank)
    lr = {"prompt": config.lr_prompt, "lora": config.lr_lora, "projector": config.lr_projector,
          "vision": config.lr_vision}[variant]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    texts, rng = task.question_texts(), np.random.default_rng(config.seed)
    for _ in progress(range(config.steps), desc=f"finetune {variant}", leave=False):
        idx = rng.choice(len(task), size=min(config.batch_size, len(task)), replace=False)
        opt.zero_grad(set_to_none=True)
        for i in idx:
            logits = tuned.letter_logits(canvas(task.images[i]), texts[i], task.n_options)
            loss = F.cross_entropy(logits[None], torch.tensor([int(task.answers[i])], device=logits.device)) / len(idx)
            loss.backward()
        opt.step()
    tuned.model.requires_grad_(False)
    return tuned
