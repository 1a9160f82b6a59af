"""ImageNet-folder, CIFAR-10 and CelebA ingestion: manifests and rejection reports (COCO: test_coco.py)."""

import hashlib
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from uvit_pipeline.data import read_cifar10, scan_celeba, scan_imagenet_folder
from uvit_pipeline.data.demo import CLASS_NAMES

from .conftest import image_bytes


@pytest.fixture
def imagenet_root(tmp_path):
    """train/ with good, corrupt and odd files in four class folders (one of them empty)."""
    t = tmp_path / "train"
    files = {
        "n01/b.png": image_bytes(10, 12, "PNG", 1),
        "n01/sub/a.gif": image_bytes(9, 7, "GIF", 2),
        "n01/readme.txt": b"notes",
        "n02/a.jpg": image_bytes(20, 16, "JPEG", 3),
        "n02/empty.jpg": b"",
        "n02/fake.jpg": b"plain text renamed to jpg\n",
        "n02/trunc.JPEG": image_bytes(64, 64, "JPEG", 4)[:300],
        "n02/z.jpeg": image_bytes(8, 8, "JPEG", 5),
        "n04/x.JPG": image_bytes(11, 13, "JPEG", 6),
        "stray.jpg": image_bytes(4, 4, "JPEG", 7),
        "n05/bad.png": b"",
    }
    for rel, data in files.items():
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_bytes(data)
    (t / "n03").mkdir()  # empty class folder: keeps index 2
    os.symlink(t / "nowhere.jpg", t / "n04" / "dangling.jpg")  # unreadable file
    return tmp_path


def test_scan_imagenet_manifest_and_report(imagenet_root):
    manifest, report = scan_imagenet_folder(imagenet_root, workers=2, progress=False)
    assert list(manifest.columns) == ["path", "label", "class_name", "width", "height", "checksum"]
    assert manifest["path"].tolist() == [
        "train/n01/b.png",
        "train/n01/sub/a.gif",
        "train/n02/a.jpg",
        "train/n02/z.jpeg",
        "train/n04/x.JPG",
    ]
    assert manifest["label"].tolist() == [0, 0, 1, 1, 3]  # sorted folder order, n03 keeps 2
    assert manifest["class_name"].tolist() == ["n01", "n01", "n02", "n02", "n04"]
    assert manifest[["width", "height"]].values.tolist() == [
        [10, 12],
        [9, 7],
        [20, 16],
        [8, 8],
        [11, 13],
    ]
    data = (imagenet_root / "train/n02/a.jpg").read_bytes()
    assert manifest["checksum"][2] == hashlib.sha1(data).hexdigest()
    assert manifest.attrs["checksum_algorithm"] == "sha1"
    reasons = dict(zip(report["path"], report["reason"], strict=True))
    assert reasons.pop("train/n04/dangling.jpg") == "dangling symlink"
    assert reasons == {
        "train/stray.jpg": "file outside class folder",
        "train/n01/readme.txt": "non-image extension",
        "train/n03": "empty class folder",
        "train/n02/empty.jpg": "zero-byte file",
        "train/n02/fake.jpg": "not an image",
        "train/n02/trunc.JPEG": "truncated image",
        "train/n05/bad.png": "zero-byte file",
        "train/n05": "class folder has no valid images",
    }
    assert manifest.attrs["num_classes"] == 5
    assert list(report.columns) == ["path", "reason"]


