"""Cases 1-2 of docs/reliability.md: high-bit-depth, truncated and oversized images."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from uvit_pipeline.data.images import ImageError, decode_rgb
from uvit_pipeline.data.ingest import scan_imagenet_folder

from .conftest import jpeg_bytes, png_bytes


def _png16_grey(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, "PNG")  # PIL mode I;16
    return buf.getvalue()


def test_16bit_grey_png_is_scaled_to_8bit_not_clipped():
    values = np.array([[0, 257 * 64, 257 * 128, 65535]] * 4)
    img = decode_rgb(_png16_grey(values))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(arr[0, :, 0], [0, 64, 128, 255])
    np.testing.assert_array_equal(arr[..., 0], arr[..., 2])  # grey stays grey


def test_16bit_big_endian_and_rgb_pngs_are_8bit():
    mid = np.full((4, 4), 30000, dtype=np.uint16)
    be = Image.frombytes("I;16B", (4, 4), mid.astype(">u2").tobytes())
    buf = io.BytesIO()
    be.save(buf, "PNG")
    assert np.asarray(decode_rgb(buf.getvalue()))[0, 0, 0] == round(30000 / 257)
    rows = [np.full((4, 3), 30000, dtype=">u2").tobytes() for _ in range(4)]  # 16-bit RGB
    assert np.asarray(decode_rgb(png_bytes(4, 4, rows, bit_depth=16)))[0, 0, 0] == 117


def test_floating_point_image_is_reported():
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(buf, "TIFF")  # PIL mode F
    with pytest.raises(ImageError, match="mode F"):
        decode_rgb(buf.getvalue(), "f.tif")


def test_png_holding_fewer_rows_than_its_header_is_truncated():
    rows = [bytes(300 * 3) for _ in range(4)]  # header says 300 rows, the stream holds 4
    with pytest.raises(ImageError, match="truncated image"):
        decode_rgb(png_bytes(300, 300, rows), "short.png")
    full = [bytes(30 * 3) for _ in range(30)]
    assert decode_rgb(png_bytes(30, 30, full)).size == (30, 30)  # a complete one still decodes


def test_oversized_header_is_reported_before_decoding_without_warning():
    rows = [bytes(12000 * 3) for _ in range(4)]
    data = png_bytes(12000, 12000, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would raise here
        with pytest.raises(ImageError, match=r"image too large: 12000x12000 > 89478485 pixels"):
            decode_rgb(data, "bomb.png")
    small = png_bytes(3000, 3000, [bytes(3000 * 3) for _ in range(4)])
    with pytest.raises(ImageError, match=r"image too large: 3000x3000 > 1000000"):
        decode_rgb(small, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="truncated image"):
        decode_rgb(small, max_pixels=None)


def test_truncation_is_detected_even_when_other_code_allows_truncated_images(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = jpeg_bytes(64, 64)
    with pytest.raises(ImageError, match="truncated image"):
        decode_rgb(data[: len(data) // 2], "cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_ingestion_reports_and_skips_bad_images(tmp_path):
    d = tmp_path / "train" / "n00"
    d.mkdir(parents=True)
    (d / "good.jpg").write_bytes(jpeg_bytes())
    (d / "grey16.png").write_bytes(_png16_grey(np.full((8, 8), 40000)))
    (d / "short.png").write_bytes(png_bytes(300, 300, [bytes(900)] * 4))
    (d / "huge.png").write_bytes(png_bytes(2000, 2000, [bytes(6000)] * 4))
    manifest, report = scan_imagenet_folder(tmp_path, workers=2, progress=False, max_pixels=10**6)
    assert sorted(manifest["path"]) == ["train/n00/good.jpg", "train/n00/grey16.png"]
    assert dict(zip(report["path"], report["reason"], strict=True)) == {
        "train/n00/short.png": "truncated image",
        "train/n00/huge.png": "image too large: 2000x2000 > 1000000 pixels",
    }
