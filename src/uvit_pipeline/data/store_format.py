"""The feature store's on-disk format: file names, meta keys, hashing, shared errors.

The reader (feature_store.py) and the writer (store_writer.py) both build on this module; the
layout itself is described in feature_store.py's docstring and docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from uvit_pipeline.errors import UserFacingError

from .._io import atomic_write

FORMAT_VERSION = 2  # 2: per-shard sha256, content_id, skipped-input report
# Keys that change as writing progresses (or are written at close).
STATE_KEYS = (
    "num_rows",
    "num_shards",
    "num_skipped",
    "checksums",
    "manifest_sha256",
    "content_id",
    "fingerprints",
    "complete",
)
# Keys the store itself owns; caller meta may not use them.
RESERVED_KEYS = ("format_version", "fields", "shard_size", *STATE_KEYS)
PARTS = "manifest-parts"
FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
REPORT_COLUMNS = ["path", "reason"]
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class FeatureStoreMismatch(UserFacingError, ValueError):
    """A store's meta differs from what the caller expects; `mismatches` = {key: (store, expected)}."""

    def __init__(self, root, mismatches: dict, hint: str = ""):
        self.mismatches = mismatches
        lines = [f"  {k}: store={s!r} expected={e!r}" for k, (s, e) in mismatches.items()]
        msg = f"feature store {root} does not match:\n" + "\n".join(lines)
        super().__init__(msg + (f"\n{hint}" if hint else ""))


class FeatureStoreIncomplete(UserFacingError, RuntimeError):
    """The store exists but its writer has not finished (re-run the writer to resume)."""


class FeatureStoreCorrupt(UserFacingError, RuntimeError):
    """A store's files are damaged or inconsistent; the message names the file and the problem."""

    def __init__(self, root, problem: str):
        self.root = Path(root)
        super().__init__(
            f"feature store {root} is damaged: {problem}. Re-extract it (delete {root} and re-run "
            "the feature extraction)"
        )


def read_meta(root: Path) -> dict:
    path = root / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FeatureStoreCorrupt(root, f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fields"), dict):
        raise FeatureStoreCorrupt(root, f"{path} holds no 'fields' mapping")
    return meta


def file_sha256(path: Path, bar=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    return h.hexdigest()


FINGERPRINT_BLOCK = 1 << 16  # bytes of each sampled block


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a file: sha256 of its size and of its first, middle and last 64 KiB (the
    whole file when it is smaller than 3 blocks). Catches a truncated, swapped or zero-filled file
    (and any change within those blocks) at the cost of reading 192 KiB; `file_sha256` is the full
    check."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode())
        block = FINGERPRINT_BLOCK
        if size <= 3 * block:
            h.update(f.read())
        else:
            for offset in (0, (size // 2) - block // 2, size - block):
                f.seek(offset)
                h.update(f.read(block))
    return h.hexdigest()


def content_id(checksums: dict, manifest_sha256: str) -> str:
    """Identity of a complete store: sha256 over its shard checksums and its manifest file."""
    key = json.dumps({"checksums": checksums, "manifest_sha256": manifest_sha256}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


class HashingFile:
    """Write-through file wrapper that hashes what is written (np.save streams into it)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self.f.write(b)


def save_npy(path: Path, arr: np.ndarray) -> str:
    """np.save `arr` to `path` atomically; returns the sha256 of the bytes written."""
    out = {}

    def write(f) -> None:
        hashing = HashingFile(f)
        np.save(hashing, arr)
        out["sha256"] = hashing.sha.hexdigest()

    atomic_write(path, write)
    return out["sha256"]


def jsonable(obj):
    """Normalise through JSON so tuples/lists and numpy scalars compare equal to the file."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def diff(store: dict, expected: dict, missing="<missing>") -> dict:
    return {
        k: (store.get(k, missing), v)
        for k, v in expected.items()
        if k not in store or store[k] != v
    }


def shard_file(root: Path, shard: int, field: str) -> Path:
    return root / f"shard-{shard:05d}.{field}.npy"


def part_file(root: Path, shard: int) -> Path:
    return root / PARTS / f"{shard:05d}.parquet"


def sums_file(root: Path, shard: int) -> Path:
    return root / PARTS / f"{shard:05d}.json"


def normalise_fields(fields: dict) -> dict:
    """{name: (shape, dtype)} -> {name: {"shape": [...], "dtype": str}} (validated)."""
    if "label" not in fields:
        raise ValueError("fields must include 'label' (shape (), int64): every store has labels")
    out = {}
    for name, spec in fields.items():
        if not FIELD_RE.match(name):
            raise ValueError(f"field name {name!r} must be alphanumeric and start with a letter")
        try:
            shape, dtype = spec
            out[name] = {"shape": [int(s) for s in shape], "dtype": np.dtype(dtype).name}
        except (TypeError, ValueError) as e:
            raise ValueError(f"fields[{name!r}] must be (shape tuple, dtype), got {spec!r}") from e
    if out["label"] != {"shape": [], "dtype": "int64"}:
        raise ValueError(f"fields['label'] must be ((), int64), got {fields['label']!r}")
    return out
