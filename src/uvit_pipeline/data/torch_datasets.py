"""torch Datasets over a feature store: pixel or latent-moment items with flip and label dropping,
and the text-conditioned variant that pairs each image with one of its captions (§7.3)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .feature_store import FeatureStore
from .text_features import CaptionSplit

# The one registry of feature kinds (`features.kind`) and the store field each one reads.
_FIELD_OF_KIND = {"pixels": "x", "latent_moments": "moments"}
FEATURE_KINDS = tuple(_FIELD_OF_KIND)


class FeatureDataset(Dataset):
    """(x float32, label int64) items from a pixel or latent-moments feature store."""

    def __init__(
        self,
        store_or_path: FeatureStore | str | os.PathLike,
        random_flip: bool,
        p_uncond: float = 0.0,
        null_label: int | None = None,
        seed: int = 0,
    ):
        self.store = (
            store_or_path
            if isinstance(store_or_path, FeatureStore)
            else FeatureStore(store_or_path)
        )
        kind = self.store.meta.get("kind")
        if kind not in _FIELD_OF_KIND:
            raise ValueError(
                f"feature store {self.store.root}: meta 'kind' must be one of "
                f"{sorted(_FIELD_OF_KIND)}, got {kind!r}"
            )
        self.kind, self.field = kind, _FIELD_OF_KIND[kind]
        if self.field not in self.store.fields:
            raise ValueError(
                f"feature store {self.store.root} of kind {kind!r} lacks field {self.field!r}"
            )
        self.views = self.store.fields["moments"][0][0] if kind == "latent_moments" else None
        if self.views not in (None, 1, 2):
            raise ValueError(
                f"latent store {self.store.root}: field 'moments' must have shape (V, 2C, h, w) "
                f"with V = 2 [orig, flip] or V = 1 [orig], got V = {self.views}"
            )
        if self.views == 1 and random_flip:
            # Flipping moments is not flipping the image: a one-view store has no flipped latents.
            raise ValueError(
                f"latent store {self.store.root} holds one view per image (meta flip "
                f"{self.store.meta.get('flip')!r}): random_flip must be false "
                "(training.data.random_flip)"
            )
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        if p_uncond > 0 and null_label is None:
            raise ValueError("p_uncond > 0 needs null_label (the class index used for 'no label')")
        self.random_flip = bool(random_flip)
        self.p_uncond = float(p_uncond)
        self.null_label = null_label
        self.seed = int(seed)
        self._rng_key = None
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.store)

    def _generator(self) -> np.random.Generator:
        """Per-process RNG: seeded from torch's worker seed inside DataLoader workers.

        torch derives worker seeds from the main process's torch RNG, so a run seeded with
        torch.manual_seed is reproducible; a new epoch's workers get fresh seeds.
        """
        info = get_worker_info()
        key = (os.getpid(), None if info is None else (info.id, info.seed))
        if self._rng is None or key != self._rng_key:
            entropy = [self.seed] if info is None else [self.seed, info.seed]
            self._rng, self._rng_key = np.random.default_rng(entropy), key
        return self._rng

    def _image(self, idx: int, rng: np.random.Generator) -> torch.Tensor:
        arr = self.store.get(self.field, idx)
        flip = self.random_flip and rng.random() < 0.5
        if self.kind == "pixels":
            # (C, H, W) uint8 -> [-1, 1] float32 (x/127.5 - 1, §7.1/§7.2); flip on the fly (p=0.5).
            if flip:
                arr = arr[..., ::-1]
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) / 127.5 - 1.0
        # (V, 8, h, w): view 1 is the moments of the h-flipped image (§7.1 extraction).
        return torch.from_numpy(np.ascontiguousarray(arr[int(flip)], dtype=np.float32))

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._generator()
        x = self._image(idx, rng)
        label = int(self.store.get("label", idx))
        if self.p_uncond > 0 and rng.random() < self.p_uncond:  # CFG label dropping (§4.3)
            label = int(self.null_label)
        return x, torch.tensor(label, dtype=torch.long)

    def _images(self, rows: np.ndarray, flip: np.ndarray) -> torch.Tensor:
        """Batch form of `_image`: one sorted read of `rows`, then each row's flip applied."""
        if self.kind == "pixels":
            arr = self.store.take(self.field, rows)
            if flip.any():
                arr[flip] = arr[flip][..., ::-1]
            return torch.from_numpy(arr).to(torch.float32) / 127.5 - 1.0
        # Latent moments: only the chosen view (0 = orig, 1 = flipped image) of each row is read.
        arr = self.store.take(self.field, rows, sub=flip.astype(np.int64))
        return torch.from_numpy(arr).to(torch.float32)

    def get_batch(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The collated items `rows` in one read: equal to stacking `self[i]` for i in rows, with
        the same random draws in the same order (so a batch equals its items, per RNG stream)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rng = self._generator()
        # Per item: a flip draw (if random_flip), then a drop draw (if p_uncond > 0), as __getitem__.
        k = int(self.random_flip) + int(self.p_uncond > 0)
        u = rng.random((len(rows), k)) if k else np.zeros((len(rows), 0))
        flip = u[:, 0] < 0.5 if self.random_flip else np.zeros(len(rows), dtype=bool)
        labels = torch.from_numpy(self.store.take("label", rows))
        if self.p_uncond > 0:
            labels[torch.from_numpy(u[:, -1] < self.p_uncond)] = int(self.null_label)
        return self._images(rows, flip), labels


class CaptionedFeatureDataset(FeatureDataset):
    """(x float32, context float32 (L, D)) items: an image and one of its captions' text features.

    The caption is drawn uniformly among the image's captions at every access, and replaced by the
    encoded empty prompt with probability `p_uncond`, per sample (§4.3, §7.3).
    """

    def __init__(
        self,
        store_or_path: FeatureStore | str | os.PathLike,
        captions: CaptionSplit,
        empty_context: np.ndarray,
        random_flip: bool,
        p_uncond: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(store_or_path, random_flip, seed=seed)
        if captions.num_images != len(self.store):
            raise ValueError(
                f"text store {captions.store.root} has captions for {captions.num_images} images "
                f"but image store {self.store.root} holds {len(self.store)}"
            )
        empty = captions.counts() == 0
        if empty.any():
            raise ValueError(
                f"text store {captions.store.root}: {int(empty.sum())} images have no caption "
                f"(first image row {int(np.argmax(empty))})"
            )
        shape = captions.store.fields["context"][0]
        if tuple(np.shape(empty_context)) != shape:
            raise ValueError(
                f"empty_context has shape {np.shape(empty_context)}, captions have {shape}"
            )
        if not 0.0 <= p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.captions = captions
        self.empty_context = torch.from_numpy(np.asarray(empty_context, dtype=np.float32))
        self.p_uncond = float(p_uncond)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._generator()
        x = self._image(idx, rng)
        if self.p_uncond > 0 and rng.random() < self.p_uncond:  # CFG caption dropping (§4.3)
            return x, self.empty_context.clone()
        lo, hi = self.captions.offsets[idx], self.captions.offsets[idx + 1]
        row = int(lo + rng.integers(hi - lo))  # uniform over this image's captions, every access
        context = self.captions.store.get("context", row).astype(np.float32)
        return x, torch.from_numpy(context)

    def get_batch(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """The collated items `rows` in one read of images and one of captions; the same random
        draws in the same order as `self[i]` item by item (the draws interleave, so they loop)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rng = self._generator()
        offsets = self.captions.offsets
        flip = np.zeros(len(rows), dtype=bool)
        caption = np.full(len(rows), -1, dtype=np.int64)  # -1: the empty context
        for i, idx in enumerate(rows.tolist()):
            flip[i] = self.random_flip and rng.random() < 0.5
            if self.p_uncond > 0 and rng.random() < self.p_uncond:
                continue
            lo, hi = offsets[idx], offsets[idx + 1]
            caption[i] = int(lo + rng.integers(hi - lo))
        x = self._images(rows, flip)
        context = self.empty_context.expand(len(rows), *self.empty_context.shape).clone()
        kept = caption >= 0
        if kept.any():
            context[torch.from_numpy(kept)] = torch.from_numpy(
                self.captions.contexts(caption[kept])
            )
        return x, context


class BatchReads(Dataset):
    """A map-style dataset whose item `rows` (a list of row indices) is the whole collated batch,
    read with `dataset.get_batch(rows)`; pair it with a `BatchSampler` and `batch_size=None`."""

    def __init__(self, dataset: FeatureDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dataset.get_batch(rows)
