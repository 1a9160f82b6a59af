"""MS-COCO 2014 ingestion (§7.3): images of `train2014/`, `val2014/` + `annotations/captions_<split>.json`.

The caption files are read with the standard `json` module (no pycocotools). Both annotation files are
parsed and checked before any image is decoded, so a malformed file stops the scan at once with an error
naming the file and the entry that failed. Images are then validated by a full decode in parallel, as for
ImageNet (`ingest._validate`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from uvit_pipeline.errors import UserFacingError

from .._io import InputRefused, read_regular_file
from .images import DEFAULT_MAX_PIXELS
from .ingest import CHECKSUM_ALGORITHM, _Item, _report_frame, _require_dir, _validate

__all__ = [
    "COCO_SCALE_FACTOR",
    "COCO_SPLITS",
    "CocoAnnotationError",
    "MANIFEST_COLUMNS",
    "scan_coco",
]

log = logging.getLogger(__name__)

COCO_SPLITS = ("train2014", "val2014")
# §4.5 / §8 #17: latent scale factor of the MS-COCO models (std of the KL-f8 latents on COCO).
COCO_SCALE_FACTOR = 0.23010
MANIFEST_COLUMNS = [
    "path",
    "image_id",
    "split",
    "captions",
    "n_captions",
    "caption_ids",
    "width",
    "height",
    "checksum",
    "label",
    "class_name",
]


class CocoAnnotationError(UserFacingError, ValueError):
    """A caption file that is not valid COCO caption JSON; the message names the file and the key."""


@dataclass
class _Split:
    """One split's parsed annotations: kept images (sorted by id) and their captions."""

    name: str
    images: list[tuple[int, str]] = field(default_factory=list)  # (image id, file name)
    # Real COCO caption files carry no class; the demo's synthetic set writes one per image
    # (`images[i]["label"]`, `["class_name"]`) so its text-to-image samples can be scored by class.
    classes: dict[int, tuple[int, str]] = field(default_factory=dict)
    captions: dict[int, list[tuple[int, str]]] = field(
        default_factory=dict
    )  # id -> [(cap id, text)]
    report: list[tuple[str, str]] = field(default_factory=list)


