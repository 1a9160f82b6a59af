"""Bounded work for every input (docs/reliability.md, case 24): only regular files are read from raw
trees, reads are capped before they start, row labels cost linear time and a bounded strip. Each
test finishes in seconds (the old code hung or exhausted memory on these inputs)."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from tests.reliability.conftest import jpeg_bytes
from uvit_pipeline._io import InputRefused, read_regular_file
from uvit_pipeline.data.coco import _load_json
from uvit_pipeline.data.images import ImageError, max_file_bytes, read_bytes
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.sampling.grid import MAX_LABEL_LINES, _font, _wrap, labelled_grid


def test_fifos_sockets_and_devices_are_reported_and_skipped(tmp_path):
    d = tmp_path / "train" / "n00"
    d.mkdir(parents=True)
    (d / "good.jpg").write_bytes(jpeg_bytes())
    os.mkfifo(d / "fifo.png")  # opening it for reading would wait for a writer for ever
    (d / "zz.png").symlink_to("/dev/zero")  # reading it would never end
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(d / "sock.jpg"))
    try:
        start = time.monotonic()
        manifest, report = scan_imagenet_folder(tmp_path, workers=2, progress=False)
        assert time.monotonic() - start < 30
    finally:
        server.close()
    assert list(manifest["path"]) == ["train/n00/good.jpg"]
    assert dict(zip(report["path"], report["reason"], strict=True)) == {
        "train/n00/fifo.png": "not a regular file: a named pipe (FIFO)",
        "train/n00/sock.jpg": "not a regular file: a socket",
        "train/n00/zz.png": "not a regular file: a character device",
    }


def test_a_file_above_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse: reading it would take the memory of the machine
    with pytest.raises(ImageError, match="file too large: 8589934592 bytes >"):
        read_bytes(huge, max_pixels=10**6)
    assert max_file_bytes(10**6) == 8 * 10**6 + (16 << 20)
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg_bytes())
    assert read_bytes(small, max_pixels=10**6) == small.read_bytes()
    with pytest.raises(InputRefused, match="file too large"):
        read_regular_file(small, max_bytes=10)


def test_coco_annotations_must_be_a_regular_file(tmp_path):
    from uvit_pipeline.data.coco import CocoAnnotationError

    os.mkfifo(tmp_path / "captions_train2014.json")
    with pytest.raises(CocoAnnotationError, match="named pipe"):
        _load_json(tmp_path / "captions_train2014.json", "annotations/captions_train2014.json")


@pytest.mark.parametrize("text", ["x" * 100_000, "word " * 20_000, "a" * 3000])
def test_label_wrapping_is_fast_and_bounded(text):
    font = _font(12)
    start = time.monotonic()
    lines = _wrap(text, font, 120)
    assert time.monotonic() - start < 1.0  # 3,000 characters without a space took minutes
    assert 1 <= len(lines) <= MAX_LABEL_LINES
    assert lines[-1].endswith("…")
    assert all(font.getlength(line) <= 120 for line in lines)


def test_a_huge_prompt_gives_a_grid_of_bounded_size():
    images = np.zeros((4, 3, 8, 8), np.uint8)
    short = labelled_grid(images, 2, ["a cat", "a dog"], scale=4)
    long = labelled_grid(images, 2, ["a cat", "y" * 100_000], scale=4)
    assert long.width == short.width
    assert long.height <= short.height + (MAX_LABEL_LINES - 1) * 30


def test_short_labels_are_unchanged():
    assert _wrap("a photo of a cat", _font(12), 400) == ["a photo of a cat"]


def test_coco_annotations_may_start_with_a_bom(tmp_path):
    """Editors on Windows save UTF-8 with a BOM; prompt files accept it, so do COCO captions."""
    ann = '{"images": [], "annotations": []}'
    (tmp_path / "captions.json").write_bytes(b"\xef\xbb\xbf" + ann.encode())
    assert _load_json(tmp_path / "captions.json", "captions.json") == {
        "images": [],
        "annotations": [],
    }


def test_celeba_reports_a_fifo_and_a_device(tmp_path):
    from uvit_pipeline.data.ingest import scan_celeba

    images = tmp_path / "celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    (images / "000001.jpg").write_bytes(jpeg_bytes(178, 218))
    os.mkfifo(images / "000002.jpg")
    (images / "000003.jpg").symlink_to("/dev/zero")
    listing = "000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n"
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(listing)
    manifest, report = scan_celeba(tmp_path, workers=1, progress=False)
    assert manifest["path"].tolist() == ["celeba/img_align_celeba/000001.jpg"]
    assert report.values.tolist() == [
        ["celeba/img_align_celeba/000002.jpg", "not a regular file: a named pipe (FIFO)"],
        ["celeba/img_align_celeba/000003.jpg", "not a regular file: a character device"],
    ]
