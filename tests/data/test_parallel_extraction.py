"""Feature and text extraction over the processes of a launch (`launch.run_parallel`): 2 CPU
processes write the same store as 1, byte for byte, skipped rows and their report included; a rank
killed by SIGKILL fails the run, and the next run resumes from the blocks already written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uvit_pipeline.data import extract, text_features
from uvit_pipeline.data.coco import scan_coco
from uvit_pipeline.data.extract import extract_features
from uvit_pipeline.data.ingest import scan_imagenet_folder
from uvit_pipeline.data.text_features import extract_text_features
from uvit_pipeline.encoders import autoencoder as ae
from uvit_pipeline.encoders import text
from uvit_pipeline.launch import LaunchSpec

from ..reliability.conftest import imagenet_tree, jpeg_bytes

ROOT = Path(__file__).resolve().parents[2]
TWO = LaunchSpec(num_processes=2, cpu=True)
BROKEN = "train/n01/1.jpg"


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_same_store(a: Path, b: Path) -> None:
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


@pytest.fixture
def launch_env(tmp_path, monkeypatch):
    """Children import `tests.data.parallel_entries`; the log of the block files they write."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "blocks.log"
    monkeypatch.setenv("UVIT_TEST_BLOCK_LOG", str(log))
    return log


def written(log: Path) -> list[str]:
    return sorted(line.split()[1] for line in log.read_text().splitlines()) if log.exists() else []


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An ingested tree of 2 classes x 5 where one file broke after ingestion."""
    root = imagenet_tree(tmp_path_factory.mktemp("raw"), per_class=5, classes=2)
    manifest = scan_imagenet_folder(root, workers=1, progress=False)[0]
    (root / BROKEN).write_bytes(jpeg_bytes(seed=1)[:200])
    return root, manifest


def _features(images, out, meta=None, **kw):
    root, manifest = images
    return extract_features(
        root, manifest, out, meta=meta or {"kind": "pixels"}, crop="adm", resolution=16,
        shard_size=3, batch_size=2, workers=1, progress=False, **kw,
    )  # fmt: skip


@pytest.mark.slow
def test_pixel_store_of_two_processes_equals_one(images, tmp_path, launch_env):
    one = _features(images, tmp_path / "one")
    two = _features(images, tmp_path / "two", launch=TWO)
    assert_same_store(one, two)
    assert files(one)["report.parquet"]  # the broken file is reported by both
    assert not (two / "blocks").exists()


@pytest.mark.slow
def test_latent_extraction_resumes_after_a_rank_is_killed(
    images, vae_dir, tmp_path, launch_env, monkeypatch
):
    """Blocks of 3 rows: rank 0 takes 0, 2; rank 1 takes 1, 3 and dies right after block 1."""
    sha = ae.state_dict_sha256(ae.load_autoencoder(vae_dir))  # each process checks its copy
    meta = {"kind": "latent_moments", "encoder_sha256": sha}
    kw = dict(meta=meta, autoencoder=str(vae_dir), moments_shape=(8, 2, 2))
    one = _features(images, tmp_path / "one", **kw)
    monkeypatch.setattr(extract, "ENTRY", "tests.data.parallel_entries:features")
    monkeypatch.setenv("UVIT_TEST_KILL_RANK", "1")
    two = tmp_path / "two"
    with pytest.raises(RuntimeError):
        _features(images, two, launch=TWO, **kw)
    before = written(launch_env)
    assert "block-000001.npz" in before and "block-000003.npz" not in before
    assert sorted(p.name for p in (two / "blocks").glob("block-*")) == before
    launch_env.unlink()
    monkeypatch.delenv("UVIT_TEST_KILL_RANK")
    _features(images, two, launch=TWO, **kw)
    again = written(launch_env)
    # exactly the blocks missing (rank 0 may have been stopped before its last one)
    assert sorted(again) == sorted({f"block-00000{k}.npz" for k in range(4)} - set(before))
    assert_same_store(one, two)


@pytest.mark.slow
def test_text_extraction_resumes_after_a_rank_is_killed(
    demo_root, clip_dir, tmp_path, launch_env, monkeypatch
):
    """60 val captions in blocks of 16; the work list is [extras, val 0, val 1, val 2, val 3]:
    rank 1 takes val 0 and val 2 and dies right after val 0."""
    manifest = scan_coco(demo_root / "coco", progress=False)[0]
    val = manifest[manifest["split"] == "val2014"].reset_index(drop=True)
    encoder = text.load_text_encoder(clip_dir)  # the identity the store records

    def run(out, **kw):
        return extract_text_features(
            val, out, encoder, encoder_spec=str(clip_dir), batch_size=7, shard_size=16,
            prompts=["a red circle"], progress=False, **kw,
        )  # fmt: skip

    one = run(tmp_path / "one")
    monkeypatch.setattr(text_features, "ENTRY", "tests.data.parallel_entries:text")
    monkeypatch.setenv("UVIT_TEST_KILL_RANK", "1")
    two = tmp_path / "two"
    with pytest.raises(RuntimeError):
        run(two, launch=TWO)
    before = written(launch_env)
    assert "val-000000.npz" in before and "val-000002.npz" not in before
    launch_env.unlink()
    monkeypatch.delenv("UVIT_TEST_KILL_RANK")
    run(two, launch=TWO)
    again = written(launch_env)
    # exactly the blocks missing (rank 0 may have been stopped before its last ones); the prompts
    # (extras) are encoded again on every run
    every = {f"val-00000{k}.npz" for k in range(4)}
    assert set(again) == {"extras.npz", *(every - set(before))}
    assert_same_store(one, two)
    assert not (two / "blocks").exists()
