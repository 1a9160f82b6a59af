"""Regression tests for the Kedro-layer cases of the reliability review: a user's raw data is
read-only, nothing replaces a directory the project did not create, artefacts of other data never
become versions of this data set, a failed import leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from tests.pipelines.test_project import copy_project, session
from uvit_pipeline.datasets import DirectoryDataset, RawDirectoryDataset
from uvit_pipeline.settings import data_tag


def tree_digest(root: Path) -> str:
    """Names, sizes and bytes of everything under `root` (and that nothing was added or removed)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def fake_cifar(tmp_path) -> Path:
    root = tmp_path / "my-cifar10"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(os.urandom(1000))
    (root / "notes.txt").write_text("my own data")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


def test_readme_real_data_command_never_touches_the_data(project, fake_cifar, monkeypatch):
    """`kedro run --env cifar10_uvit_small --params data_root=...` used to run the demo generator,
    which replaced the user's folder. Now the default DAG is the experiment, and the raw root is
    read-only even to a pipeline that asks to write it."""
    monkeypatch.chdir(project)
    before = tree_digest(fake_cifar)
    with session(project, "cifar10_uvit_small", data_root=str(fake_cifar)) as s:
        with pytest.raises(Exception, match="CIFAR-10|batches.meta"):  # not a real CIFAR folder
            s.run()
    assert tree_digest(fake_cifar) == before
    with session(project, "cifar10_uvit_small", data_root=str(fake_cifar)) as s:
        with pytest.raises(
            Exception, match="read-only|would write the raw images into your folder"
        ):
            s.run(pipeline_names=["demo_data"])
    assert tree_digest(fake_cifar) == before
    assert not (project / "data/01_raw").exists()


def test_raw_dataset_refuses_to_save(fake_cifar, tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    with pytest.raises(DatasetError, match="read-only"):
        RawDirectoryDataset(filepath=str(fake_cifar)).save(str(staged))
    assert (fake_cifar / "notes.txt").read_text() == "my own data"


def test_no_dataset_replaces_a_directory_it_did_not_create(fake_cifar, tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "x").write_text("new")
    with pytest.raises(DatasetError, match="not created by uvit_pipeline"):
        DirectoryDataset(filepath=str(fake_cifar)).save(str(staged))
    assert (fake_cifar / "notes.txt").read_text() == "my own data"
    # one the project created (it carries the marker) is replaced in one rename
    ours = tmp_path / "ours"
    DirectoryDataset(filepath=str(ours)).save(str(staged))
    again = tmp_path / "again"
    again.mkdir()
    (again / "y").write_text("newer")
    DirectoryDataset(filepath=str(ours)).save(str(again))
    assert (ours / "y").read_text() == "newer" and not (ours / "x").exists()


def test_other_data_gets_its_own_data_set_name(tmp_path):
    assert data_tag("demo", "data/01_raw/demo/imagenet", None) == "demo"
    assert data_tag("demo", "data/01_raw/demo/imagenet", "data/01_raw/demo/imagenet") == "demo"
    a, b = tmp_path / "a" / "imagenet", tmp_path / "b" / "imagenet"
    ta, tb = data_tag("imagenet64", "x", str(a)), data_tag("imagenet64", "x", str(b))
    assert ta.startswith("imagenet64-imagenet-") and tb.startswith("imagenet64-imagenet-")
    assert ta != tb  # same folder name, other place: another data set


def test_catalog_paths_follow_data_root(project, fake_cifar, monkeypatch):
    monkeypatch.chdir(project)
    with session(project, "cifar10_uvit_small", data_root=str(fake_cifar)) as s:
        catalog = s.load_context().catalog
        manifest = str(catalog.get("image_manifest")._filepath)
        checkpoint = catalog.get("uvit_checkpoint")._filepath.as_posix()
        grid = catalog.get("sample_grid")._filepath.as_posix()
    assert "/cifar10-my-cifar10-" in manifest
    # A model trained on other data is never a version of the experiment's own checkpoint.
    assert "/cifar10_uvit_small-my-cifar10-" in checkpoint and "/cifar10_uvit_small-my-" in grid
    with session(project, "cifar10_uvit_small") as s:
        own = s.load_context().catalog.get("uvit_checkpoint")._filepath.as_posix()
    assert own.endswith("data/06_models/cifar10_uvit_small/uvit_checkpoint")


def test_failed_import_leaves_no_version_behind(project, monkeypatch):
    monkeypatch.chdir(project)
    raw = project / "data/01_raw"
    (raw / "pretrained").mkdir(parents=True)
    (raw / "fid_stats").mkdir(parents=True)
    (raw / "pretrained/cifar10_uvit_small.pth").write_text("not a checkpoint")
    np.savez(raw / "fid_stats/fid_stats_cifar10_train_pytorch.npz", mu=np.zeros(4), sigma=np.eye(4))
    with session(project, "cifar10_uvit_small") as s:
        with pytest.raises(Exception, match="could not be loaded safely"):
            s.run(pipeline_names=["import_pretrained"])
    assert not (project / "data/05_model_input").exists()
    assert not (project / "data/06_models").exists()
