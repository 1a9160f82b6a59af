"""Read-only view of a text-context store: per-caption text-encoder features of an image store (§7.3).

Layout (written by the features pipeline):
  meta.json            {"kind": "text_context", "encoder": {name, hidden_size, sha256, max_length, class},
                        "max_length": L, ...}
  <split>/             a FeatureStore: context ((L, D), float16), label ((), int64) = image row; one row per
                       caption, sorted by (image row, caption order)
  <split>/offsets.npy  int64 (n_images + 1,): the captions of image i are rows offsets[i]:offsets[i+1]
  empty_context.npy    float32 (L, D): the encoded empty prompt "" (the CFG null context, §4.3; not zeros)
  prompts.json, prompt_contexts.npy   visualisation prompts and their features (n_prompts, L, D)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .feature_store import FeatureStore

TEXT_KIND = "text_context"


@dataclass(frozen=True)
class CaptionSplit:
    """The captions of one split: `store` rows grouped per image by `offsets`."""

    store: FeatureStore
    offsets: np.ndarray  # (n_images + 1,) int64

    @property
    def num_images(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        """Captions per image, (n_images,)."""
        return np.diff(self.offsets)

    def contexts(self, rows) -> np.ndarray:
        """Features of caption rows as float32 (n, L, D)."""
        return np.stack([self.store.get("context", int(r)) for r in rows]).astype(np.float32)


class TextContexts:
    """Minimal reader of a text-context store; validates what training and sampling rely on."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no text-context store at {self.root} (missing meta.json)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("kind") != TEXT_KIND:
            raise ValueError(
                f"{meta_path}: kind must be {TEXT_KIND!r}, got {self.meta.get('kind')!r}"
            )
        encoder = self.meta.get("encoder")
        if not isinstance(encoder, dict) or "hidden_size" not in encoder:
            raise ValueError(f"{meta_path}: 'encoder' must be a mapping with 'hidden_size'")
        if not isinstance(self.meta.get("max_length"), int):
            raise ValueError(f"{meta_path}: 'max_length' must be an integer")
        self._splits: dict[str, CaptionSplit] = {}
        self._empty: np.ndarray | None = None

    @property
    def encoder(self) -> dict:
        """Identity of the text encoder that made the features (name, hidden_size, sha256, ...)."""
        return dict(self.meta["encoder"])

    @property
    def identity(self) -> dict:
        """Encoder identity plus the token count: what a checkpoint records about its text features."""
        return {**self.encoder, "max_length": self.max_length}

    @property
    def hidden_size(self) -> int:
        return int(self.meta["encoder"]["hidden_size"])

    @property
    def max_length(self) -> int:
        return int(self.meta["max_length"])

    @property
    def context_shape(self) -> tuple[int, int]:
        return (self.max_length, self.hidden_size)

    def split(self, name: str) -> CaptionSplit:
        """The caption store and offsets of split `name` ("train" / "val"), checked once."""
        if name not in self._splits:
            self._splits[name] = self._open_split(name)
        return self._splits[name]

    def _open_split(self, name: str) -> CaptionSplit:
        root = self.root / name
        store = FeatureStore(root)
        field = store.fields.get("context")
        if field is None or field[0] != self.context_shape:
            raise ValueError(
                f"text store {root}: field 'context' must have shape {self.context_shape} "
                f"(max_length, encoder hidden size), got {None if field is None else field[0]}"
            )
        path = root / "offsets.npy"
        if not path.is_file():
            raise FileNotFoundError(f"text store split {root} lacks offsets.npy")
        offsets = np.load(path, allow_pickle=False)
        ok = (
            offsets.ndim == 1
            and offsets.dtype.kind in "iu"
            and len(offsets) >= 2
            and offsets[0] == 0
            and offsets[-1] == len(store)
            and np.all(np.diff(offsets) >= 0)
        )
        if not ok:
            raise ValueError(
                f"{path}: offsets must be a non-decreasing int array from 0 to {len(store)} "
                f"(number of caption rows), got shape {offsets.shape} dtype {offsets.dtype}"
            )
        offsets = offsets.astype(np.int64)
        expected = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        if not np.array_equal(store.read_all("label"), expected):
            raise ValueError(
                f"text store {root}: caption labels disagree with offsets.npy (rows must be sorted "
                "by image row, label = image row)"
            )
        return CaptionSplit(store, offsets)

    @property
    def empty_context(self) -> np.ndarray:
        """float32 (L, D): the encoded empty prompt."""
        if self._empty is None:
            self._empty = self._load_array("empty_context.npy", self.context_shape)
        return self._empty

    def prompts(self) -> tuple[list[str], np.ndarray]:
        """Visualisation prompts and their features float32 (n_prompts, L, D)."""
        path = self.root / "prompts.json"
        if not path.is_file():
            raise FileNotFoundError(f"text store {self.root} lacks prompts.json")
        prompts = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(prompts, dict):
            prompts = prompts.get("prompts")
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{path}: expected a list of prompt strings")
        contexts = self._load_array("prompt_contexts.npy", (len(prompts), *self.context_shape))
        return prompts, contexts

    def _load_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"text store {self.root} lacks {name}")
        arr = np.load(path, allow_pickle=False)
        if arr.shape != shape:
            raise ValueError(f"{path}: expected shape {shape}, got {arr.shape}")
        return arr.astype(np.float32)
