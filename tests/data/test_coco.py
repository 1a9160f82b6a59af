"""MS-COCO 2014 ingestion (§7.3): manifest on the demo layout, reports, malformed caption files."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from uvit_pipeline.data import coco as coco_mod
from uvit_pipeline.data.coco import MANIFEST_COLUMNS, CocoAnnotationError, scan_coco
from uvit_pipeline.data.demo import CLASS_NAMES

from .conftest import image_bytes


def test_scan_coco_on_demo_data(demo_root):
    root = demo_root / "coco"
    manifest, report = scan_coco(root, progress=False)
    assert report.empty and list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["split"].tolist() == ["train2014"] * 40 + ["val2014"] * 20
    for split in ("train2014", "val2014"):
        sub = manifest[manifest["split"] == split]
        ids = sub["image_id"].tolist()
        assert ids == sorted(ids)  # (split, image id) order, §7.3
        ann = json.loads((root / f"annotations/captions_{split}.json").read_text())
        by_image = {}
        for a in ann["annotations"]:
            by_image.setdefault(a["image_id"], []).append((a["id"], a["caption"]))
        assert [list(c) for c in sub["caption_ids"]] == [[c for c, _ in by_image[i]] for i in ids]
        assert [list(c) for c in sub["captions"]] == [[t for _, t in by_image[i]] for i in ids]
    row = manifest.iloc[0]
    assert row["path"] == f"train2014/COCO_train2014_{row['image_id']:012d}.jpg"
    assert row["n_captions"] == 3 and (row["width"], row["height"]) == (16, 16)
    # the demo's caption files carry each image's class (real COCO's do not: label 0)
    assert CLASS_NAMES[row["label"]] == row["class_name"]
    assert all(row["class_name"].split("-")[0] in c for c in row["captions"])
    assert row["checksum"] == hashlib.sha1((root / row["path"]).read_bytes()).hexdigest()
    assert not set(manifest["image_id"][:40]) & set(manifest["image_id"][40:])
    val, _ = scan_coco(root, splits=("val2014",), progress=False)
    assert val.reset_index(drop=True).equals(manifest[40:].reset_index(drop=True))


def _write_coco(root, images, annotations, files=("a.jpg",), split="train2014"):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    for i, name in enumerate(files):
        (root / split / name).write_bytes(image_bytes(8, 6, seed=i))
    ann = {"images": images, "annotations": annotations}
    (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(ann))


def _img(iid, name):
    return {"id": iid, "file_name": name, "width": 8, "height": 6}


def _cap(iid, cid, text):
    return {"image_id": iid, "id": cid, "caption": text}


def test_reports_every_kind_of_bad_entry(tmp_path):
    root = tmp_path / "coco"
    images = [_img(3, "a.jpg"), _img(1, "missing.jpg"), _img(2, "b.jpg"), _img(5, "c.jpg"),
              _img(6, "bad.jpg"), _img(7, "d.jpg"), _img(3, "dup.jpg")]  # fmt: skip
    annotations = [
        _cap(3, 11, "  x  \n"), _cap(1, 12, "y"), _cap(3, 10, "z"), _cap(99, 13, "orphan"),
        _cap(99, 14, "orphan 2"), _cap(5, 15, "   "), _cap(6, 16, "broken"), _cap(7, 17, "\t"),
        _cap(7, 18, "kept"), _cap(7, 18, "same id again"),
    ]  # fmt: skip
    _write_coco(root, images, annotations, files=("a.jpg", "b.jpg", "c.jpg", "d.jpg", "dup.jpg"))
    (root / "train2014" / "bad.jpg").write_bytes(b"not a jpeg at all")
    manifest, report = scan_coco(root, splits=["train2014"], progress=False)
    assert manifest["image_id"].tolist() == [3, 7]
    assert [list(c) for c in manifest["captions"]] == [["x", "z"], ["kept"]]
    assert [list(c) for c in manifest["caption_ids"]] == [[11, 10], [18]]
    assert manifest["n_captions"].tolist() == [2, 1]
    assert sorted(report.values.tolist()) == sorted([
        ["train2014/dup.jpg", "duplicate image id 3 (kept train2014/a.jpg)"],
        ["train2014/c.jpg", "empty caption (id 15) dropped"],
        ["train2014/d.jpg", "empty caption (id 17) dropped"],
        ["train2014/d.jpg", "duplicate caption id 18 dropped"],
        ["annotations/captions_train2014.json",
         "image_id 99 not in 'images': 2 caption(s) dropped (ids [13, 14])"],
        ["train2014/missing.jpg", "missing file (1 caption(s) dropped)"],
        ["train2014/b.jpg", "no captions"],
        ["train2014/c.jpg", "no captions"],
        ["train2014/bad.jpg", "not an image"],
    ])  # fmt: skip


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [], "annotations": [{"image_id": 1, "id"', r"not valid JSON \(Expecting"),
        ("", r"not valid JSON \(Expecting value at line 1, column 1, char 0\)"),
        ("[1, 2]", "expected a JSON object at the top level, got list"),
        ('{"images": []}', "lacks the top-level key 'annotations'"),
        ('{"images": {}, "annotations": []}', "'images' must be a list, got dict"),
        ('{"images": [{"file_name": "a.jpg"}], "annotations": []}', r"images\[0\] lacks 'id'"),
        (
            '{"images": [{"id": 1, "file_name": "../x.jpg"}], "annotations": []}',
            r"images\[0\]\['file_name'\] must be a plain file name",
        ),  # fmt: skip
        (
            json.dumps(
                {
                    "images": [_img(1, "a.jpg")],
                    "annotations": [_cap(1, 1, "ok"), {"image_id": 1, "id": 2}],
                }
            ),
            r"annotations\[1\] lacks 'caption'",
        ),  # fmt: skip
        (
            json.dumps({"images": [], "annotations": [{"id": 2, "caption": "c"}]}),
            r"annotations\[0\] lacks 'image_id'",
        ),  # fmt: skip
        (
            json.dumps({"images": [], "annotations": [_cap("1", 2, "c")]}),
            r"annotations\[0\]\['image_id'\] must be an integer, got '1'",
        ),  # fmt: skip
        (
            json.dumps({"images": [], "annotations": [_cap(1, 2, None)]}),
            r"annotations\[0\]\['caption'\] must be a string, got None",
        ),  # fmt: skip
    ],
)
def test_malformed_caption_file_names_file_and_key(tmp_path, content, message, monkeypatch):
    root = tmp_path / "coco"
    _write_coco(root, [_img(1, "a.jpg")], [_cap(1, 1, "fine")])
    (root / "val2014").mkdir()
    (root / "annotations" / "captions_val2014.json").write_text(content)
    decoded = []
    monkeypatch.setattr(coco_mod, "_validate", lambda *a, **k: decoded.append(1))
    with pytest.raises(CocoAnnotationError, match=message) as info:
        scan_coco(root, progress=False)
    assert str(info.value).startswith("annotations/captions_val2014.json: ")
    assert not decoded  # stopped before decoding any image of the good split


def test_truncated_real_caption_file(demo_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(demo_root / "coco", root)
    ann = root / "annotations" / "captions_train2014.json"
    ann.write_bytes(ann.read_bytes()[: ann.stat().st_size // 2])
    with pytest.raises(
        CocoAnnotationError, match=r"captions_train2014.json: not valid JSON .* char"
    ):
        scan_coco(root, progress=False)
    ann.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CocoAnnotationError, match=r"captions_train2014.json: not UTF-8"):
        scan_coco(root, progress=False)


def test_missing_parts_and_bad_arguments(tmp_path):
    root = tmp_path / "coco"
    _write_coco(root, [_img(1, "a.jpg")], [_cap(1, 1, "fine")])
    with pytest.raises(FileNotFoundError, match="split 'val2014'"):
        scan_coco(root, progress=False)
    (root / "val2014").mkdir()
    with pytest.raises(FileNotFoundError, match="captions_val2014.json"):
        scan_coco(root, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        scan_coco(root, splits=("train2014", "train2014"))
    manifest, _ = scan_coco(root, splits="train2014", progress=False)
    assert manifest["image_id"].tolist() == [1]
    _write_coco(root, [_img(2, "z.jpg")], [_cap(2, 5, "no file")], files=(), split="val2014")
    with pytest.raises(ValueError, match="no captioned COCO images"):
        scan_coco(root, splits=("val2014",), progress=False)
