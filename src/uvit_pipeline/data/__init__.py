"""Data: image decode/validate/crop, raw-set ingestion, demo data, feature store, torch Datasets."""

from .cifar import read_cifar10, read_cifar10_batches
from .coco import COCO_SCALE_FACTOR, CocoAnnotationError, scan_coco
from .demo import generate_demo_data
from .feature_store import (
    FeatureStore,
    FeatureStoreIncomplete,
    FeatureStoreMismatch,
    FeatureStoreWriter,
)
from .images import (
    CROP_RULES,
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
from .torch_datasets import FeatureDataset

__all__ = [
    "COCO_SCALE_FACTOR",
    "CocoAnnotationError",
    "CROP_RULES",
    "FeatureDataset",
    "FeatureStore",
    "FeatureStoreIncomplete",
    "FeatureStoreMismatch",
    "FeatureStoreWriter",
    "ImageError",
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
