"""CIFAR-10 python batches (the official distribution format), read with a restricted unpickler."""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import InputRefused, read_regular_file

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

TRAIN_BATCHES = [f"data_batch_{k}" for k in range(1, 6)]
TEST_BATCHES = ["test_batch"]

# The only globals a CIFAR batch pickle needs: numpy array reconstruction (numpy 1 and 2 module
# paths) and `_codecs.encode`, which Python 3's protocol-2 pickles use for bytes objects.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy-array globals of `_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: not allowed in a CIFAR-10 batch"
            ) from None


def _load_pickle(path: Path) -> dict:
    """Unpickle `path` allowing only plain containers and numpy arrays; return a str-keyed dict."""
    try:  # a regular file only (a FIFO would block), read whole: batches are 30 MB
        obj = _RestrictedUnpickler(io.BytesIO(read_regular_file(path)), encoding="bytes").load()
    except InputRefused as e:
        raise ValueError(str(e)) from None
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path}: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    # Official files were pickled by Python 2 (bytes keys); Python 3 re-writes give str keys.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_dir(root: Path) -> Path:
    for cand in (root / "cifar-10-batches-py", root):
        if (cand / "batches.meta").is_file():
            return cand
    raise FileNotFoundError(f"CIFAR-10 batches not found under {root} (no batches.meta)")


def read_cifar10(
    root: str | os.PathLike, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Read CIFAR-10 python batches -> (images uint8 (N, 3, 32, 32), labels int64 (N,), manifest).

    `root` is the folder holding `cifar-10-batches-py/` or that folder itself. Manifest `path`
    is "<batch>#<i>"; `checksum` is the sha1 of the 3072 image bytes; `index` is the row in `images`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 root not found: {root}")
    base = _batch_dir(root)
    meta = _load_pickle(base / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{base / 'batches.meta'}: 'label_names' must be a list of strings")
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    images, labels, rows = [], [], []
    for batch in TRAIN_BATCHES if split == "train" else TEST_BATCHES:
        path = base / batch
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch file missing: {path}")
        d = _load_pickle(path)
        data, lab = d.get("data"), d.get("labels")
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            raise ValueError(f"{path}: 'data' must be a uint8 array (N, 3072)")
        if data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: 'data' must have 3072 columns, got {data.shape[1]}")
        lab = np.asarray(lab, dtype=np.int64) if isinstance(lab, list | np.ndarray) else None
        if lab is None or lab.shape != (data.shape[0],):
            raise ValueError(f"{path}: 'labels' must be a list of {data.shape[0]} ints")
        if lab.size and (lab.min() < 0 or lab.max() >= len(names)):
            raise ValueError(f"{path}: labels outside 0..{len(names) - 1}")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R(1024) G(1024) B(1024), row-major
        labels.append(lab)
        base_index = sum(len(a) for a in images[:-1])
        rows += [
            (
                f"{batch}#{i}",
                int(y),
                names[y],
                32,
                32,
                hashlib.sha1(data[i].tobytes()).hexdigest(),
                base_index + i,
            )
            for i, y in enumerate(lab)
        ]
    manifest = pd.DataFrame(
        rows, columns=["path", "label", "class_name", "width", "height", "checksum", "index"]
    )
    manifest.attrs["checksum_algorithm"] = "sha1"
    return np.concatenate(images), np.concatenate(labels), manifest


# Name used in docs/interfaces.md.
read_cifar10_batches = read_cifar10
