"""Data: image decode/validate/crop, raw-set ingestion, demo data, feature stores, torch Datasets."""

from .cifar import read_cifar10, read_cifar10_batches
from .coco import COCO_SCALE_FACTOR, CocoAnnotationError, scan_coco
from .demo import generate_demo_data
from .feature_store import (
    FeatureStore,
    FeatureStoreIncomplete,
    FeatureStoreMismatch,
)
from .images import (
    CROPS,
    ImageError,
    apply_crop,
    celeba_crop,
    center_crop_adm,
    coco_crop,
    decode_rgb,
    hflip,
    hflip_chw,
    load_rgb,
    to_uint8_chw,
)
from .ingest import scan_celeba, scan_imagenet_folder
from .store_writer import FeatureStoreWriter
from .text_features import KIND as TEXT_KIND
from .text_features import CaptionSplit, TextFeatures
from .torch_datasets import BatchReads, CaptionedFeatureDataset, FeatureDataset

__all__ = [
    "COCO_SCALE_FACTOR",
    "CROPS",
    "TEXT_KIND",
    "CaptionSplit",
    "BatchReads",
    "CaptionedFeatureDataset",
    "CocoAnnotationError",
    "FeatureDataset",
    "FeatureStore",
    "FeatureStoreIncomplete",
    "FeatureStoreMismatch",
    "FeatureStoreWriter",
    "ImageError",
    "TextFeatures",
    "apply_crop",
    "celeba_crop",
    "center_crop_adm",
    "coco_crop",
    "decode_rgb",
    "generate_demo_data",
    "hflip",
    "hflip_chw",
    "load_rgb",
    "read_cifar10",
    "read_cifar10_batches",
    "scan_celeba",
    "scan_coco",
    "scan_imagenet_folder",
    "to_uint8_chw",
]
