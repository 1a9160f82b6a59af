"""Streaming feature extraction: manifest rows -> decoded, cropped images -> (optionally VAE moments) ->
sharded feature store, data-parallel over the processes of a launch (`launch.run_parallel`).

The manifest is cut into blocks of `shard_size` rows, a cut that does not depend on the number of
processes: rank r of W computes blocks r, r+W, ... and writes each as one file (`blocks/` in the
store folder, atomically, skipping the files that exist); the caller then merges the blocks in order
into the store, deleting each once its rows are committed. Memory is bounded by one block plus one
shard; any number of processes writes the same store, and an interrupted run (any process killed)
resumes from the committed shards and the finished blocks (docs/architecture.md, "Feature store")."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .._io import atomic_write
from ..launch import LaunchSpec, Part, run_parallel
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


# -- data-parallel extraction ------------------------------------------------------------------
BLOCKS = "blocks"  # the block files of an extraction in progress, inside the store folder
ENTRY = "uvit_pipeline.data.extract:extract_blocks"  # what every process of the launch runs
# torch threads of each CPU process: float results of convolutions and matmuls change with the
# thread count, so every process computes with the same one, whatever the number of processes
# (torchrun's own default for several processes on one machine is 1 as well).
CPU_THREADS = 1


@contextlib.contextmanager
def cpu_threads(device: str):
    """Inside: torch computes with `CPU_THREADS` threads when `device` is the CPU (restored after)."""
    if not str(device).startswith("cpu"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def latent_encoder(autoencoder: str, device: str, sha256: str | None = None):
    """uint8 (B,3,R,R) -> moments (B,2C,R/f,R/f) float32 with the autoencoder of parameter value
    `autoencoder`, loaded on `device` (C latent channels, downsampling f: (B,8,R/8,R/8) for the SD
    KL-f8 VAE); `sha256`: the weights the store records, checked after loading."""
    import torch

    from ..encoders import autoencoder as ae

    dev = torch.device(device)
    vae = ae.load_autoencoder_spec(autoencoder, dev)
    if sha256 is not None and ae.state_dict_sha256(vae) != sha256:
        raise ValueError(
            f"autoencoder {autoencoder!r} loaded on {device} has other weights than the store "
            f"records (sha256 {sha256}): did its files change during the extraction?"
        )

    @torch.no_grad()
    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(dev).float() / 127.5 - 1.0
        return ae.encode_moments(vae, x).float().cpu().numpy()

    return encode


def _block_file(blocks: Path, k: int) -> Path:
    return blocks / f"block-{k:06d}.npz"


def save_block(path: Path, arrays: dict) -> None:
    """One block file of a parallel stage (named arrays), written atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_block(path: Path) -> dict:
    """The arrays of a block file; a missing or unreadable file is an error naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: a block is missing after every process of the stage finished"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is unreadable ({e}): delete it to compute it again") from e


def _write_blocks(
    manifest: pd.DataFrame,
    blocks: Path,
    todo: list[int],
    part: Part,
    *,
    decode: Callable[[int], np.ndarray | str],
    encoder,
    flip: bool,
    block_size: int,
    batch_size: int,
    workers: int,
    progress: bool,
) -> None:
    """This process's share of `todo` (blocks of `block_size` manifest rows): each block's good
    rows (`rows`), their features (`x` or `moments`) and its unusable rows (`bad_rows`,
    `bad_reasons`) as one file, written atomically; blocks whose file exists are skipped. A block
    is encoded in batches of `batch_size` of its own rows, so its values do not depend on who
    computes it."""
    n = len(manifest)
    mine = [todo[i] for i in part.blocks(len(todo))]
    field = "x" if encoder is None else "moments"
    desc = "features" if part.world == 1 else f"features (rank 0 of {part.world})"
    bar = tqdm(
        total=sum(min(n, (k + 1) * block_size) - k * block_size for k in mine),
        unit="img",
        desc=desc,
        disable=not (progress and part.is_main),
    )
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k in mine:
            lo, hi = k * block_size, min(n, (k + 1) * block_size)
            path = _block_file(blocks, k)
            if path.is_file():
                bar.update(hi - lo)
                continue
            rows, bad, reasons, values = [], [], [], []
            for b in range(lo, hi, batch_size):
                e = min(hi, b + batch_size)
                results = list(pool.map(decode, range(b, e)))
                good = []
                for i, res in enumerate(results, start=b):
                    if isinstance(res, str):
                        _skip_record(manifest, i, res)  # logs it
                        bad.append(i)
                        reasons.append(res)
                    else:
                        good.append(i)
                if good:
                    images = np.stack([results[i - b] for i in good])
                    values.append(_views(images, encoder, flip))
                    rows.extend(good)
                bar.update(e - b)
            save_block(
                path,
                {
                    "rows": np.asarray(rows, dtype=np.int64),
                    field: np.concatenate(values) if values else np.zeros(0),
                    "bad_rows": np.asarray(bad, dtype=np.int64),
                    "bad_reasons": np.asarray(reasons, dtype=str),
                },
            )
    bar.close()


def extract_blocks(payload: dict, part: Part) -> None:
    """Entry of `launch.run_parallel`: this process's blocks of an extraction (`extract_features`
    writes `payload`), with its own autoencoder on its own device (`part.device`)."""
    p = payload
    manifest = pd.read_parquet(p["manifest"])
    manifest.attrs["checksum_algorithm"] = p["checksum_algorithm"]
    arrays = None
    if p["array_source"] is not None:
        from .sources import array_source

        arrays = array_source(
            p["array_source"]["source"], p["raw_root"], p["array_source"]["split"]
        )
    decode = _decoder(Path(p["raw_root"]), manifest, p["crop"], p["resolution"], arrays)
    with cpu_threads(part.device):
        encoder = None
        if p["autoencoder"] is not None:
            encoder = latent_encoder(p["autoencoder"], part.device, p["autoencoder_sha256"])
        _write_blocks(
            manifest,
            Path(p["blocks"]),
            p["todo"],
            part,
            decode=decode,
            encoder=encoder,
            flip=p["flip"],
            block_size=p["block_size"],
            batch_size=p["batch_size"],
            workers=p["workers"],
            progress=p["progress"],
        )


def _launch_blocks(
    raw_root: Path, manifest: pd.DataFrame, blocks: Path, todo: list[int], settings: dict,
    launch: LaunchSpec, device: str,
) -> None:  # fmt: skip
    """Every process of `launch` writes its share of `todo` (`extract_blocks`); the manifest's
    path, checksum and index columns go to it as a parquet file beside the blocks."""
    blocks = blocks.absolute()  # the same on every machine of a shared filesystem
    columns = [c for c in ("path", "checksum", "index") if c in manifest.columns]
    table = manifest[columns].reset_index(drop=True)
    listed = atomic_write(blocks / "manifest.parquet", lambda f: table.to_parquet(f, index=False))
    payload = {
        "raw_root": str(Path(raw_root).absolute()),
        "manifest": str(listed),
        "checksum_algorithm": manifest.attrs.get("checksum_algorithm", CHECKSUM_ALGORITHM),
        "blocks": str(blocks),
        "todo": todo,
        **settings,
    }
    run_parallel(launch, ENTRY, payload, work_dir=blocks, device=device, what="feature extraction")


def _merge_blocks(
    writer: FeatureStoreWriter,
    manifest: pd.DataFrame,
    blocks: Path,
    start: int,
    block_size: int,
    field: str,
) -> None:
    """Feed the blocks into `writer` in manifest order from row `start` on; a block file is
    deleted once every row up to its end is committed in a shard.

    Good rows go in runs of at most `writer.space`, and a skipped row is recorded only after the
    good rows before it: the shard a run commits then carries exactly the skip records of rows
    before its last row, so `last_committed("manifest_row")` stays an exact resume point."""
    n = len(manifest)
    labels = manifest["label"].to_numpy().astype(np.int64)
    fed: list[int] = []  # blocks fed whose file is still there

    def drop(through: int) -> None:
        while fed and min(n, (fed[0] + 1) * block_size) - 1 <= through:
            _block_file(blocks, fed.pop(0)).unlink(missing_ok=True)

    for k in range(start // block_size, -(-n // block_size)):
        data = load_block(_block_file(blocks, k))
        keep, keep_bad = data["rows"] >= start, data["bad_rows"] >= start
        rows, values = data["rows"][keep], data[field][keep]
        bad, reasons = data["bad_rows"][keep_bad], data["bad_reasons"][keep_bad]
        fed.append(k)
        g = b = 0
        while g < len(rows) or b < len(bad):
            take = rows[g : g + writer.space]
            limit = take[-1] if len(take) else n
            j = b + int(np.searchsorted(bad[b:], limit))
            writer.skip(
                [
                    {"path": manifest["path"].iat[i], "reason": str(r), "manifest_row": int(i)}
                    for i, r in zip(bad[b:j].tolist(), reasons[b:j], strict=True)
                ]
            )
            b = j
            if not len(take):
                continue
            batch_rows = manifest.iloc[take].reset_index(drop=True)
            batch_rows["manifest_row"] = take.astype(np.int64)
            committed = writer.resume_row
            writer.add({field: values[g : g + len(take)], "label": labels[take]}, batch_rows)
            g += len(take)
            if writer.resume_row != committed:  # a shard was committed, through row take[-1]
                drop(int(take[-1]))


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
    autoencoder: str | None = None,
    array_from: tuple[str, str] | None = None,
    launch: LaunchSpec | None = None,
    device: str = "cpu",
):
    """Write the feature store for ``manifest`` into ``out_dir`` and return it.

    Pixel stores (no encoder) hold field ``x`` uint8 (3, R, R); latent stores hold ``moments``
    float16 (2, 2C, R/f, R/f) = encoder(original), encoder(h-flipped), where the encoder maps a
    uint8 batch (B, 3, R, R) to float moments (B, 2C, R/f, R/f): ``moments_shape`` = (2C, R/f, R/f),
    by default (8, R/8, R/8) for the SD KL-f8 VAE. ``flip=False`` stores the originals only,
    (1, 2C, ...) (MS-COCO has no flip augmentation, §7.3); meta ``flip`` is then "none", else
    "stored".

    Where the work runs: with ``encoder`` (a function) or ``array_source`` (images in memory,
    manifest column ``index``) in this process. Otherwise on every process of ``launch`` (default:
    one process, this one; `launch.run_parallel`): ``autoencoder`` is the autoencoder's parameter
    value, which each process loads on its own device (``device``: "cpu", or one GPU each), and
    ``array_from`` = (source, split) names an in-memory source (CIFAR-10's python batches) each
    process reads itself. The manifest is cut into blocks of ``shard_size`` rows whatever the
    number of processes, each encoded in batches of ``batch_size`` of its rows and merged here in
    order, so any number of processes writes the same store, byte for byte (on the CPU each
    process computes with `CPU_THREADS` threads).

    Rows whose file changed since ingestion (checksum mismatch) or no longer decodes are skipped and
    reported: the store's ``report.parquet`` (path, reason, manifest_row; `FeatureStore.report`)
    lists them and meta.json's ``num_skipped`` counts them. Every stored row keeps its own manifest
    row (plus ``manifest_row``, its position in ``manifest``), so skipping shifts no label. An
    interrupted run (any process killed) resumes from the committed shards and the finished
    blocks. Returns the store path, or ``(path, report)`` with ``return_report=True``.
    """
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    if encoder is not None and autoencoder is not None:
        raise ValueError("give the encoder as a function (encoder) or a parameter (autoencoder)")
    local = encoder is not None or array_source is not None
    launch = launch or LaunchSpec()
    if local and (launch.num_processes > 1 or launch.num_machines > 1):
        raise ValueError(
            "an encoder function or in-memory array_source runs in this process only: pass "
            "autoencoder= / array_from= to spread the extraction over the processes of a launch"
        )
    latent = encoder is not None or autoencoder is not None
    if not latent:
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
    field = "moments" if latent else "x"
    blocks = out_dir / BLOCKS
    with FeatureStoreWriter(out_dir, meta=meta, fields=fields, shard_size=shard_size) as writer:
        if not writer.complete:
            last = writer.last_committed("manifest_row")
            start = 0 if last is None else int(last) + 1
            if 0 < start < len(manifest):
                log.info(
                    "Resuming feature extraction at row %d of %d in %s",
                    start, len(manifest), out_dir,
                )  # fmt: skip
            todo = list(range(start // shard_size, -(-len(manifest) // shard_size)))
            blocks.mkdir(parents=True, exist_ok=True)
            if local:
                decode = _decoder(raw_root, manifest, crop, resolution, array_source)
                _write_blocks(
                    manifest, blocks, todo, Part(0, 1, device), decode=decode, encoder=encoder,
                    flip=flip, block_size=shard_size, batch_size=batch_size, workers=workers,
                    progress=progress,
                )  # fmt: skip
            elif todo:
                settings = {
                    "crop": crop, "resolution": resolution, "block_size": shard_size,
                    "batch_size": batch_size, "workers": workers, "flip": flip,
                    "progress": progress,
                    "autoencoder": None if autoencoder is None else str(autoencoder),
                    "autoencoder_sha256": meta.get("encoder_sha256"),
                    "array_source": None if array_from is None
                    else {"source": array_from[0], "split": array_from[1]},
                }  # fmt: skip
                _launch_blocks(raw_root, manifest, blocks, todo, settings, launch, device)
            _merge_blocks(writer, manifest, blocks, start, shard_size, field)
    shutil.rmtree(blocks, ignore_errors=True)  # every block is in the store (or was, before)
    if return_report:
        return out_dir, FeatureStore(out_dir).report
    return out_dir


def _views(images: np.ndarray, encoder, flip: bool) -> np.ndarray:
    """The stored field of a batch: the images themselves, or the fp16 moments of their views."""
    if encoder is None:
        return images
    views = [images, images[..., ::-1]] if flip else [images]  # [originals; flips], §7.1
    moments = encoder(np.concatenate(views))
    return np.stack(np.split(moments, len(views)), axis=1).astype(np.float16)
