"""Image decoding/validation and the paper's crop rules (docs/reference.md §7)."""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .._io import InputRefused, read_regular_file

# CelebA crop box of the official config (§7.2): top 57, left 25, 128x128 (centre x=89, y=121).
CELEBA_TOP, CELEBA_LEFT, CELEBA_CROP = 57, 25, 128


class ImageError(Exception):
    """A file that cannot be used as an image; `reason` is a short report string."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# The largest image PIL opens without a decompression-bomb warning; `max_pixels` of the decoders.
# ImageNet's largest photos hold ~30 M pixels, COCO's < 0.5 M; 89.5 M RGB pixels decode to 268 MB.
DEFAULT_MAX_PIXELS = 89_478_485


def max_file_bytes(max_pixels: int | None) -> int | None:
    """The largest file read as an image of at most `max_pixels` pixels: 8 bytes per pixel (an
    uncompressed 16-bit RGBA image) plus 16 MiB of metadata; None when pixels are not limited."""
    return None if max_pixels is None else 8 * int(max_pixels) + (16 << 20)


def read_bytes(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """Read a whole image file, turning OS errors into `ImageError("unreadable: ...")`. Only regular
    files are opened (a FIFO, socket or device, even behind a symlink, is `not a regular file`),
    and a file larger than `max_file_bytes(max_pixels)` is `file too large`, checked on its size
    before reading (`max_pixels=None`: no limit)."""
    try:
        return read_regular_file(path, max_file_bytes(max_pixels))
    except InputRefused as e:
        raise ImageError(path, e.reason) from None
    except OSError as e:
        raise ImageError(path, f"unreadable: {e.strerror or e}") from e


_pil_lock = threading.Lock()
_pil_users = 0
_pil_saved: tuple = ()


@contextmanager
def strict_pil():
    """PIL settings for validating decodes, while any decode in this process runs.

    `ImageFile.LOAD_TRUNCATED_IMAGES` is forced off (other code may have switched it on, which
    would turn a truncated file into a silently grey/black image), and PIL's own pixel limit is
    lifted because `decode_rgb` applies `max_pixels` itself, as a report instead of a warning.
    Reference-counted, so overlapping decodes in threads restore the caller's values once.
    """
    global _pil_users, _pil_saved
    with _pil_lock:
        if _pil_users == 0:
            _pil_saved = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, None
        _pil_users += 1
    try:
        yield
    finally:
        with _pil_lock:
            _pil_users -= 1
            if _pil_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = _pil_saved


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def _png_missing_rows(data: bytes) -> bool:
    """True when a PNG's image data inflates to fewer bytes than its header's size needs.

    PIL stops quietly when the compressed stream ends early (a well-formed stream holding only the
    first rows) and leaves the remaining rows black, so this is checked here.
    """
    pos, need, inflated = 8, 0, 0
    z = zlib.decompressobj()
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            bits = depth * _PNG_CHANNELS.get(colour, 1)
            passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
            for x0, y0, dx, dy in passes:
                pw, ph = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
                need += ph * (1 + -(-pw * bits // 8)) if pw else 0
        elif ctype == b"IDAT":
            while body and inflated < need:  # bounded chunks: never hold the whole image twice
                inflated += len(z.decompress(body, 1 << 20))
                body = z.unconsumed_tail
        elif ctype == b"IEND":
            break
    return inflated < need


def _to_rgb(img: Image.Image, path) -> Image.Image:
    """RGB with 8 bits per channel; high-bit-depth grey is scaled, not clipped."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit PNG grey (PIL mode I;16*, or I in older PIL): convert("RGB") would clip every
        # value above 255 to white; scale 0..65535 to 0..255 instead (round(v / 257)).
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise ImageError(path, "unsupported image mode F (floating-point pixels)")
    return img.convert("RGB")  # ADM/§7.1: PIL load -> RGB (16-bit RGB(A) PNGs load as 8 bit)


def decode_rgb(
    data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Fully decode encoded image bytes and convert to 8-bit RGB; raise `ImageError` if unusable.

    Rejected: empty, unidentified, corrupt or truncated files, and images of more than
    `max_pixels` pixels (None: no limit), checked on the header before decoding.
    """
    if len(data) == 0:
        raise ImageError(path, "zero-byte file")
    try:
        with strict_pil():
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(path, f"image too large: {w}x{h} > {max_pixels} pixels")
            img.load()  # full decode: Image.open alone only parses the header
            if img.format == "PNG" and _png_missing_rows(data):
                raise ImageError(path, "truncated image")
            return _to_rgb(img, path)
    except UnidentifiedImageError as e:
        raise ImageError(path, "not an image") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as e:
        # PIL reports truncation as "image file is truncated" or "Truncated File Read".
        if "truncat" in str(e).lower():
            raise ImageError(path, "truncated image") from e
        raise ImageError(path, f"corrupt image: {e}") from e


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load `path` as a fully decoded RGB PIL image (raises `ImageError` with a reason)."""
    return decode_rgb(read_bytes(path, max_pixels), path, max_pixels)


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


def _no_crop(img: Image.Image, size: int) -> Image.Image:
    """Images used as distributed (CIFAR-10 32×32, §7.2): only check the size."""
    if img.size != (size, size):
        raise ValueError(
            f"image is {img.size[0]}x{img.size[1]}, expected {size}x{size} with features.crop=none"
        )
    return img


# The one registry of crop rules (`features.crop`; recorded as the feature store's `crop` meta field).
CROPS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "adm": center_crop_adm,  # ImageNet, §7.1
    "celeba": celeba_crop,  # §7.2
    "coco": coco_crop,  # §7.3
    "none": _no_crop,  # CIFAR-10, §7.2
}


def apply_crop(img: Image.Image, rule: str, size: int) -> Image.Image:
    """Apply the crop rule named `rule` (a key of `CROPS`)."""
    if rule not in CROPS:
        raise ValueError(f"unknown crop rule {rule!r}; known: {sorted(CROPS)}")
    return CROPS[rule](img, size)


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
