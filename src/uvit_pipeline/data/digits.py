"""A small real labelled image set for learning checks: scikit-learn's handwritten digits.

`load_digits` ships with scikit-learn (1,797 greyscale 8×8 scans, 10 classes, no download), so tests
and benchmarks can show offline that a model learns real images, not only the synthetic demo shapes.
`write_digits_folder` writes them in the ImageNet folder layout (`train/<class>/*.png`, §7.1) that
`--params data_root=...` and the ingestion pipeline read. scikit-learn is a dev dependency, imported
only here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import atomic_write_bytes

__all__ = ["CLASS_NAMES", "digits_arrays", "write_digits_folder"]

# Folder names sort in label order, hold no '_' (the original's label rule, §7.1).
CLASS_NAMES = [f"digit{d}" for d in range(10)]


def digits_arrays(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 3, S, S) (white ink on black, grey in all channels) and labels (N,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - dev extra
        raise ImportError("the digits data set needs scikit-learn (pip install -e '.[dev]')") from e
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    data = load_digits()
    # 0..16 ink levels -> 0..255, then a bicubic upscale (smooth strokes, as a scan would be).
    small = np.rint(data.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    big = np.stack(
        [
            np.asarray(Image.fromarray(a, "L").resize((image_size,) * 2, Image.BICUBIC))
            for a in small
        ]
    )
    images = np.repeat(big[:, None], 3, axis=1)  # (N, 3, S, S)
    return np.ascontiguousarray(images), data.target.astype(np.int64)


def write_digits_folder(
    root: str | os.PathLike, image_size: int = 16, n_per_class: int | None = None
) -> Path:
    """Write the digits as `root/train/digit<k>/<k>-<i>.png` (RGB PNG, `image_size` px); returns root.

    `n_per_class` keeps the first n of each class (None: all, 174–183 per class). `root` must not
    exist yet or be empty: nothing is overwritten.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; give a new folder for the digits")
    images, labels = digits_arrays(image_size)
    for k, name in enumerate(CLASS_NAMES):
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        idx = np.flatnonzero(labels == k)[:n_per_class]
        for i in idx:
            png = _png_bytes(images[i])
            atomic_write_bytes(folder / f"{k}-{i:04d}.png", png)
    return root


def _png_bytes(chw: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(chw.transpose(1, 2, 0), "RGB").save(buf, format="PNG")
    return buf.getvalue()
