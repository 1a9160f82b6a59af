"""What samples are conditioned on: class labels or text contexts, drawn reproducibly (§3.3, §4.3, §7.3)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data.text_features import TextFeatures
from .spec import SamplingSpec

# Encoder-identity keys that must agree between a checkpoint and the contexts it is sampled with
# (the name may differ: a hub id and a local copy of the same weights).
_IDENTITY_KEYS = ("sha256", "hidden_size", "max_length", "class")


@dataclass
class TextConditions:
    """Text contexts of n samples, the null context for CFG, and where the contexts came from."""

    contexts: np.ndarray  # (n, L, D) float32
    null_context: np.ndarray  # (L, D) float32: the encoded empty prompt (§4.3), not zeros
    prompts: list[str] | None = None  # explicit prompts (visualisation / user prompts)
    caption_rows: np.ndarray | None = None  # (n,) rows of the text store split (for CLIP score)
    image_rows: np.ndarray | None = None  # (n,) the images those captions belong to

    def __len__(self) -> int:
        return len(self.contexts)


def _open(text: TextFeatures | str | os.PathLike) -> TextFeatures:
    return text if isinstance(text, TextFeatures) else TextFeatures(text)


def draw_caption_rows(
    offsets: np.ndarray, n: int, seed: int, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(image rows, caption rows) of samples start..start+n-1: a random image's random caption each.

    As the original's shuffled, drop-last loader over the val images (§3.3, §7.3): images follow a
    permutation seeded by (seed, epoch), so no image repeats before all were used, and each picks one
    of its captions uniformly. Sample i depends only on (seed, i): not on chunking or world size.
    """
    counts = np.diff(offsets)
    candidates = np.flatnonzero(counts > 0)  # an image without captions cannot condition a sample
    if len(candidates) == 0:
        raise ValueError("the text store split has no captions")
    m = len(candidates)
    positions = np.arange(start, start + n)
    images = np.empty(n, dtype=np.int64)
    captions = np.empty(n, dtype=np.int64)
    for epoch in np.unique(positions // m):
        rng = np.random.default_rng([int(seed), int(epoch)])
        perm, u = candidates[rng.permutation(m)], rng.random(m)
        sel = positions // m == epoch
        off = positions[sel] % m
        images[sel] = perm[off]
        captions[sel] = offsets[perm[off]] + (u[off] * counts[perm[off]]).astype(np.int64)
    return images, captions


def conditions_from_text_store(
    text: TextFeatures | str | os.PathLike,
    n: int,
    seed: int,
    start: int = 0,
    split: str = "val",
) -> TextConditions:
    """Contexts of samples start..start+n-1 drawn from `split` of a text store (FID evaluation, §3.3)."""
    text = _open(text)
    captions = text.split(split)
    image_rows, caption_rows = draw_caption_rows(captions.offsets, n, seed, start)
    return TextConditions(
        contexts=captions.contexts(caption_rows),
        null_context=text.empty_context,
        caption_rows=caption_rows,
        image_rows=image_rows,
    )


def conditions_from_prompts(
    prompt_contexts: np.ndarray | torch.Tensor,
    empty_context: np.ndarray | torch.Tensor,
    prompts: list[str] | None = None,
) -> TextConditions:
    """Explicit prompt features (n, L, D) and the empty-prompt features (L, D)."""
    contexts = np.asarray(torch.as_tensor(prompt_contexts).float().cpu())
    null = np.asarray(torch.as_tensor(empty_context).float().cpu())
    if null.ndim == 3 and null.shape[0] == 1:
        null = null[0]
    if contexts.ndim != 3 or null.shape != contexts.shape[1:]:
        raise ValueError(
            f"prompt contexts (n, L, D) and empty context (L, D) disagree: {contexts.shape} vs "
            f"{null.shape}"
        )
    if prompts is not None and len(prompts) != len(contexts):
        raise ValueError(f"{len(prompts)} prompts for {len(contexts)} contexts")
    return TextConditions(contexts, null, prompts=None if prompts is None else list(prompts))


def store_prompt_conditions(
    text: TextFeatures | str | os.PathLike, count: int | None = None
) -> TextConditions:
    """The store's visualisation prompts (the first `count`; training grids use 10 of 12, §7.3)."""
    text = _open(text)
    prompts, contexts = text.prompts, text.prompt_contexts
    count = len(prompts) if count is None else count
    return conditions_from_prompts(contexts[:count], text.empty_context, prompts[:count])


def encode_prompt_conditions(encoder, prompts: list[str], max_length: int = 77) -> TextConditions:
    """User prompts encoded on the fly (an `encoders.TextEncoder`); the null context is the encoded ""."""
    # transformers takes seconds to import: only text models need it
    from ..encoders.text import encode_prompts

    contexts = encode_prompts(encoder, list(prompts), max_length=max_length)
    empty = encode_prompts(encoder, [""], max_length=max_length)[0]
    return conditions_from_prompts(contexts, empty, list(prompts))


def check_text_identity(recorded: dict | None, actual: dict, what: str) -> None:
    """Raise when the text features' encoder differs from the one a checkpoint was trained with."""
    if not recorded:
        return
    bad = {
        k: (recorded[k], actual[k])
        for k in _IDENTITY_KEYS
        if k in recorded and k in actual and recorded[k] != actual[k]
    }
    if bad:
        lines = [f"  {k}: checkpoint={r!r} {what}={a!r}" for k, (r, a) in bad.items()]
        raise ValueError(
            f"{what} come from another text encoder than the checkpoint was trained with:\n"
            + "\n".join(lines)
        )


def chunk_labels(spec: SamplingSpec, k: int, size: int) -> torch.Tensor | None:
    """Labels of chunk k, seeded by (seed, k); None for unconditional models. y ~ Uniform{0..K-1}
    (ImageNet 256/512), or ~ `label_probs` (ImageNet 64 draws from the training set's class frequencies, §3.3)."""
    if not spec.num_real_classes:
        return None
    if spec.labels is not None:  # explicit labels, e.g. one row per class for a grid
        lo = k * int(spec.batch_size)
        return torch.tensor(spec.labels[lo : lo + size], dtype=torch.long)
    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + 2 * k + 1)
    if spec.label_probs is not None:
        probs = torch.tensor(spec.label_probs, dtype=torch.float64)
        return torch.multinomial(probs, size, replacement=True, generator=gen)
    return torch.randint(0, spec.num_real_classes, (size,), generator=gen)
