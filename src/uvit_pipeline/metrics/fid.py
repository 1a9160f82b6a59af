"""FID with pytorch-fid's FID-InceptionV3 (docs/reference.md §6).

Pipeline (§6): uint8 images -> [0, 1] -> bilinear resize to 299×299 (align_corners=False, no antialias)
-> 2x − 1 -> pool3 activations (2048-d, float64) -> (μ, Σ) -> Fréchet distance. pytorch-fid's
`InceptionV3(resize_input=True, normalize_input=True)` performs the resize and the 2x − 1 itself, so this
module only divides by 255. Generated samples are quantised to uint8 exactly as the original's PNG files
(`sampling.quantize`, §5.3, §8 trap 9); PNG is lossless, so scoring the uint8 arrays equals scoring the
files. `activations_from_png_dir` reads an image folder in sorted file order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image
from pytorch_fid import inception as fid_inception
from scipy import linalg
from tqdm.auto import tqdm

from uvit_pipeline._io import atomic_write

log = logging.getLogger(__name__)

FID_WEIGHTS_URL = fid_inception.FID_WEIGHTS_URL
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = 2048
# Same extension set as pytorch-fid's folder scan (§6: "sorted glob of image extensions").
IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

_BUILD_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------
# Network


def _missing_weights_message(reason: str) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME
    return (
        f"FID Inception weights are not available ({reason}). Point the catalog entry "
        f"`inception_weights` (its `source`) at a local copy of {FID_WEIGHTS_FILENAME}, "
        f"downloaded from {FID_WEIGHTS_URL} (pytorch-fid 'fid_weights' release), or place that "
        f"file at {cache} (the torch hub cache pytorch-fid uses)."
    )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"catalog entry `inception_weights`: file {path} does not exist")
    # Checkpoints are untrusted: tensors only, no pickled code.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"catalog entry `inception_weights`: {path} does not hold a state_dict")
    return state_dict


def _fetch_standard_weights(allow_download: bool) -> dict[str, torch.Tensor]:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME
    if cached.is_file():
        return _read_weights_file(cached)
    if not allow_download:
        raise RuntimeError(
            _missing_weights_message("not in the torch hub cache, downloads disabled")
        )
    try:
        # Same URL and cache as pytorch-fid, but hash-checked and loaded with weights_only=True.
        return torch.hub.load_state_dict_from_url(
            FID_WEIGHTS_URL, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as err:  # offline, proxy, HTTP error, corrupt download ...
        raise RuntimeError(_missing_weights_message(f"download failed: {err}")) from err


def load_inception(
    weights_path: str | os.PathLike | None = None,
    allow_download: bool = True,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build pytorch-fid's `InceptionV3([3])` (FID-patched blocks, 2048-d pool3) in eval mode.

    `weights_path`: local `pt_inception-2015-12-05-6726825d.pth` (catalog entry `inception_weights`);
    `None` uses pytorch-fid's torch hub cache / download.
    """
    if weights_path is not None:
        path = Path(weights_path)
        state_dict = _read_weights_file(path)
        source = str(path)
    else:
        state_dict = _fetch_standard_weights(allow_download)
        source = FID_WEIGHTS_URL

    def _provide(url: str, *args, **kwargs) -> dict[str, torch.Tensor]:
        if url != FID_WEIGHTS_URL:  # pytorch-fid changed what it downloads: do not guess
            raise RuntimeError(f"pytorch-fid requested unexpected weights {url}")
        return state_dict

    # pytorch-fid's fid_inception_v3() builds the patched architecture and then fetches the weights
    # through its module-level `load_state_dict_from_url`; we hand it the tensors read above instead,
    # so the architecture stays pytorch-fid's own and the file is loaded safely from where we say.
    with _BUILD_LOCK, mock.patch.object(fid_inception, "load_state_dict_from_url", _provide):
        try:
            model = fid_inception.InceptionV3(
                [fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]]
            )
        except RuntimeError as err:  # strict load_state_dict: missing/unexpected keys or shapes
            raise ValueError(
                f"catalog entry `inception_weights`: {source} is not an FID Inception state_dict: {err}"
            ) from err
    log.info("Loaded FID Inception weights from %s", source)
    return model.eval().requires_grad_(False).to(device)


# ----------------------------------------------------------------------------------------------
# Activations


def _as_uint8_batch(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 images (N, 3, H, W), got dtype {array.dtype}")
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3, H, W), got {array.shape}")
    return array


