"""Every catalog entry is saved atomically and a damaged newest version is named (docs/reliability.md,
case 21): a full disk during a save leaves no version behind, whichever class saves the entry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog, DatasetError, Version
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner
from PIL import Image

from uvit_pipeline.datasets.guard import DamagedVersion, guard
from uvit_pipeline.hooks import CatalogGuard

ROOT = Path(__file__).resolve().parents[2]


def catalog_classes() -> list[str]:
    """Every kedro-datasets class any environment's catalog uses."""
    found = set()
    for conf in ROOT.glob("conf/*/catalog*.yml"):
        for entry in (yaml.safe_load(conf.read_text()) or {}).values():
            kind = entry.get("type", "") if isinstance(entry, dict) else ""
            if "." in kind and not kind.startswith("uvit_pipeline"):
                found.add(kind)
    return sorted(found)


SAMPLES = {
    "pandas.ParquetDataset": pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]}),
    "pandas.CSVDataset": pd.DataFrame({"path": ["a.png"], "reason": ["truncated image"]}),
    "json.JSONDataset": {"fid": 3.5, "steps": 10},
    "pillow.ImageDataset": Image.new("RGB", (8, 8), "red"),
    "text.TextDataset": "<html>report</html>",
}
SUFFIX = {
    "pandas.ParquetDataset": "parquet",
    "pandas.CSVDataset": "csv",
    "json.JSONDataset": "json",
    "pillow.ImageDataset": "png",
    "text.TextDataset": "html",
}


def make(kind: str, path: Path):
    module, cls = kind.rsplit(".", 1)
    import importlib

    dataset_cls = getattr(importlib.import_module(f"kedro_datasets.{module}"), cls)
    return dataset_cls(filepath=str(path), version=Version(None, None))


def equal(kind: str, a, b) -> bool:
    if kind.startswith("pandas"):
        return a.reset_index(drop=True).equals(b.reset_index(drop=True))
    if kind.startswith("pillow"):
        return np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b))
    return a == b


def test_the_test_covers_every_class_of_the_catalogs():
    assert set(catalog_classes()) <= set(SAMPLES), set(catalog_classes()) - set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_catalog_class_writes_a_temporary_sibling_and_renames_it(kind, tmp_path, monkeypatch):
    path = tmp_path / f"entry.{SUFFIX[kind]}"
    dataset = guard(make(kind, path), "entry")
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    dataset.save(SAMPLES[kind])
    assert [dst for _, dst in renamed] == [path.name]
    assert renamed[0][0].startswith(f".{path.name}.") and renamed[0][0].endswith(".tmp")
    version_dir = next(path.iterdir())
    assert [p.name for p in version_dir.iterdir()] == [path.name]  # no temporary file left
    assert equal(kind, SAMPLES[kind], guard(make(kind, path), "entry").load())


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_a_failed_save_leaves_no_version(kind, tmp_path, monkeypatch):
    """An error while the file is written (what a full disk raises) leaves no file at all."""
    path = tmp_path / f"entry.{SUFFIX[kind]}"
    dataset = guard(make(kind, path), "entry")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(DatasetError, match=f"No space left on device.*{path.name}"):
        dataset.save(SAMPLES[kind])
    assert not [p for p in path.rglob("*") if p.is_file()]


def test_a_damaged_newest_version_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "image_manifest.parquet"
    frame = SAMPLES["pandas.ParquetDataset"]
    guard(make("pandas.ParquetDataset", path), "image_manifest").save(frame)
    good = next(path.iterdir()).name
    broken = path / "9999-12-31T00.00.00.000Z" / path.name
    broken.parent.mkdir()
    broken.write_bytes(b"PAR1" + b"\0" * 100)  # what an in-place save cut by a full disk leaves
    dataset = guard(make("pandas.ParquetDataset", path), "image_manifest")
    with pytest.raises(DamagedVersion) as err:
        dataset.load()
    message = str(err.value)
    assert "image_manifest" in message and str(broken) in message
    assert f"Delete the folder {broken.parent}" in message and good in message
    shutil.rmtree(broken.parent)  # what the message says to do; the next run reads the intact one
    assert equal("pandas.ParquetDataset", frame, make("pandas.ParquetDataset", path).load())


def _run(catalog: DataCatalog, pipeline: Pipeline) -> None:
    hooks = _create_hook_manager()
    hooks.register(CatalogGuard())
    hooks.hook.after_catalog_created(
        catalog=catalog,
        conf_catalog={},
        conf_creds={},
        save_version=None,
        load_versions=None,
        parameters={},
    )
    SequentialRunner().run(pipeline, catalog, hooks)


def test_a_full_disk_during_a_save_leaves_the_catalog_usable(small_tmpfs):
    """A real full filesystem during `image_manifest`'s save: the run fails naming the file, no
    version is left behind, and the next run reads the previous version."""
    path = small_tmpfs / "image_manifest.parquet"

    def catalog() -> DataCatalog:
        return DataCatalog(
            {"image_manifest": make("pandas.ParquetDataset", path)}  # a new catalog per run
        )

    def manifest(n: int) -> pd.DataFrame:
        rng = np.random.default_rng(n)
        return pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "x": rng.random(n)})

    _run(catalog(), Pipeline([node(lambda: manifest(100), None, "image_manifest")]))
    first = sorted(path.iterdir())
    with pytest.raises(DatasetError, match="No space left on device") as err:
        _run(catalog(), Pipeline([node(lambda: manifest(200_000), None, "image_manifest")]))
    assert path.name in str(err.value)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert files == [first[0] / path.name]  # the failed save left nothing, not even a .tmp file
    seen = []
    _run(catalog(), Pipeline([node(lambda df: seen.append(len(df)), "image_manifest", None)]))
    assert seen == [100]


def test_the_project_writers_name_the_file_on_a_full_disk(tmp_path, monkeypatch):
    from uvit_pipeline._io import atomic_write_json

    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(OSError, match="No space left on device") as err:
        atomic_write_json(tmp_path / "meta.json", {"a": 1})
    assert err.value.filename == str(tmp_path / "meta.json")
    assert not list(tmp_path.iterdir())
