"""Image decoding/validation and the paper's crop rules (docs/reference.md §7)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# CelebA crop box of the official config (§7.2): top 57, left 25, 128x128 (centre x=89, y=121).
CELEBA_TOP, CELEBA_LEFT, CELEBA_CROP = 57, 25, 128


class ImageError(Exception):
    """A file that cannot be used as an image; `reason` is a short report string."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole file, turning OS errors into `ImageError("unreadable: ...")`."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(path, f"unreadable: {e.strerror or e}") from e


def decode_rgb(data: bytes, path: str | os.PathLike = "<bytes>") -> Image.Image:
    """Fully decode encoded image bytes and convert to RGB; raise `ImageError` if unusable."""
    if len(data) == 0:
        raise ImageError(path, "zero-byte file")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # full decode: Image.open alone only parses the header
        return img.convert("RGB")  # ADM/§7.1: PIL load -> RGB
    except UnidentifiedImageError as e:
        raise ImageError(path, "not an image") from e
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image too large: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncation as "image file is truncated" or "Truncated File Read".
        if "truncat" in str(e).lower():
            raise ImageError(path, "truncated image") from e
        raise ImageError(path, f"corrupt image: {e}") from e


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Load `path` as a fully decoded RGB PIL image (raises `ImageError` with a reason)."""
    return decode_rgb(read_bytes(path), path)


def center_crop_adm(img: Image.Image, size: int) -> Image.Image:
    """ADM centre crop to `size` x `size` (§7.1): BOX halving, BICUBIC resize, centre crop."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    # Halve with BOX while the short side is at least twice the target (anti-aliasing, §7.1).
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BOX)
    scale = size / min(img.size)
    # Python's round (banker's rounding), exactly as §7.1.
    img = img.resize((round(img.width * scale), round(img.height * scale)), resample=Image.BICUBIC)
    top, left = (img.height - size) // 2, (img.width - size) // 2
    return img.crop((left, top, left + size, top + size))


def celeba_crop(img: Image.Image, size: int = 64) -> Image.Image:
    """CelebA crop (§7.2): 128x128 box at top 57, left 25, then torchvision Resize(size) bilinear."""
    need_w, need_h = CELEBA_LEFT + CELEBA_CROP, CELEBA_TOP + CELEBA_CROP
    if img.width < need_w or img.height < need_h:
        raise ValueError(
            f"img of size {img.size} is too small for the CelebA crop box (needs >= {need_w}x{need_h})"
        )
    # Imported here: only the CelebA crop needs torchvision, so `uvit_pipeline.data` imports without it.
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    img = TF.crop(img, CELEBA_TOP, CELEBA_LEFT, CELEBA_CROP, CELEBA_CROP)
    return TF.resize(img, size, interpolation=InterpolationMode.BILINEAR)


def coco_crop(img: Image.Image, size: int) -> Image.Image:
    """MS-COCO crop (§7.3): centred square of side min(H, W), then LANCZOS resize to `size`."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    c = min(img.size)
    top, left = (img.height - c) // 2, (img.width - c) // 2
    img = img.crop((left, top, left + c, top + c))
    return img.resize((size, size), resample=Image.LANCZOS)


# Crop rule names recorded as the feature store's `crop` meta field.
CROP_RULES: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "adm_center": center_crop_adm,
    "celeba": celeba_crop,
    "coco_center_lanczos": coco_crop,
}


def apply_crop(img: Image.Image, rule: str, size: int) -> Image.Image:
    """Apply the crop rule named `rule` (a key of `CROP_RULES`)."""
    if rule not in CROP_RULES:
        raise ValueError(f"unknown crop rule {rule!r}; known: {sorted(CROP_RULES)}")
    return CROP_RULES[rule](img, size)


def to_uint8_chw(img: Image.Image) -> np.ndarray:
    """PIL image -> contiguous uint8 array (3, H, W)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def hflip(img: Image.Image) -> Image.Image:
    """Horizontal flip of a PIL image."""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def hflip_chw(arr: np.ndarray) -> np.ndarray:
    """Horizontal flip of a (..., H, W) array (copy, contiguous)."""
    return np.ascontiguousarray(arr[..., ::-1])


def resolve_path(root: str | os.PathLike, rel: str) -> Path:
    """Join a manifest `path` (posix, relative to the ingest root) onto `root`."""
    return Path(root, *rel.split("/"))
