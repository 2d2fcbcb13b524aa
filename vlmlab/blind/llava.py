"""Option-letter scoring and encoder readout features for ``transformers`` LLaVA-family checkpoints.

The first piece of notebook 05's paper profile (``hidden_in_plain_sight.md`` §§3-4): a LLaVA model and
its processor loaded by name or path from local files only (never downloaded), asked a multiple-choice
question about one canvas on which the question's images stand side by side (black divider, as in the
paper's figures), and scored, like the embedded VLM, by the likelihood of each option letter as the
next token. ``vision_maps`` returns the vision tower's patch features at the layer the projector reads
(``vision_feature_layer``, [CLS] dropped; ``readout_layer`` picks another) as (N, C, H, W) maps, the
input of ``experiment.readout``.

``vlmlab.blind.benchmarks`` loads the real tasks; ``vlmlab.blind.experiment.prepare_benchmarks`` and the
``benchmark_*`` drivers run them through this scorer for the notebook's paper profile.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlmlab.blind.readouts import tokens_to_grid
from vlmlab.runtime import FETCH_HINT, get_logger

log = get_logger(__name__)

PROMPT = "USER: <image>\n{question}\nASSISTANT:"


def canvas(images: np.ndarray, divider: int = 4) -> np.ndarray:
    """(k, H, W, 3) uint8 -> (H, k W + (k - 1) divider, 3): the images side by side, black between them."""
    k, h, w, c = images.shape
    out = np.zeros((h, k * w + (k - 1) * divider, c), np.uint8)
    for i in range(k):
        out[:, i * (w + divider):i * (w + divider) + w] = images[i]
    return out


def square(image: np.ndarray, fill=(122, 116, 104)) -> np.ndarray:
    """(H, W, 3) -> (L, L, 3), L = max(H, W): the image centred on ``fill`` (LLaVA-1.5's "pad" aspect ratio).

    The processors of LLaVA checkpoints resize the short side and centre-crop a square, which would cut
    the outer images off a side-by-side canvas; padding to a square first keeps every image whole.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, image.shape[2]), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def canvas_boxes(k: int, height: int, width: int, divider: int = 4) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Where ``canvas`` + ``square`` put each of ``k`` (height, width) images: the square's side and one
    pixel box (x0, y0, x1, y1) per image."""
    total = k * width + (k - 1) * divider
    side = max(height, total)
    top, left = (side - height) // 2, (side - total) // 2
    return side, [(left + i * (width + divider), top, left + i * (width + divider) + width, top + height)
                  for i in range(k)]


class LlavaScorer:
    """A LLaVA-family model + processor from local files; letter scoring and vision-tower features."""

    def __init__(self, name_or_path: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 readout_layer: int | None = None):
        """``readout_layer``: the vision tower's hidden state the patch readouts read (an index into its
        ``hidden_states``, -1 the last block); None: the model's ``vision_feature_layer``, what the projector
        reads (-2 in LLaVA-1.5, as Prismatic's featurizer, docs/fidelity.md)."""
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(name_or_path, local_files_only=True)
            self.model = LlavaForConditionalGeneration.from_pretrained(name_or_path, local_files_only=True, dtype=dtype)
        except OSError as err:
            raise FileNotFoundError(f"{name_or_path!r} is not in the local Hugging Face cache or a local folder; "
                                    f"vlmlab never downloads at run time: {FETCH_HINT} (`llava-1.5-7b`), or "
                                    f"`hf download {name_or_path}`, then rerun") from err
        self.model.to(device).eval()
        self.name_or_path, self.device = str(name_or_path), torch.device(device)
        self.tokenizer = self.processor.tokenizer
        mean = getattr(self.processor.image_processor, "image_mean", None) or (0.481, 0.458, 0.408)
        self.fill = tuple(int(round(255 * m)) for m in mean)
        self.prefix = ""                 # text before each question (prompt tuning's soft tokens)
        self.readout_layer = self.model.config.vision_feature_layer if readout_layer is None else int(readout_layer)

    @functools.cached_property
    def identity(self) -> str | None:
        """Cache identity of the checkpoint: a digest of every file in its folder (weights, config, tokenizer
        and processor files, by their names in the folder; ``vlmlab.models.bundle.file_digest``, memoised on
        disk, so a 7B checkpoint is hashed once) and the weights' dtype; a copy in another folder keeps it. A
        hub name is read from its local snapshot; None (what it computes is not cached) when no folder holds
        the files."""
        from vlmlab.models.bundle import file_digest

        folder = Path(self.name_or_path).expanduser()
        if not folder.is_dir():
            try:
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(self.name_or_path, local_files_only=True))
            except Exception as err:                    # no local snapshot: the model came from elsewhere
                log.warning("%s: no local folder to key its results by (%s); they are not cached",
                            self.name_or_path, err)
                return None
        h = hashlib.sha1()
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                h.update(f"{rel.as_posix()}:{file_digest(path.resolve())}\n".encode())
        return f"llava-{h.hexdigest()[:12]}-{str(self.model.dtype).removeprefix('torch.')}"

    def copy(self) -> "LlavaScorer":
        """An independent copy (model and processor deep-copied), e.g. to fine-tune."""
        import copy

        out = object.__new__(LlavaScorer)
        out.__dict__ = dict(self.__dict__, model=copy.deepcopy(self.model), processor=copy.deepcopy(self.processor))
        out.tokenizer = out.processor.tokenizer
        return out

    def module(self, name: str) -> torch.nn.Module:
        """``vision_tower``, ``multi_modal_projector`` or ``language_model`` (transformers 4 and 5 layouts)."""
        found = getattr(self.model, name, None)
        return found if found is not None else getattr(self.model.model, name)

    def letter_ids(self, prompt: str, letters: str) -> list[int]:
        """The token id each option letter gets as the first token after ``prompt`` (tokenizer-specific)."""
        base = self.tokenizer(prompt, add_special_tokens=False).input_ids
        out = []
        for letter in letters:
            ids = self.tokenizer(prompt + " " + letter, add_special_tokens=False).input_ids
            if ids[:len(base)] != base or len(ids) != len(base) + 1:
                raise ValueError(f"letter {letter!r} is not one token after the prompt for this tokenizer")
            out.append(ids[-1])
        return out

    def letter_logits(self, image: np.ndarray, question: str, n_options: int) -> Tensor:
        """(K,) next-token logits of the letters A.. after one question about ``image`` (with gradients)."""
        from vlmlab.blind.tasks import LETTERS

        prompt, inputs = self._inputs(image, question, n_options)
        letters = self.letter_ids(prompt.replace("<image>", ""), LETTERS[:n_options])
        return self.model(**inputs).logits[0, -1, letters].float()

    @torch.no_grad()
    def option_logprobs(self, canvases: list[np.ndarray], questions: list[str], n_options: int) -> Tensor:
        """(Q, K) log-probabilities of the letters A.. as the next token, renormalised over the K letters.

        Each canvas is padded to a square (``square``) before the processor sees it.
        """
        return torch.stack([self.letter_logits(img, q, n_options).log_softmax(-1)
                            for img, q in zip(canvases, questions)]).cpu()

    def _inputs(self, image: np.ndarray, question: str, n_options: int):
        from vlmlab.blind.tasks import options_text

        prompt = PROMPT.format(question=f"{self.prefix}{question} {options_text(n_options)}")
        return prompt, self.processor(images=square(image, self.fill), text=prompt, return_tensors="pt").to(self.device)

    @torch.no_grad()
    def image_hidden_maps(self, images: np.ndarray, question: str, n_options: int, layers, pool: int = 8) -> Tensor:
        """The LM's hidden states at the image tokens of one question, cut back into its images.

        ``images`` (k, S, S, 3) go onto one canvas as in ``option_logprobs``; the image tokens form a
        square grid over the padded canvas, and each image's cells are average-pooled to ``pool`` x
        ``pool``. Returns (len(layers), k, d, pool, pool); layer 0 is the LM's input (projector output).
        """
        _, inputs = self._inputs(canvas(images), question, n_options)
        out = self.model(**inputs, output_hidden_states=True)
        pos = inputs["input_ids"][0] == self.model.config.image_token_index
        grid = int(round(int(pos.sum()) ** 0.5))
        side, boxes = canvas_boxes(len(images), images.shape[1], images.shape[2])
        maps = []
        for layer in layers:
            h = out.hidden_states[layer][0, pos].float().T.reshape(-1, grid, grid)          # (d, grid, grid)
            cells = [h[:, int(y0 * grid / side):max(int(y0 * grid / side) + 1, -(-y1 * grid // side)),
                       int(x0 * grid / side):max(int(x0 * grid / side) + 1, -(-x1 * grid // side))]
                     for x0, y0, x1, y1 in boxes]
            maps.append(torch.stack([torch.nn.functional.adaptive_avg_pool2d(c, pool) for c in cells]))
        return torch.stack(maps).cpu()

    @property
    def n_layers(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "text_config", cfg).num_hidden_layers

    @torch.no_grad()
    def vision_features(self, images: np.ndarray, batch_size: int = 32) -> tuple[Tensor, Tensor]:
        """(N, S, S, 3) uint8 -> the vision tower's patch maps (N, C, H, W) at ``readout_layer`` (default
        ``vision_feature_layer``, what the projector reads; [CLS] dropped) and its pooled [CLS] embeddings
        (N, D; the last block's)."""
        tower = self.module("vision_tower")
        maps, cls = [], []
        for i in range(0, len(images), batch_size):
            pixels = self.processor.image_processor(images=list(images[i:i + batch_size]), return_tensors="pt").pixel_values
            out = tower(pixels.to(self.device, self.model.dtype), output_hidden_states=True)
            maps.append(tokens_to_grid(out.hidden_states[self.readout_layer][:, 1:].float()).cpu())
            cls.append(out.pooler_output.float().cpu())
        return torch.cat(maps), torch.cat(cls)

    def vision_maps(self, images: np.ndarray) -> Tensor:
        """(N, S, S, 3) uint8 -> (N, C, H, W) vision-tower features at ``readout_layer``, [CLS] dropped."""
        return self.vision_features(images)[0]