def _rebatch(images, batch_size: int, name: str) -> Iterator[np.ndarray]:
    """Yield uint8 (b, 3, H, W) batches of `batch_size` from an array or an iterable of arrays."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = _as_uint8_batch(images, name)
        for start in range(0, len(array), batch_size):
            yield array[start : start + batch_size]
        return
    buffer: list[np.ndarray] = []
    count = 0
    for item in images:
        chunk = _as_uint8_batch(item, name)
        buffer.append(chunk)
        count += len(chunk)
        while count >= batch_size:
            merged = np.concatenate(buffer)
            yield merged[:batch_size]
            rest = merged[batch_size:]
            buffer, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield np.concatenate(buffer)


@torch.no_grad()
def inception_activations(
    images: np.ndarray | torch.Tensor | Iterable,
    model: torch.nn.Module,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Pool3 activations (N, 2048) float64 of uint8 images (N, 3, H, W) (or an iterable of such)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.to(device).eval()
    outputs = []
    for batch in tqdm(
        _rebatch(images, batch_size, "images"), disable=not progress, desc="inception"
    ):
        x = (
            torch.from_numpy(np.ascontiguousarray(batch)).to(device).float() / 255.0
        )  # (b,3,H,W) [0,1]
        # resize to 299 and 2x − 1 happen inside InceptionV3 (resize_input / normalize_input, §6)
        feats = model(x)[0]  # (b, 2048, 1, 1)
        outputs.append(feats.flatten(1).cpu().double().numpy())
    if not outputs:
        raise ValueError("images: no images given")
    return np.concatenate(outputs)  # (N, 2048)


def list_image_files(directory: str | os.PathLike) -> list[Path]:
    """Image files directly inside `directory`, sorted by path (§6)."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory {root} does not exist")
    files = sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(
            f"image directory {root} contains no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _read_images(files: list[Path]) -> Iterator[np.ndarray]:
    for path in files:
        with Image.open(path) as img:
            yield np.asarray(img.convert("RGB")).transpose(2, 0, 1)  # (3, H, W) uint8


def activations_from_png_dir(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Activations (N, 2048) of the images in `directory` (PNG round trip of §5.3/§6)."""
    files = list_image_files(directory)
    return inception_activations(
        _read_images(files), model, batch_size=batch_size, device=device, progress=progress
    )


# ----------------------------------------------------------------------------------------------
# Statistics and distance


def statistics(acts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of activations (N, D), float64, Σ unbiased (np.cov rowvar=False, §6)."""
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ValueError(f"acts: expected (N >= 2, D) activations, got shape {acts.shape}")
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def _check_stats(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1/mu2: need equal 1-D means, got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"sigma1/sigma2: need ({d}, {d}) covariances, got {sigma1.shape} and {sigma2.shape}"
        )
    return mu1, sigma1, mu2, sigma2


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # §6: singular product -> add eps·I to both covariances and retry
        log.warning("Fréchet distance: singular covariance product; adding %g to the diagonal", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # §6: numerical error gives a small imaginary part; a large one means broken statistics
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} "
                "in sqrtm(sigma1 @ sigma2); the statistics are not valid covariances"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # Tr sqrt(Σ1 Σ2) = Σ sqrt(eig(√Σ1 Σ2 √Σ1)) for PSD Σ1, Σ2; the middle matrix is symmetric PSD,
    # so two symmetric eigendecompositions replace the (slower) Schur-based sqrtm.
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: str = "sqrtm",
) -> float:
    """||μ1−μ2||² + Tr Σ1 + Tr Σ2 − 2 Tr sqrt(Σ1Σ2) (§6).

    `method="sqrtm"` follows the reference (scipy `linalg.sqrtm`, eps·I retry, imaginary-part check);
    `method="eigh"` is a faster equivalent for symmetric PSD covariances.
    """
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# ----------------------------------------------------------------------------------------------
# Reference statistics files (.npz with keys mu, sigma — the official fid_stats format, §6)


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write `mu`, `sigma` (float64) to the `.npz` at `path` atomically."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"save_stats: need mu (D,) and sigma (D, D), got {mu.shape}, {sigma.shape}"
        )
    atomic_write(path, lambda f: np.savez(f, mu=mu, sigma=sigma))


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read (μ, Σ) float64 from an `.npz` with keys `mu`, `sigma` (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as err:  # truncated, pickled, or not numpy at all
        raise ValueError(f"FID statistics file {path} is not a readable .npz: {err}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"FID statistics file {path} is a single array, not an .npz with mu/sigma")
    with data:
        missing = {"mu", "sigma"} - set(data.files)
        if missing:
            raise ValueError(
                f"FID statistics file {path}: missing key(s) {sorted(missing)} "
                f"(has {sorted(data.files)})"
            )
        try:
            mu = np.asarray(data["mu"], dtype=np.float64)
            sigma = np.asarray(data["sigma"], dtype=np.float64)
        except (ValueError, TypeError) as err:  # pickled object arrays, non-numeric data
            raise ValueError(f"FID statistics file {path}: unreadable mu/sigma: {err}") from err
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"FID statistics file {path}: need mu (D,) and sigma (D, D), got {mu.shape}, {sigma.shape}"
        )
    return mu, sigma