def _int_key(entry: dict, key: str, where: str, rel: str):
    if key not in entry:
        raise CocoAnnotationError(f"{rel}: {where} lacks {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise CocoAnnotationError(f"{rel}: {where}[{key!r}] must be an integer, got {value!r}")
    return value


def _load_json(path: Path, rel: str) -> dict:
    try:
        # A regular file only (a FIFO would block); a UTF-8 BOM is accepted, as in prompt files.
        ann = json.loads(read_regular_file(path).decode("utf-8-sig"))
    except InputRefused as e:
        raise CocoAnnotationError(f"{rel}: {e.reason}") from None
    except json.JSONDecodeError as e:  # truncated or hand-edited files
        raise CocoAnnotationError(
            f"{rel}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}, char {e.pos})"
        ) from e
    except UnicodeDecodeError as e:
        raise CocoAnnotationError(f"{rel}: not UTF-8 text (byte {e.start}: {e.reason})") from e
    if not isinstance(ann, dict):
        raise CocoAnnotationError(
            f"{rel}: expected a JSON object at the top level, got {type(ann).__name__}"
        )
    for key in ("images", "annotations"):
        if key not in ann:
            raise CocoAnnotationError(f"{rel}: lacks the top-level key {key!r}")
        if not isinstance(ann[key], list):
            raise CocoAnnotationError(
                f"{rel}: {key!r} must be a list, got {type(ann[key]).__name__}"
            )
    return ann


def _parse_split(root: Path, split: str) -> _Split:
    """Parse and check `annotations/captions_<split>.json`; no image is read here."""
    rel = f"annotations/captions_{split}.json"
    ann = _load_json(root / rel, rel)
    out = _Split(split)
    files: dict[int, str] = {}
    for i, im in enumerate(ann["images"]):
        where = f"images[{i}]"
        if not isinstance(im, dict):
            raise CocoAnnotationError(f"{rel}: {where} must be an object, got {im!r}")
        iid = _int_key(im, "id", where, rel)
        name = im.get("file_name")
        if (
            not isinstance(name, str)
            or not name
            or name in {".", ".."}
            or "/" in name
            or "\\" in name
        ):
            raise CocoAnnotationError(
                f"{rel}: {where}['file_name'] must be a plain file name, got {name!r}"
            )
        if iid in files:
            out.report.append(
                (f"{split}/{name}", f"duplicate image id {iid} (kept {split}/{files[iid]})")
            )
            continue
        files[iid] = name
        if "label" in im:
            out.classes[iid] = (_int_key(im, "label", where, rel), str(im.get("class_name", "")))
    seen_caps: set[int] = set()
    orphans: dict[int, list[int]] = {}
    for i, a in enumerate(ann["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(a, dict):
            raise CocoAnnotationError(f"{rel}: {where} must be an object, got {a!r}")
        iid = _int_key(a, "image_id", where, rel)
        cid = _int_key(a, "id", where, rel)
        if "caption" not in a:
            raise CocoAnnotationError(f"{rel}: {where} lacks 'caption'")
        if not isinstance(a["caption"], str):
            raise CocoAnnotationError(
                f"{rel}: {where}['caption'] must be a string, got {a['caption']!r}"
            )
        text = a["caption"].strip()  # COCO captions carry stray spaces/newlines
        if iid not in files:
            orphans.setdefault(iid, []).append(cid)
        elif cid in seen_caps:
            out.report.append((f"{split}/{files[iid]}", f"duplicate caption id {cid} dropped"))
        elif not text:
            out.report.append((f"{split}/{files[iid]}", f"empty caption (id {cid}) dropped"))
        else:
            out.captions.setdefault(iid, []).append((cid, text))
        seen_caps.add(cid)
    for iid, cids in orphans.items():
        out.report.append(
            (rel, f"image_id {iid} not in 'images': {len(cids)} caption(s) dropped (ids {cids})")
        )
    for iid in sorted(files):  # §7.3: items ordered by sorted COCO image id
        path = f"{split}/{files[iid]}"
        n = len(out.captions.get(iid, []))
        if n == 0:
            out.report.append((path, "no captions"))
        elif not (root / split / files[iid]).is_file():
            out.report.append((path, f"missing file ({n} caption(s) dropped)"))
        else:
            out.images.append((iid, files[iid]))
    return out


def scan_coco(
    root: str | os.PathLike,
    splits: Sequence[str] = COCO_SPLITS,
    workers: int | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan COCO 2014 under `root` -> (manifest, report); manifest ordered by (split, image id).

    Manifest columns: `MANIFEST_COLUMNS` (captions in annotation-file order; label 0 unless the file gives `images[i].label`, as the demo set does). Report columns:
    path (relative to root), reason. Raises `CocoAnnotationError` for a malformed caption file.
    """
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct split names, got {splits!r}")
    root = Path(root)
    _require_dir(root, "COCO root")
    parsed = []
    for split in splits:  # every caption file is checked before any image is decoded
        _require_dir(root / split, f"COCO image folder for split {split!r}")
        ann_file = root / "annotations" / f"captions_{split}.json"
        if not ann_file.is_file():
            raise FileNotFoundError(f"COCO caption file not found: {ann_file}")
        parsed.append(_parse_split(root, split))
    items, report = [], []
    for p in parsed:
        report.extend(p.report)
        for iid, name in p.images:
            caps = p.captions[iid]
            extra = (iid, p.name, [c for _, c in caps], len(caps), [c for c, _ in caps])
            label, class_name = p.classes.get(iid, (0, ""))
            items.append(
                _Item(f"{p.name}/{name}", str(root / p.name / name), label, class_name, extra)
            )
        log.info("COCO %s: %d captioned images listed", p.name, len(p.images))
    if not items:
        raise ValueError(f"no captioned COCO images found for {list(splits)} under {root}")
    extra_cols = ["image_id", "split", "captions", "n_captions", "caption_ids"]
    manifest, bad = _validate(items, workers, progress, "scan coco", extra_cols, max_pixels)
    report.extend(bad)
    if manifest.empty:
        raise ValueError(f"no valid COCO images for {list(splits)} under {root}")
    manifest = manifest.astype({"image_id": "int64", "n_captions": "int64"})[MANIFEST_COLUMNS]
    manifest.attrs["checksum_algorithm"] = CHECKSUM_ALGORITHM
    for split in splits:
        if not (manifest["split"] == split).any():
            raise ValueError(f"no valid COCO images for split {split!r} under {root}")
    return manifest, _report_frame(report)
