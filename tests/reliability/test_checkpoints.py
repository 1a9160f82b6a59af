"""Every artefact a later stage trusts is verified on load (docs/reliability.md, case 22): the
exported checkpoint, an imported one and computed reference statistics carry sha256 checksums
written with them; damaged or truncated files are refused, naming the file and what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kedro.io import DatasetError, Version

from tests.training.conftest import TINY_MODEL
from uvit_pipeline._io import UnreadableFile, read_json
from uvit_pipeline.datasets import NpzStatsDataset
from uvit_pipeline.models import UViT
from uvit_pipeline.training.checkpoint import export_final, load_uvit_from_checkpoint


@pytest.fixture
def exported(tmp_path):
    kwargs = {**TINY_MODEL, "num_classes": 2}
    model = UViT(**kwargs)
    return export_final(tmp_path / "final", model, model, {"model_kwargs": kwargs}, {"steps": 1})


def flip_bytes(path, n: int = 200) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n] = bytes(255 - b for b in data[middle : middle + n])
    path.write_bytes(bytes(data))


def test_the_export_records_checksums_and_loads(exported):
    sums = read_json(exported / "checksums.json")["sha256"]
    assert set(sums) == {"nnet.safetensors", "nnet_ema.safetensors", "config.json", "summary.json"}
    load_uvit_from_checkpoint(exported)


def test_damaged_weights_are_refused_naming_the_file(exported):
    """200 inverted bytes in the middle of the weights load without error from safetensors: only
    the checksum tells."""
    flip_bytes(exported / "nnet_ema.safetensors")
    with pytest.raises(UnreadableFile, match="nnet_ema.safetensors: is damaged") as err:
        load_uvit_from_checkpoint(exported)
    assert "delete that folder" in str(err.value) and "re-running training" in str(err.value)


def test_a_truncated_safetensors_file_is_named(exported):
    (exported / "checksums.json").unlink()  # as exported by an older release: nothing to compare
    weights = exported / "nnet.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UnreadableFile, match="nnet.safetensors: cannot be read") as err:
        load_uvit_from_checkpoint(exported, which="raw")
    assert str(weights) in str(err.value)


def test_an_unparseable_config_names_its_file(exported):
    (exported / "config.json").write_text('{"model_kwargs": ')
    with pytest.raises(UnreadableFile, match="config.json: is not valid JSON"):
        load_uvit_from_checkpoint(exported)


def test_computed_reference_statistics_are_checked(tmp_path):
    dataset = NpzStatsDataset(
        filepath=str(tmp_path / "reference_stats.npz"), version=Version(None, None)
    )
    dataset.save({"mu": np.zeros(4), "sigma": np.eye(4), "network": "demo_classifier"})
    saved = next((tmp_path / "reference_stats.npz").glob("*/reference_stats.npz"))
    assert saved.with_name("reference_stats.npz.sha256").is_file()
    fresh = NpzStatsDataset(
        filepath=str(tmp_path / "reference_stats.npz"), version=Version(None, None)
    )
    assert fresh.load()["network"] == "demo_classifier"
    flip_bytes(saved, 8)
    again = NpzStatsDataset(
        filepath=str(tmp_path / "reference_stats.npz"), version=Version(None, None)
    )
    with pytest.raises(DatasetError, match=f"'{saved}' is damaged"):
        again.load()


def test_a_feature_store_meta_that_does_not_parse_names_its_file(tmp_path):
    from uvit_pipeline.pipelines.train_uvit.nodes import store_identity

    (tmp_path / "meta.json").write_text("{")
    with pytest.raises(UnreadableFile, match=f"{tmp_path / 'meta.json'}: is not valid JSON"):
        store_identity(str(tmp_path))
    (tmp_path / "meta.json").write_text(json.dumps({"content_id": "abc"}))
    assert store_identity(str(tmp_path)) == "abc"


def test_a_full_disk_during_the_export_names_the_folder(small_tmpfs):
    """A real full filesystem: safetensors reports it in its own error type, without a path."""
    kwargs = {**TINY_MODEL, "embed_dim": 128, "depth": 4, "num_heads": 4, "num_classes": 2}
    model = UViT(**kwargs)
    with pytest.raises(OSError, match="No space left on device") as err:
        export_final(small_tmpfs / "final", model, model, {"model_kwargs": kwargs}, {})
    assert err.value.filename == str(small_tmpfs / "final.tmp")
    assert not (small_tmpfs / "final").exists()  # never a half export under the final name


def test_a_full_disk_while_logging_names_the_log():
    from uvit_pipeline.training.monitor import JsonlWriter

    log = JsonlWriter("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(OSError, match="No space left on device") as err:
        log.write({"step": 1, "loss": 0.5})
    assert err.value.filename == "/dev/full"
