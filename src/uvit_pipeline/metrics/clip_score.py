"""CLIP score of generated images against their prompts (text-to-image evaluation).

clip_score = mean over pairs of 100 · max(cos(E_image, E_text), 0), the CLIPScore convention (×100, clamped
at 0) of torchmetrics, with CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, the model whose text encoder
conditions U-ViT on MS-COCO, §7.3). Images go through the model's own CLIPProcessor (bicubic resize of the
short side + center crop to 224, CLIP normalisation); prompts are truncated to 77 tokens. A score from a
network that is not ViT-L/14 at 224 px is reported as `clip_score_substitute`, never as `clip_score`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPProcessor

from uvit_pipeline._io import entry_load_error

log = logging.getLogger(__name__)

CLIP_SCORE_MODEL = "openai/clip-vit-large-patch14"
# (vision hidden size, patch size, layers, image size, projection dim) of CLIP ViT-L/14 at 224 px.
_VIT_L14 = (1024, 14, 24, 224, 768)


@dataclass
class ClipScorer:
    """A CLIP model and its processor, frozen, plus where they came from."""

    model: CLIPModel
    processor: CLIPProcessor
    name: str

    @property
    def metric_name(self) -> str:
        v = self.model.config.vision_config
        arch = (
            v.hidden_size,
            v.patch_size,
            v.num_hidden_layers,
            v.image_size,
            self.model.config.projection_dim,
        )
        return "clip_score" if arch == _VIT_L14 else "clip_score_substitute"


def _offline_message(name: str, reason: str) -> str:
    return (
        f"catalog entry `clip_model`: cannot load CLIP model {name!r} ({reason}). Point the "
        "catalog entry `clip_model` at a local directory holding the CLIPModel and its CLIPProcessor "
        f"(save_pretrained output), or to a Hugging Face id reachable from this machine; the "
        f"CLIP score uses {CLIP_SCORE_MODEL!r}. Download once on a connected machine with "
        f"`huggingface-cli download {CLIP_SCORE_MODEL}`."
    )


def load_clip_scorer(
    name_or_path: str | os.PathLike = CLIP_SCORE_MODEL,
    device: str | torch.device = "cpu",
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ClipScorer:
    """Load `CLIPModel` + `CLIPProcessor` from a Hugging Face id or a local directory (eval, no grads)."""
    name = str(name_or_path)
    path = Path(name)
    if (path.is_absolute() or name.startswith((".", "~")) or path.exists()) and not path.is_dir():
        raise FileNotFoundError(f"catalog entry `clip_model`: directory {path} does not exist")
    kwargs: dict = {"cache_dir": cache_dir}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        processor = CLIPProcessor.from_pretrained(name, **kwargs)
        model = CLIPModel.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:  # not cached + offline, missing files, HTTP errors
        raise RuntimeError(_offline_message(name, str(err).splitlines()[0])) from err
    except Exception as err:  # a damaged weights file: UnpicklingError, safetensors errors, ...
        raise entry_load_error("clip_model", name, err) from err
    model = model.to(device).eval().requires_grad_(False)
    log.info("Loaded CLIP model %s for the CLIP score", name)
    return ClipScorer(model=model, processor=processor, name=name)


@torch.no_grad()
def clip_similarities(
    scorer: ClipScorer,
    images: np.ndarray,
    texts: list[str],
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Cosine similarity (N,) float64 of each uint8 image (N, 3, H, W) with its own text."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {images.shape}")
    if len(texts) != len(images) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts: expected {len(images)} strings (one per image), got {len(texts)}")
    device = scorer.model.device
    out = []
    batches = range(0, len(images), batch_size)
    for lo in tqdm(batches, desc="clip score", unit="batch", disable=not progress):
        batch = list(images[lo : lo + batch_size].transpose(0, 2, 3, 1))  # HWC uint8 for PIL
        inputs = scorer.processor(
            text=list(texts[lo : lo + batch_size]),
            images=batch,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=77,
        ).to(device)
        result = scorer.model(**inputs)  # image_embeds / text_embeds: projected, L2-normalised
        out.append((result.image_embeds * result.text_embeds).sum(-1).double().cpu().numpy())
    return np.concatenate(out)


def clip_score(
    scorer: ClipScorer, images: np.ndarray, texts: list[str], batch_size: int = 64
) -> dict:
    """{metric name: mean 100·max(cos, 0), "clip_model": name, "clip_score_n": N} for image/text pairs."""
    cos = clip_similarities(scorer, images, texts, batch_size)
    return clip_score_of(cos, scorer.metric_name, scorer.name)


def clip_score_of(cos: np.ndarray, metric_name: str, model_name: str) -> dict:
    """`clip_score`'s result from the cosine similarities of the pairs (`clip_similarities`)."""
    cos = np.asarray(cos, dtype=np.float64)
    return {
        metric_name: float(100.0 * np.maximum(cos, 0.0).mean()),
        "clip_model": model_name,
        "clip_score_n": len(cos),
    }
