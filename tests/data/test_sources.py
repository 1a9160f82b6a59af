"""The data-source registry: every layout names its scanner, arrays, train split and crop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uvit_pipeline.data.images import CROPS
from uvit_pipeline.data.sources import SOURCES, array_source, scan, source_spec, training_rows
from uvit_pipeline.pipelines.params import validate_section

from ..pipelines.conftest import ROOT, load_params
from .test_ingest import _write_cifar


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_names_a_known_crop(name):
    assert SOURCES[name].default_crop in CROPS


ENVS = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "local")


@pytest.mark.parametrize("env", ENVS)
def test_environments_crop_as_their_source(env):
    p = load_params(env)
    assert p["features"]["crop"] == SOURCES[p["ingestion"]["source"]].default_crop


def test_the_parameter_schema_offers_the_registered_sources():
    ingestion = load_params("demo")["ingestion"]
    for name in SOURCES:
        validate_section("ingestion", {**ingestion, "source": name})
    with pytest.raises(ValueError, match="ingestion.source"):
        validate_section("ingestion", {**ingestion, "source": "lsun"})


def test_unknown_source_is_named():
    with pytest.raises(ValueError, match="unknown ingestion.source 'lsun'"):
        source_spec("lsun")


def test_training_rows_keep_the_train_split_of_a_multi_split_manifest():
    m = pd.DataFrame({"path": ["a", "b", "c"], "split": ["train2014", "val2014", "train2014"]})
    assert training_rows(m, "coco")["path"].tolist() == ["a", "c"]
    assert training_rows(m, "imagenet_folder") is m  # one split per manifest: kept as is


def test_cifar10_is_served_from_arrays(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    manifest, report = scan("cifar10", tmp_path, "train")
    images = array_source("cifar10", tmp_path, "train")
    assert report.empty and list(report.columns) == ["path", "reason"]
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert len(images) == len(manifest)
    assert array_source("imagenet_folder", tmp_path, "train") is None
