"""Registry of raw data layouts (`ingestion.source`): how each is scanned, served and split.

A new layout is one `SOURCES` entry: a scanner (raw root -> manifest + report of rejected files), an
optional array reader for sets distributed as arrays, the manifest split that holds the training
images when one manifest lists several splits, and the crop the layout's paper protocol uses
(docs/data.md, docs/reference.md §7).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from uvit_pipeline.errors import MissingInput

from .cifar import read_cifar10
from .coco import scan_coco
from .images import DEFAULT_MAX_PIXELS
from .ingest import REPORT_COLUMNS, scan_celeba, scan_imagenet_folder

# (raw root, split, workers, max_pixels) -> (manifest, report of rejected inputs: path, reason)
Scanner = Callable[
    [str | os.PathLike, str, int | None, int | None], tuple[pd.DataFrame, pd.DataFrame]
]


@dataclass(frozen=True)
class SourceSpec:
    """One raw data layout.

    scan: lists and validates the raw files -> (manifest, report).
    arrays: (raw root, split) -> uint8 images (N, 3, H, W) for sets distributed as arrays, whose
        manifest rows point into them through the `index` column; None when images are files.
    train_split: the manifest `split` value of the training images when the scanner lists several
        splits in one manifest (COCO: train2014 and val2014); None when the manifest is one split.
    default_crop: the crop of this layout's paper protocol (`features.crop`, §7).
    layout: the expected files under the raw root, shown when they are missing.
    """

    scan: Scanner
    arrays: Callable[[str | os.PathLike, str], np.ndarray] | None
    train_split: str | None
    default_crop: str
    layout: str = ""


def _scan_cifar10(root, split, workers, max_pixels):
    # Python batches as distributed: decoded by unpickling, nothing to reject file by file.
    _, _, manifest = read_cifar10(root, split=split)
    return manifest, pd.DataFrame({c: pd.Series(dtype=str) for c in REPORT_COLUMNS})


def _cifar10_arrays(root, split) -> np.ndarray:
    return read_cifar10(root, split=split)[0]


def _scan_imagenet(root, split, workers, max_pixels):
    return scan_imagenet_folder(root, split=split, workers=workers, max_pixels=max_pixels)


def _scan_celeba(root, split, workers, max_pixels):
    return scan_celeba(root, split=split, workers=workers, max_pixels=max_pixels)


def _scan_coco(root, split, workers, max_pixels):
    # Both 2014 splits: train images and captions, val captions to condition evaluation samples.
    return scan_coco(root, workers=workers, max_pixels=max_pixels)


SOURCES: dict[str, SourceSpec] = {
    "imagenet_folder": SourceSpec(
        _scan_imagenet,
        None,
        None,
        "adm",
        "<root>/train/<class folder, e.g. n01440764>/*.JPEG (ILSVRC2012's train set as extracted: "
        "one folder per class)",
    ),
    "cifar10": SourceSpec(
        _scan_cifar10,
        _cifar10_arrays,
        None,
        "none",
        "<root>/cifar-10-batches-py/ with batches.meta, data_batch_1 … data_batch_5 and test_batch "
        "(the python version, extracted; or those files directly in <root>)",
    ),
    "celeba": SourceSpec(
        _scan_celeba,
        None,
        None,
        "celeba",
        "<root>/img_align_celeba/*.jpg and <root>/list_eval_partition.txt (or both under "
        "<root>/celeba/)",
    ),
    "coco": SourceSpec(
        _scan_coco,
        None,
        "train2014",
        "coco",
        "<root>/train2014/*.jpg, <root>/val2014/*.jpg and <root>/annotations/"
        "captions_train2014.json, captions_val2014.json",
    ),
}


def missing_data(source: str, root: str | os.PathLike, err: FileNotFoundError) -> MissingInput:
    """`err` (raw data not found) with the layout `source` expects under `root`."""
    layout = SOURCES[source].layout.replace("<root>", str(root))
    return MissingInput(
        f"{err}. The {source} raw data is expected as {layout}; put it there, or point "
        "--params data_root=<folder> at it (docs/data.md)"
    )


def source_spec(source: str) -> SourceSpec:
    if source not in SOURCES:
        raise ValueError(f"unknown ingestion.source {source!r}; known: {sorted(SOURCES)}")
    return SOURCES[source]


def scan(
    source: str,
    root: str | os.PathLike,
    split: str,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw set at `root` in layout `source` -> (manifest, report of rejected files); missing
    files raise `MissingInput` naming the expected layout."""
    spec = source_spec(source)
    try:
        return spec.scan(root, split, workers, max_pixels)
    except FileNotFoundError as err:
        raise missing_data(source, root, err) from err


def array_source(source: str, root: str | os.PathLike, split: str) -> np.ndarray | None:
    """Images of sets distributed as arrays (CIFAR-10's python batches), else None (files)."""
    arrays = source_spec(source).arrays
    try:
        return None if arrays is None else arrays(root, split)
    except FileNotFoundError as err:
        raise missing_data(source, root, err) from err


def training_rows(manifest: pd.DataFrame, source: str) -> pd.DataFrame:
    """The manifest rows of the training images (a multi-split manifest keeps its train split)."""
    split = source_spec(source).train_split
    if split is None:
        return manifest
    return manifest[manifest["split"] == split].reset_index(drop=True)
