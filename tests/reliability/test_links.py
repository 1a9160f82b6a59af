"""Case 4 of docs/reliability.md: symlink loops, directory cycles and dangling links in a raw tree."""

from __future__ import annotations

import os

from uvit_pipeline.data.ingest import scan_celeba, scan_imagenet_folder

from .conftest import imagenet_tree, jpeg_bytes


def test_loops_cycles_and_dangling_links_are_reported_not_fatal(tmp_path):
    root = imagenet_tree(tmp_path / "raw", per_class=2, classes=2)
    n00 = root / "train" / "n00"
    os.symlink(".", n00 / "loop")  # the folder itself
    os.symlink("../..", n00 / "up")  # the ImageNet root: an ancestor
    os.symlink("self", n00 / "self")  # a link to itself (ELOOP)
    os.symlink("nowhere.jpg", n00 / "dangling.jpg")
    os.symlink("n00", root / "train" / "n02")  # a second class folder that is the first one
    os.symlink("gone", root / "train" / "n03")  # a dangling class folder
    outside = tmp_path / "elsewhere"  # links may point outside the tree: followed
    outside.mkdir()
    (outside / "x.jpg").write_bytes(jpeg_bytes(seed=7))
    os.symlink(outside, root / "train" / "n01" / "more")

    manifest, report = scan_imagenet_folder(root, workers=1, progress=False)

    assert manifest["path"].tolist() == [
        "train/n00/0.jpg",
        "train/n00/1.jpg",
        "train/n01/0.jpg",
        "train/n01/1.jpg",
        "train/n01/more/x.jpg",
    ]
    assert manifest["label"].tolist() == [0, 0, 1, 1, 1]
    assert manifest.attrs["num_classes"] == 3  # n00, n01, n02 (n03 is not a folder)
    reasons = dict(zip(report["path"], report["reason"], strict=True))
    assert reasons["train/n00/loop"] == "symlink cycle: same directory as train/n00"
    assert reasons["train/n00/up"] == "symlink cycle: same directory as ."
    assert reasons["train/n00/self"] == "symlink loop"
    assert reasons["train/n00/dangling.jpg"] == "dangling symlink"
    assert reasons["train/n02"] == "duplicate directory: same directory as train/n00"
    assert reasons["train/n03"] == "dangling symlink"


def test_celeba_reports_looping_and_dangling_links(tmp_path):
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    (base / "img_align_celeba" / "000001.jpg").write_bytes(jpeg_bytes(178, 218))
    os.symlink("000002.jpg", base / "img_align_celeba" / "000002.jpg")
    os.symlink("missing.jpg", base / "img_align_celeba" / "000003.jpg")
    (base / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 0\n")
    manifest, report = scan_celeba(tmp_path, workers=1, progress=False)
    assert manifest["path"].tolist() == ["celeba/img_align_celeba/000001.jpg"]
    assert report.values.tolist() == [
        ["celeba/img_align_celeba/000002.jpg", "symlink loop"],
        ["celeba/img_align_celeba/000003.jpg", "dangling symlink"],
    ]
