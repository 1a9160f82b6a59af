"""Demo data generator: determinism, layout, idempotence."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline.data import generate_demo_data
from uvit_pipeline.data.demo import CLASS_NAMES, CLASSES


def _digests(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "demo_meta.json"
    }


def test_same_seed_same_bytes(tmp_path):
    a = generate_demo_data(tmp_path / "a", n_per_class=3, image_size=16, seed=5)
    generate_demo_data(tmp_path / "b", n_per_class=3, image_size=16, seed=5)
    generate_demo_data(tmp_path / "c", n_per_class=3, image_size=16, seed=6)
    da, db, dc = (_digests(tmp_path / k) for k in "abc")
    assert da == db
    assert da != dc
    png = {k for k in da if k.endswith(".png")}
    assert png == {k for k in dc if k.endswith(".png")}  # same layout, other pixels
    assert all(da[k] != dc[k] for k in png)
    assert a["n_train"] == 30 and a["n_val"] == 20 and not a["skipped"]


def test_layout_and_captions(demo_root):
    train = demo_root / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir()) == CLASS_NAMES
    files = sorted((train / "red-square").iterdir())
    assert [f.name for f in files] == [f"red-square_{i:05d}.png" for i in range(4)]
    assert Image.open(files[0]).size == (16, 16)
    assert len(list((demo_root / "imagenet" / "val" / "red-square").iterdir())) == 2
    ann = json.loads((demo_root / "coco/annotations/captions_train2014.json").read_text())
    assert len(ann["images"]) == 40 and len(ann["annotations"]) == 120
    for im in ann["images"]:
        assert im["file_name"] == f"COCO_train2014_{im['id']:012d}.jpg"
        assert (demo_root / "coco/train2014" / im["file_name"]).is_file()
    colours_shapes = {f"{c} {s}" for c, s in CLASSES}
    assert all(any(cs in a["caption"] for cs in colours_shapes) for a in ann["annotations"])


def test_classes_differ_in_colour_content(demo_root):
    # Mean image colour per class: classes with different colours must be well separated.
    means = {}
    for name in CLASS_NAMES:
        arrs = [
            np.asarray(Image.open(p), dtype=float)
            for p in (demo_root / "imagenet/train" / name).iterdir()
        ]
        means[name] = np.stack(arrs).mean(axis=(0, 1, 2))
    assert means["red-circle"][0] > means["red-circle"][2]
    assert means["blue-circle"][2] > means["blue-circle"][0]


def test_idempotent_and_regenerates_on_new_params(tmp_path):
    first = generate_demo_data(tmp_path, n_per_class=3, image_size=16, seed=0)
    again = generate_demo_data(tmp_path, n_per_class=3, image_size=16, seed=0)
    assert not first["skipped"] and again["skipped"]
    generate_demo_data(tmp_path, n_per_class=2, image_size=16, seed=0)
    assert len(list((tmp_path / "imagenet/train/blue-cross").iterdir())) == 2
    assert json.loads((tmp_path / "demo_meta.json").read_text())["params"]["n_per_class"] == 2
    assert not list(tmp_path.glob(".demo-staging-*"))


def test_refuses_to_overwrite_foreign_data(tmp_path):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="imagenet"):
        generate_demo_data(tmp_path, n_per_class=2, image_size=16)
    with pytest.raises(ValueError, match="n_per_class"):
        generate_demo_data(tmp_path, n_per_class=0)