def test_scan_imagenet_worker_count_does_not_change_result(imagenet_root):
    m1, r1 = scan_imagenet_folder(imagenet_root, workers=1, progress=False)
    m3, r3 = scan_imagenet_folder(imagenet_root, workers=3, progress=False)
    pd.testing.assert_frame_equal(m1, m3)
    pd.testing.assert_frame_equal(r1, r3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read chmod-000 files")
def test_scan_imagenet_permission_denied(imagenet_root):
    p = imagenet_root / "train/n02/a.jpg"
    p.chmod(0)
    try:
        _, report = scan_imagenet_folder(imagenet_root, workers=1, progress=False)
    finally:
        p.chmod(0o644)
    assert "unreadable: Permission denied" in report["reason"].tolist()


def test_scan_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_imagenet_folder(tmp_path / "nope", progress=False)
    with pytest.raises(FileNotFoundError, match="train"):
        scan_imagenet_folder(tmp_path, progress=False)
    (tmp_path / "train" / "n01").mkdir(parents=True)
    (tmp_path / "train" / "n01" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=str(tmp_path / "train")):
        scan_imagenet_folder(tmp_path, progress=False)
    (tmp_path / "train" / "n01" / "b.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no valid images"):
        scan_imagenet_folder(tmp_path, progress=False)


def test_scan_imagenet_on_demo_data(demo_root):
    manifest, report = scan_imagenet_folder(demo_root / "imagenet", workers=2, progress=False)
    assert report.empty
    assert len(manifest) == 40
    assert manifest.groupby("label")["class_name"].first().tolist() == CLASS_NAMES
    assert (manifest[["width", "height"]] == 16).all().all()
    val, _ = scan_imagenet_folder(demo_root / "imagenet", split="val", progress=False)
    assert len(val) == 20


# -- CIFAR-10 ------------------------------------------------------------------------------


def _write_cifar(base, n=3):
    """Batches in the distributed format: dicts with bytes keys, protocol 2."""
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}".encode() for i in range(10)]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    batches = {}
    for b in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        d = {
            b"batch_label": b"training batch",
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with open(base / b, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[b] = d
    return batches


def test_read_cifar10(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    images, labels, manifest = read_cifar10(tmp_path)
    assert images.shape == (15, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == sum(
        (batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)), []
    )
    row0 = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(images[0, 0], row0[:1024].reshape(32, 32))  # red plane
    np.testing.assert_array_equal(images[0, 2], row0[2048:].reshape(32, 32))  # blue plane
    assert manifest["path"].tolist()[:4] == [
        "data_batch_1#0",
        "data_batch_1#1",
        "data_batch_1#2",
        "data_batch_2#0",
    ]
    assert manifest["class_name"][0] == f"class{labels[0]}"
    assert manifest["index"].tolist() == list(range(15))
    test_images, _, test_manifest = read_cifar10(tmp_path / "cifar-10-batches-py", split="test")
    assert test_images.shape == (3, 3, 32, 32) and test_manifest["path"][0] == "test_batch#0"


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_read_cifar10_refuses_foreign_pickles(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    _write_cifar(base)
    marker = tmp_path / "pwned"
    with open(base / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="data_batch_1.*system"):
        read_cifar10(tmp_path)
    assert not marker.exists()
    with open(base / "data_batch_1", "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)
    with pytest.raises(ValueError, match="expected a dict"):
        read_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_cifar10(tmp_path / "missing")


# -- CelebA / COCO -------------------------------------------------------------------------


def test_scan_celeba_partitions(tmp_path):
    img_dir = tmp_path / "celeba" / "img_align_celeba"  # torchvision's nested layout
    img_dir.mkdir(parents=True)
    parts = {"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 1, "000004.jpg": 2, "000005.jpg": 0}
    for i, name in enumerate(parts):
        if name != "000005.jpg":
            (img_dir / name).write_bytes(image_bytes(12, 14, seed=i))
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in parts.items())
    )
    manifest, report = scan_celeba(tmp_path, "train", progress=False)
    assert manifest["path"].tolist() == [
        "celeba/img_align_celeba/000001.jpg",
        "celeba/img_align_celeba/000002.jpg",
    ]
    assert (manifest["label"] == 0).all()
    assert report.values.tolist() == [["celeba/img_align_celeba/000005.jpg", "missing file"]]
    valid, _ = scan_celeba(tmp_path / "celeba", "valid", progress=False)
    assert valid["path"].tolist() == ["img_align_celeba/000003.jpg"]
    with pytest.raises(ValueError, match="split"):
        scan_celeba(tmp_path, "training")
