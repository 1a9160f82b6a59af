"""torch Dataset over a feature store: pixel or latent-moment items with flip and label dropping."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .feature_store import FeatureStore

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
        if kind == "latent_moments" and self.store.fields["moments"][0][0] != 2:
            raise ValueError(
                "latent store field 'moments' must have shape (2, C, h, w) = [orig, flip]"
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

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._generator()
        arr = self.store.get(self.field, idx)
        flip = self.random_flip and rng.random() < 0.5
        if self.kind == "pixels":
            # (C, H, W) uint8 -> [-1, 1] float32 (x/127.5 - 1, §7.1/§7.2); flip on the fly (p=0.5).
            if flip:
                arr = arr[..., ::-1]
            x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)) / 127.5 - 1.0
        else:
            # (2, 8, h, w): view 1 is the moments of the h-flipped image (§7.1 extraction).
            x = torch.from_numpy(np.ascontiguousarray(arr[int(flip)], dtype=np.float32))
        label = int(self.store.get("label", idx))
        if self.p_uncond > 0 and rng.random() < self.p_uncond:  # CFG label dropping (§4.3)
            label = int(self.null_label)
        return x, torch.tensor(label, dtype=torch.long)
