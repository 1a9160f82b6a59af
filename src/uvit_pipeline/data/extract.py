"""Streaming feature extraction: manifest rows -> decoded, cropped images -> (optionally VAE moments) ->
sharded feature store. Memory is bounded by one batch plus one shard; an interrupted run resumes at the
first missing shard of the same output directory (architecture §5)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .feature_store import FeatureStoreWriter
from .images import apply_crop, load_rgb, to_uint8_chw

log = logging.getLogger(__name__)


def _crop_uint8(img, crop: str, resolution: int) -> np.ndarray:
    return to_uint8_chw(apply_crop(img, crop, resolution))


def _decoder(
    raw_root: Path,
    manifest: pd.DataFrame,
    crop: str,
    resolution: int,
    array_source: np.ndarray | None,
) -> Callable[[int], np.ndarray]:
    """Row index -> cropped uint8 (3, R, R) image, from files under ``raw_root`` or an in-memory array."""

    def decode(i: int) -> np.ndarray:
        if array_source is not None:
            from PIL import Image

            img = Image.fromarray(array_source[int(manifest["index"].iat[i])].transpose(1, 2, 0))
            return _crop_uint8(img, crop, resolution)
        return _crop_uint8(load_rgb(raw_root / manifest["path"].iat[i]), crop, resolution)

    return decode


def in_memory_source(raw_root: str | Path, source: str, split: str) -> np.ndarray | None:
    """Images of data sets distributed as arrays (CIFAR-10's python batches), else None (files)."""
    if source != "cifar10":
        return None
    from .cifar import read_cifar10

    return read_cifar10(raw_root, split=split)[0]


def load_images(
    raw_root: str | Path,
    manifest: pd.DataFrame,
    *,
    crop: str,
    resolution: int,
    limit: int | None = None,
    workers: int = 2,
    array_source: np.ndarray | None = None,
) -> np.ndarray:
    """The first ``limit`` manifest images, preprocessed as for features, as uint8 (N, 3, R, R)."""
    n = len(manifest) if limit is None else min(limit, len(manifest))
    decode = _decoder(Path(raw_root), manifest, crop, resolution, array_source)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(decode, range(n))))


def _batches(n: int, start: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for lo in range(start, n, batch_size):
        yield lo, min(lo + batch_size, n)


def extract_features(
    raw_root: str | Path,
    manifest: pd.DataFrame,
    out_dir: str | Path,
    *,
    meta: dict,
    crop: str,
    resolution: int,
    shard_size: int = 1024,
    batch_size: int = 64,
    workers: int = 2,
    array_source: np.ndarray | None = None,
    encoder: Callable[[np.ndarray], np.ndarray] | None = None,
    flip: bool = True,
    progress: bool = True,
) -> Path:
    """Write the feature store for ``manifest`` into ``out_dir`` and return it.

    Pixel stores (``encoder`` None) hold field ``x`` uint8 (3, R, R); latent stores hold ``moments``
    float16 (2, 8, R/8, R/8) = encoder(original), encoder(h-flipped), where ``encoder`` maps a uint8 batch
    (B, 3, R, R) to float moments (B, 8, R/8, R/8). ``flip=False`` stores the originals only, (1, 8, ...)
    (MS-COCO has no flip augmentation, §7.3); meta ``flip`` is then "none", else "stored".
    ``array_source`` serves images already in memory (CIFAR-10's python batches; manifest column
    ``index``) instead of files under ``raw_root``.
    """
    raw_root = Path(raw_root)
    if encoder is None:
        fields = {"x": ((3, resolution, resolution), "uint8"), "label": ((), "int64")}
    else:
        r = resolution // 8
        fields = {"moments": ((2 if flip else 1, 8, r, r), "float16"), "label": ((), "int64")}
        flip_meta = "stored" if flip else "none"
        if meta.get("flip", flip_meta) != flip_meta:
            raise ValueError(f"meta flip={meta['flip']!r} contradicts flip={flip} ({flip_meta!r})")
        meta = {**meta, "flip": flip_meta}
    writer = FeatureStoreWriter(out_dir, meta=meta, fields=fields, shard_size=shard_size)
    start = writer.resume_row
    if start:
        log.info("Resuming feature extraction at row %d of %d in %s", start, len(manifest), out_dir)

    def decode(i: int) -> np.ndarray:
        if array_source is not None:
            from PIL import Image

            return _crop_uint8(
                Image.fromarray(array_source[int(manifest["index"].iat[i])].transpose(1, 2, 0)),
                crop,
                resolution,
            )
        return _crop_uint8(load_rgb(raw_root / manifest["path"].iat[i]), crop, resolution)

    bar = tqdm(
        total=len(manifest), initial=start, unit="img", desc="features", disable=not progress
    )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for lo, hi in _batches(len(manifest), start, batch_size):
            images = np.stack(list(pool.map(decode, range(lo, hi))))
            labels = manifest["label"].to_numpy()[lo:hi].astype(np.int64)
            if encoder is None:
                batch = {"x": images, "label": labels}
            else:
                views = [images, images[..., ::-1]] if flip else [images]
                both = encoder(np.concatenate(views))  # [originals; flips], §7.1
                batch = {
                    "moments": np.stack(np.split(both, len(views)), axis=1).astype(np.float16),
                    "label": labels,
                }
            writer.add(batch, manifest.iloc[lo:hi].reset_index(drop=True))
            bar.update(hi - lo)
    bar.close()
    writer.close()
    return Path(out_dir)
