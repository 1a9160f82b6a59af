"""Streaming feature extraction: manifest rows -> decoded, cropped images -> (optionally VAE moments) ->
sharded feature store. Memory is bounded by one batch plus one shard; an interrupted run resumes at the
first missing shard of the same output directory (docs/architecture.md, "Feature store")."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .feature_store import FeatureStore
from .images import ImageError, apply_crop, decode_rgb, read_bytes, resolve_path, to_uint8_chw
from .ingest import CHECKSUM_ALGORITHM
from .store_format import REPORT_COLUMNS
from .store_writer import FeatureStoreWriter

log = logging.getLogger(__name__)


def _crop_uint8(img, crop: str, resolution: int) -> np.ndarray:
    return to_uint8_chw(apply_crop(img, crop, resolution))


def _decoder(
    raw_root: Path,
    manifest: pd.DataFrame,
    crop: str,
    resolution: int,
    array_source: np.ndarray | None,
) -> Callable[[int], np.ndarray | str]:
    """Row index -> cropped uint8 (3, R, R) image, or the reason the row is unusable.

    Files under ``raw_root`` are checked against the manifest's checksum (written at ingestion,
    ``manifest.attrs["checksum_algorithm"]``) before decoding, so a file changed since ingestion
    never enters a store under its old manifest row; ``array_source`` serves in-memory images.
    """
    algorithm = manifest.attrs.get("checksum_algorithm", CHECKSUM_ALGORITHM)
    hashlib.new(algorithm)  # an unknown algorithm fails here, once, naming itself
    sums = manifest["checksum"] if "checksum" in manifest.columns else None

    def decode(i: int) -> np.ndarray | str:
        if array_source is not None:
            img = Image.fromarray(array_source[int(manifest["index"].iat[i])].transpose(1, 2, 0))
            return _crop_uint8(img, crop, resolution)
        path = resolve_path(raw_root, manifest["path"].iat[i])
        try:
            data = read_bytes(path)
            want = None if sums is None else sums.iat[i]
            if isinstance(want, str) and hashlib.new(algorithm, data).hexdigest() != want:
                return f"checksum mismatch: file changed since ingestion ({algorithm})"
            img = decode_rgb(data, path)
        except ImageError as e:
            return e.reason
        return _crop_uint8(img, crop, resolution)

    return decode


def load_images(
    raw_root: str | Path,
    manifest: pd.DataFrame,
    *,
    crop: str,
    resolution: int,
    limit: int | None = None,
    workers: int = 2,
    array_source: np.ndarray | None = None,
    return_report: bool = False,
):
    """The first ``limit`` usable manifest images, preprocessed as for features, uint8 (N, 3, R, R).

    Rows whose file changed since ingestion (checksum) or no longer decodes are unusable. By
    default the first one raises `ImageError`; with ``return_report=True`` they are skipped and the
    result is ``(images, rows, report)``: ``rows`` = the manifest rows of the images (take labels
    from it, so skipped rows shift nothing), ``report`` = (path, reason, manifest_row).
    """
    n = len(manifest) if limit is None else min(limit, len(manifest))
    decode = _decoder(Path(raw_root), manifest, crop, resolution, array_source)
    images, kept, bad = [], [], []
    pos, chunk = 0, max(64, 8 * workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while len(images) < n and pos < len(manifest):
            hi = min(len(manifest), pos + max(n - len(images), 1), pos + chunk)
            for i, res in zip(range(pos, hi), pool.map(decode, range(pos, hi)), strict=True):
                if not isinstance(res, str):
                    images.append(res)
                    kept.append(i)
                elif return_report:
                    bad.append(_skip_record(manifest, i, res))
                else:
                    raise ImageError(
                        resolve_path(raw_root, manifest["path"].iat[i]),
                        f"{res} (load_images(return_report=True) skips and reports such rows)",
                    )
            pos = hi
    images = np.stack(images) if images else np.empty((0, 3, resolution, resolution), np.uint8)
    if not return_report:
        return images
    return images, manifest.iloc[kept], pd.DataFrame(bad, columns=[*REPORT_COLUMNS, "manifest_row"])


def _skip_record(manifest: pd.DataFrame, i: int, reason: str) -> dict:
    log.warning("skipping manifest row %d (%s): %s", i, manifest["path"].iat[i], reason)
    return {"path": manifest["path"].iat[i], "reason": reason, "manifest_row": i}


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
    progress: bool = True,
    return_report: bool = False,
    flip: bool = True,
    moments_shape: tuple[int, int, int] | None = None,
):
    """Write the feature store for ``manifest`` into ``out_dir`` and return it.

    Pixel stores (``encoder`` None) hold field ``x`` uint8 (3, R, R); latent stores hold ``moments``
    float16 (2, 2C, R/f, R/f) = encoder(original), encoder(h-flipped), where ``encoder`` maps a uint8
    batch (B, 3, R, R) to float moments (B, 2C, R/f, R/f): ``moments_shape`` = (2C, R/f, R/f), by
    default (8, R/8, R/8) for the SD KL-f8 VAE. ``flip=False`` stores the originals only, (1, 2C, ...)
    (MS-COCO has no flip augmentation, §7.3); meta ``flip`` is then "none", else "stored".
    ``array_source`` serves images already in memory (CIFAR-10's python batches; manifest column
    ``index``) instead of files under ``raw_root``.

    Rows whose file changed since ingestion (checksum mismatch) or no longer decodes are skipped and
    reported: the store's ``report.parquet`` (path, reason, manifest_row; `FeatureStore.report`)
    lists them and meta.json's ``num_skipped`` counts them. Every stored row keeps its own manifest
    row (plus ``manifest_row``, its position in ``manifest``), so skipping shifts no label. Returns
    the store path, or ``(path, report)`` with ``return_report=True``.
    """
    raw_root = Path(raw_root)
    decode = _decoder(raw_root, manifest, crop, resolution, array_source)
    if encoder is None:
        fields = {"x": ((3, resolution, resolution), "uint8"), "label": ((), "int64")}
    else:
        # (2C, R/f, R/f) for C latent channels and downsampling factor f: 4 and 8 for the SD KL-f8
        # VAE (§4.5), the default; other autoencoders give theirs (`moments_shape`).
        shape = tuple(moments_shape or (8, resolution // 8, resolution // 8))
        fields = {"moments": ((2 if flip else 1, *shape), "float16"), "label": ((), "int64")}
        flip_meta = "stored" if flip else "none"
        if meta.get("flip", flip_meta) != flip_meta:
            raise ValueError(f"meta flip={meta['flip']!r} contradicts flip={flip} ({flip_meta!r})")
        meta = {**meta, "flip": flip_meta}
    labels = manifest["label"].to_numpy().astype(np.int64)
    with FeatureStoreWriter(out_dir, meta=meta, fields=fields, shard_size=shard_size) as writer:
        last = None if writer.complete else writer.last_committed("manifest_row")
        start = len(manifest) if writer.complete else (0 if last is None else int(last) + 1)
        if 0 < start < len(manifest):
            log.info(
                "Resuming feature extraction at row %d of %d in %s", start, len(manifest), out_dir
            )
        bar = tqdm(
            total=len(manifest), initial=start, unit="img", desc="features", disable=not progress
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            lo = start
            while lo < len(manifest):
                # A batch never crosses a shard boundary, so each committed shard also commits the
                # skip records of its rows and `last_committed` is an exact resume point.
                hi = min(len(manifest), lo + min(batch_size, writer.space))
                results = dict(zip(range(lo, hi), pool.map(decode, range(lo, hi)), strict=True))
                good = [i for i, res in results.items() if not isinstance(res, str)]
                bad = [i for i, res in results.items() if isinstance(res, str)]
                writer.skip([_skip_record(manifest, i, results[i]) for i in bad])
                if good:
                    images = np.stack([results[i] for i in good])
                    rows = manifest.iloc[good].reset_index(drop=True)
                    rows["manifest_row"] = np.asarray(good, dtype=np.int64)
                    writer.add(_batch(images, labels[good], encoder, flip), rows)
                bar.update(hi - lo)
                lo = hi
        bar.close()
    if return_report:
        return Path(out_dir), FeatureStore(out_dir).report
    return Path(out_dir)


def _batch(images: np.ndarray, labels: np.ndarray, encoder, flip: bool) -> dict:
    if encoder is None:
        return {"x": images, "label": labels}
    views = [images, images[..., ::-1]] if flip else [images]  # [originals; flips], §7.1
    moments = encoder(np.concatenate(views))
    return {
        "moments": np.stack(np.split(moments, len(views)), axis=1).astype(np.float16),
        "label": labels,
    }
