"""Crop rules (§7) and image decoding/validation."""

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image

from uvit_pipeline.data import (
    ImageError,
    celeba_crop,
    center_crop_adm,
    coco_crop,
    hflip,
    hflip_chw,
    load_rgb,
    to_uint8_chw,
)

from .conftest import image_bytes


def _random_image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _adm_reference(img, s):
    """Straight re-computation of §7.1 (via numpy slicing for the crop)."""
    w, h = img.size
    while w >= 2 * s and h >= 2 * s:
        img = img.resize((w // 2, h // 2), Image.BOX)
        w, h = img.size
    k = s / min(w, h)
    img = img.resize((round(w * k), round(h * k)), Image.BICUBIC)
    arr = np.array(img)
    y0, x0 = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
    return arr[y0 : y0 + s, x0 : x0 + s]


@pytest.mark.parametrize(
    "w,h,s", [(300, 200, 32), (100, 37, 16), (64, 64, 32), (33, 90, 16), (7, 5, 8), (517, 131, 32)]
)
def test_center_crop_adm_matches_reference(w, h, s):
    img = _random_image(w, h)
    out = center_crop_adm(img, s)
    assert out.size == (s, s)
    np.testing.assert_array_equal(np.array(out), _adm_reference(img, s))


def test_center_crop_adm_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        center_crop_adm(_random_image(8, 8), 0)


def test_celeba_crop_box_and_resize():
    img = _random_image(178, 218)
    np.testing.assert_array_equal(
        np.array(celeba_crop(img, 128)), np.array(img)[57 : 57 + 128, 25 : 25 + 128]
    )
    expected = T.Resize(64)(img.crop((25, 57, 25 + 128, 57 + 128)))  # torchvision default bilinear
    out = celeba_crop(img)
    assert out.size == (64, 64)
    np.testing.assert_array_equal(np.array(out), np.array(expected))
    with pytest.raises(ValueError, match="too small"):
        celeba_crop(_random_image(100, 100))


def test_coco_crop_centre_square_lanczos():
    img = _random_image(41, 20)  # c = 20, cols (41-20)//2 = 10 .. 30
    expected = img.crop((10, 0, 30, 20)).resize((16, 16), Image.LANCZOS)
    out = coco_crop(img, 16)
    np.testing.assert_array_equal(np.array(out), np.array(expected))
    tall = _random_image(10, 15)  # rows 2 .. 12
    np.testing.assert_array_equal(
        np.array(coco_crop(tall, 10)), np.array(tall)[2:12]
    )  # same-size LANCZOS is the identity


def test_to_uint8_chw_and_flip():
    img = _random_image(5, 3)
    arr = to_uint8_chw(img)
    assert arr.shape == (3, 3, 5) and arr.dtype == np.uint8 and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr.transpose(1, 2, 0), np.array(img))
    np.testing.assert_array_equal(hflip_chw(arr), to_uint8_chw(hflip(img)))
    np.testing.assert_array_equal(hflip_chw(arr)[..., 0], arr[..., -1])


def test_load_rgb_converts_modes(tmp_path):
    p = tmp_path / "grey.png"
    Image.new("L", (6, 4), 128).save(p)
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (6, 4)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "zero-byte file"),
        ("text.jpg", b"this is not an image\n" * 4, "not an image"),
        ("cut.jpg", image_bytes(64, 48)[:400], "truncated image"),
        ("cut.png", image_bytes(64, 48, "PNG")[:-200], "truncated image"),
    ],
)
def test_load_rgb_reasons(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageError) as err:
        load_rgb(p)
    assert err.value.reason == reason
    assert str(p) in str(err.value)


def test_load_rgb_unreadable(tmp_path):
    with pytest.raises(ImageError) as err:
        load_rgb(tmp_path / "missing.jpg")
    assert err.value.reason.startswith("unreadable: ")
