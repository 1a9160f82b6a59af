"""The digits learning set: scikit-learn's offline digits written as an ImageNet-layout folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline.data.digits import CLASS_NAMES, digits_arrays, write_digits_folder
from uvit_pipeline.data.ingest import scan_imagenet_folder

pytest.importorskip("sklearn")


def test_digits_folder_layout_labels_and_pixels(tmp_path):
    root = write_digits_folder(tmp_path / "digits", image_size=16, n_per_class=5)
    assert sorted(p.name for p in (root / "train").iterdir()) == CLASS_NAMES
    manifest, report = scan_imagenet_folder(root, workers=1, progress=False)
    assert len(manifest) == 50 and report.empty
    images, labels = digits_arrays(16)
    for _, row in manifest.iterrows():
        k, i = (int(v) for v in row["path"].rsplit("/", 1)[1][:-4].split("-"))
        assert row["label"] == k == labels[i]  # folder order = digit
        png = np.asarray(Image.open(root / row["path"]))
        assert png.shape == (16, 16, 3) and png.dtype == np.uint8
        np.testing.assert_array_equal(png.transpose(2, 0, 1), images[i])
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()  # grey
    assert images.max() > 200 and np.median(images) < 60  # white ink on black
    assert np.bincount(labels).min() >= 170 and len(labels) == 1797


def test_digits_folder_never_overwrites(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_digits_folder(tmp_path / "d")
    with pytest.raises(ValueError, match="image_size"):
        digits_arrays(4)
