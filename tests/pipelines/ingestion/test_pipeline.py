"""`ingestion`: a raw data set as downloaded -> image manifest + report of rejected files. The raw
folder is only read; CIFAR-10's python batches flow on to a pixel store without image files."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uvit_pipeline.data.demo import CLASS_NAMES
from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.pipelines.features import create_pipeline as features
from uvit_pipeline.pipelines.ingestion import create_pipeline

from ..conftest import run, with_section


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_manifest_of_the_demo_set(demo_chain, demo_params):
    manifest, report = demo_chain["image_manifest"], demo_chain["ingestion_report"]
    n = demo_params["demo_data"]["n_per_class"]
    assert len(manifest) == n * len(CLASS_NAMES) and report.empty
    assert manifest["label"].dtype == np.int64
    # label = position of the class folder in sorted order, the name kept beside it
    names = manifest.drop_duplicates("label").set_index("label")["class_name"]
    assert names.to_dict() == dict(enumerate(sorted(CLASS_NAMES)))
    assert (manifest["width"] == 32).all() and (manifest["height"] == 32).all()
    assert manifest["checksum"].str.fullmatch("[0-9a-f]+").all() and manifest["checksum"].is_unique
    assert manifest.attrs["raw_root"] == demo_chain["raw_images"]


def test_broken_files_are_reported_and_skipped_and_raw_data_untouched(
    demo_chain, demo_params, tmp_path
):
    raw = tmp_path / "imagenet"
    shutil.copytree(demo_chain["raw_images"], raw)
    first_class = sorted(p for p in (raw / "train").iterdir())[0]
    (first_class / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (first_class / "notes.txt").write_text("not an image")
    (raw / "train" / "zz-empty").mkdir()
    before = tree_digest(raw)

    out = run(create_pipeline(), {"raw_images": str(raw)}, demo_params)
    manifest, report = out["image_manifest"], out["ingestion_report"]
    assert tree_digest(raw) == before  # read, never written
    reasons = dict(zip(report["path"], report["reason"], strict=True))
    assert set(reasons) == {
        f"train/{first_class.name}/truncated.png",
        f"train/{first_class.name}/notes.txt",
        "train/zz-empty",
    }
    assert "non-image" in reasons[f"train/{first_class.name}/notes.txt"]
    assert "empty" in reasons["train/zz-empty"]
    assert len(manifest) == len(demo_chain["image_manifest"])  # every good image kept
    assert not manifest["path"].str.contains("truncated").any()


def test_missing_raw_folder_is_named(demo_params, tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet root not found: .*nowhere"):
        run(create_pipeline(), {"raw_images": str(tmp_path / "nowhere")}, demo_params)


def write_cifar10(base: Path, n: int = 3) -> np.ndarray:
    """CIFAR-10 python batches as distributed (bytes keys, protocol 2); returns the train images."""
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f, protocol=2)
    train = []
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        batch = {b"labels": rng.integers(0, 10, n).tolist(), b"data": data}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        if name != "test_batch":
            train.append(data.reshape(n, 3, 32, 32))
    return np.concatenate(train)


def test_cifar10_batches_to_a_pixel_store(demo_params, tmp_path):
    images = write_cifar10(tmp_path / "cifar" / "cifar-10-batches-py")
    params = with_section(demo_params, "ingestion", source="cifar10")
    params = with_section(params, "features", crop="none")
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    out = run(
        create_pipeline() + features(),
        {"raw_images": str(tmp_path / "cifar"), "autoencoder": None},
        params,
    )
    report = out["ingestion_report"]
    assert isinstance(report, pd.DataFrame) and report.empty
    assert list(report.columns) == ["path", "reason"]
    store = FeatureStore(out["image_features"])
    assert len(store) == 15
    assert np.array_equal(store.read_all("x"), images)  # 32 px, no crop: the arrays as they are
