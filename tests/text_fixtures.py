"""Tiny text-to-image stores in the feature-store contract: one-view latent moments + a text-context store.

Caption row r has context[0, 0] = r, so a drawn context identifies its caption; the empty context is -7.
"""

from __future__ import annotations

import json

import numpy as np

from uvit_pipeline.data import FeatureStoreWriter

HIDDEN, MAX_LENGTH = 32, 77
ENCODER = {
    "name": "unit-test/tiny-clip",
    "class": "CLIPTextModel",
    "hidden_size": HIDDEN,
    "max_length": MAX_LENGTH,
    "sha256": "0" * 64,
}
EMPTY_VALUE = -7.0
PROMPTS = ["a red square", "a green train is coming down the tracks past a very long platform"]


def write_latent_store(root, n: int = 6, h: int = 4, scale_factor: float = 0.2301, seed: int = 0):
    """COCO-style latent store: V = 1 view per image (meta flip "none")."""
    rng = np.random.default_rng(seed)
    moments = rng.standard_normal((n, 1, 8, h, h)).astype(np.float16)
    moments[:, :, 4:] = -2.0  # logvar: small posterior std
    meta = {"kind": "latent_moments", "flip": "none", "scale_factor": scale_factor}
    fields = {"moments": ((1, 8, h, h), "float16"), "label": ((), "int64")}
    with FeatureStoreWriter(root, meta=meta, fields=fields, shard_size=4) as w:
        w.add({"moments": moments, "label": np.arange(n, dtype=np.int64)})
    return root


def _write_split(root, counts: list[int], hidden: int, max_length: int) -> np.ndarray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = int(offsets[-1])
    context = np.zeros((rows, max_length, hidden), dtype=np.float16)
    context[:, 0, 0] = np.arange(rows)  # identifies the caption row
    context[:, 1:, :] = 0.25
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    fields = {"context": ((max_length, hidden), "float16"), "label": ((), "int64")}
    with FeatureStoreWriter(
        root, meta={"kind": "text_context_split"}, fields=fields, shard_size=5
    ) as w:
        w.add({"context": context, "label": labels})
    np.save(root / "offsets.npy", offsets)
    return offsets


def write_text_store(
    root,
    train_counts=(1, 2, 3, 5, 5, 4),
    val_counts=(5, 5, 6, 7),
    hidden: int = HIDDEN,
    max_length: int = MAX_LENGTH,
    encoder: dict | None = None,
):
    """A text-context store with train/ and val/ splits, empty context and two prompts."""
    root.mkdir(parents=True, exist_ok=True)
    encoder = {**ENCODER, "hidden_size": hidden, "max_length": max_length, **(encoder or {})}
    splits = {
        name: {"num_images": len(counts), "num_captions": sum(counts)}
        for name, counts in (("train", train_counts), ("val", val_counts))
    }
    meta = {
        "kind": "text_context",
        "encoder": encoder,
        "max_length": max_length,
        "splits": splits,
        "complete": True,
    }
    (root / "meta.json").write_text(json.dumps(meta))
    _write_split(root / "train", list(train_counts), hidden, max_length)
    _write_split(root / "val", list(val_counts), hidden, max_length)
    np.save(root / "empty_context.npy", np.full((max_length, hidden), EMPTY_VALUE, np.float32))
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    prompt_ctx = np.random.default_rng(1).standard_normal((len(PROMPTS), max_length, hidden))
    np.save(root / "prompt_contexts.npy", prompt_ctx.astype(np.float32))
    return root
