"""Case 3 of docs/reliability.md: extraction checks every file against its manifest checksum."""

from __future__ import annotations

import numpy as np
import pytest

from uvit_pipeline.data.extract import extract_features, load_images
from uvit_pipeline.data.feature_store import FeatureStore
from uvit_pipeline.data.images import ImageError, center_crop_adm, load_rgb, to_uint8_chw
from uvit_pipeline.data.ingest import scan_imagenet_folder

from .conftest import imagenet_tree, jpeg_bytes

META = {"kind": "pixels", "resolution": 8, "crop": "adm"}
CHANGED, BROKEN = "train/n00/2.jpg", "train/n01/0.jpg"


@pytest.fixture
def damaged(tmp_path):
    """An ingested tree (2 classes x 5) where, after ingestion, one file changed and one broke."""
    root = imagenet_tree(tmp_path / "raw", per_class=5, classes=2)
    manifest, report = scan_imagenet_folder(root, workers=1, progress=False)
    assert report.empty and len(manifest) == 10
    (root / CHANGED).write_bytes(jpeg_bytes(seed=999))  # still a valid image, other content
    data = (root / BROKEN).read_bytes()
    (root / BROKEN).write_bytes(data[: len(data) // 3])
    return root, manifest


def _expected(root, path) -> np.ndarray:
    return to_uint8_chw(center_crop_adm(load_rgb(root / path), 8))


def _extract(root, manifest, out, **kw):
    return extract_features(
        root, manifest, out, meta=META, crop="adm", resolution=8, shard_size=4, batch_size=3,
        workers=1, progress=False, **kw,
    )  # fmt: skip


def test_changed_and_broken_files_are_skipped_and_reported(damaged, tmp_path):
    root, manifest = damaged
    out, report = _extract(root, manifest, tmp_path / "store", return_report=True)
    mismatch = "checksum mismatch: file changed since ingestion (sha1)"
    assert report.values.tolist() == [[CHANGED, mismatch, 2], [BROKEN, mismatch, 5]]
    store = FeatureStore(out)
    assert len(store) == 8 and store.meta["num_skipped"] == 2
    assert store.report[["path", "reason"]].equals(report[["path", "reason"]])
    # every stored row is the image and label of its own manifest row: nothing shifted
    by_path = manifest.set_index("path")
    for i, row in store.manifest.iterrows():
        assert row["path"] not in (CHANGED, BROKEN)
        assert row["label"] == by_path.loc[row["path"], "label"] == store.get("label", i)
        assert manifest["path"].iat[row["manifest_row"]] == row["path"]
        np.testing.assert_array_equal(store.get("x", i), _expected(root, row["path"]))


def test_a_file_that_stopped_decoding_is_skipped_without_a_checksum(damaged, tmp_path):
    root, manifest = damaged
    no_sums = manifest.drop(columns="checksum")  # e.g. a manifest written by other tools
    out, report = _extract(root, no_sums, tmp_path / "store", return_report=True)
    assert report.values.tolist() == [[BROKEN, "truncated image", 5]]
    assert len(FeatureStore(out)) == 9


def test_resume_after_a_crash_with_skipped_rows_equals_an_uninterrupted_run(damaged, tmp_path):
    root, manifest = damaged
    ref = FeatureStore(_extract(root, manifest, tmp_path / "ref"))
    calls = {"n": 0}

    def encoder(images):  # stand-in VAE: deterministic "moments" of the right shape
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        x = images[:, :, ::8, ::8].astype(np.float32)  # (B, 3, 2, 2) -> 8 channels
        return np.concatenate([x, x, x[:, :2]], axis=1) / 255

    latent = {**META, "kind": "latent_moments"}
    args = dict(meta=latent, crop="adm", resolution=16, shard_size=4, batch_size=3, workers=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(root, manifest, tmp_path / "s", encoder=encoder, progress=False, **args)
    extract_features(root, manifest, tmp_path / "s", encoder=encoder, progress=False, **args)
    calls["n"] = 100  # no more crashes
    full = extract_features(
        root, manifest, tmp_path / "full", encoder=encoder, progress=False, **args
    )
    got, want = FeatureStore(tmp_path / "s"), FeatureStore(full)
    assert len(got) == len(want) == len(ref) == 8
    assert got.manifest.equals(want.manifest)
    assert got.report.equals(want.report) and len(got.report) == 2  # no duplicates
    np.testing.assert_array_equal(got.read_all("moments"), want.read_all("moments"))
    assert got.content_id == want.content_id


def test_load_images_skips_and_reports_or_raises(damaged):
    root, manifest = damaged
    images, rows, report = load_images(
        root, manifest, crop="adm", resolution=8, limit=6, workers=1, return_report=True
    )
    assert len(images) == len(rows) == 6  # the limit counts usable images
    assert report["path"].tolist() == [CHANGED, BROKEN]
    assert not set(rows["path"]) & {CHANGED, BROKEN}
    assert rows["label"].tolist() == [0, 0, 0, 0, 1, 1]  # labels come with their own rows
    for img, path in zip(images, rows["path"], strict=True):
        np.testing.assert_array_equal(img, _expected(root, path))
    with pytest.raises(ImageError, match="checksum mismatch") as err:
        load_images(root, manifest, crop="adm", resolution=8, workers=1)
    assert err.value.path.endswith("2.jpg")
