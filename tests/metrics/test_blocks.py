"""Reference statistics and scoring in fixed blocks over the processes of a launch
(`metrics.blocks` under `launch.run_parallel`): 2 CPU processes write the blocks 1 process writes,
byte for byte, and a rank killed with SIGKILL leaves blocks that a rerun keeps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from uvit_pipeline.errors import ChildFailed
from uvit_pipeline.launch import LaunchSpec, run_parallel
from uvit_pipeline.metrics import blocks
from uvit_pipeline.metrics.demo_classifier import DemoClassifier, save_classifier
from uvit_pipeline.metrics.network import write_network_dir

from .test_clip_score import tiny_clip_dir

ROOT = Path(__file__).resolve().parents[2]
TWO = LaunchSpec(num_processes=2, cpu=True)
N, CHUNK = 10, 4  # 3 blocks: 4 + 4 + 2
KILL_CHUNK = 2  # 5 blocks: rank 0 makes 0, 2, 4 and rank 1 makes 1, 3


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> str:
    """A randomly initialised demo classifier as a feature network folder (features + classes)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("network")
    save_classifier(out / "classifier.safetensors", DemoClassifier(4, width=8, feature_dim=16))
    return str(write_network_dir(out, {"network": "demo_classifier", "num_classes": 4}))


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """Sample chunks as `generate_to_dir` writes them: chunk-<k>.npz with images and labels."""
    out = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(0)
    for k, lo in enumerate(range(0, N, CHUNK)):
        size = min(CHUNK, N - lo)
        images = rng.integers(0, 256, (size, 3, 16, 16), dtype=np.uint8)
        np.savez(out / f"chunk-{k:06d}.npz", images=images, labels=rng.integers(0, 4, size))
    return out


def block_bytes(folder: Path, what: str, n_blocks: int) -> dict:
    """Every array of every block, as (dtype, shape, bytes)."""
    out = {}
    for k in range(n_blocks):
        with np.load(blocks.block_path(folder, what, k)) as f:
            out.update(
                {(k, key): (f[key].dtype, f[key].shape, f[key].tobytes()) for key in f.files}
            )
    return out


@pytest.fixture
def child_imports_tests(monkeypatch):
    """The launched processes import this package's modules (the repository root on their path)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def score_payload(samples, network, clip_dir, out) -> dict:
    captions = [f"a {w} cat" for w in "abcdefghij"]
    return {
        "samples": str(samples), "n": N, "chunk_size": CHUNK, "network": network,
        "batch_size": 3, "clip_model": str(clip_dir), "captions": captions, "out": str(out),
    }  # fmt: skip


@pytest.mark.slow
def test_scoring_blocks_of_two_processes_are_those_of_one(samples, network, tmp_path):
    clip_dir = tiny_clip_dir(tmp_path / "clip")
    one = score_payload(samples, network, clip_dir, tmp_path / "one")
    run_parallel(LaunchSpec(), "uvit_pipeline.metrics.blocks:score_part", one, work_dir=tmp_path)
    two = score_payload(samples, network, clip_dir, tmp_path / "two")
    run_parallel(TWO, "uvit_pipeline.metrics.blocks:score_part", two, work_dir=tmp_path / "w")
    a, b = block_bytes(tmp_path / "one", "score", 3), block_bytes(tmp_path / "two", "score", 3)
    assert a == b
    merged = blocks.merge_blocks(tmp_path / "two", "score", 3)
    assert merged["acts"].shape == (N, 16) and merged["acts"].dtype == np.float64
    assert merged["pred"].shape == (N,) and merged["clip"].shape == (N,)
    assert str(merged["meta_clip_metric"]) == "clip_score_substitute"  # not ViT-L/14


def reference_payload(tmp_path: Path, network: str) -> dict:
    """N PNGs of 12 px (one of them unreadable) and the reference payload of the first 9."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for i in range(N):
        paths.append(f"img{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(raw / paths[-1])
    (raw / paths[3]).write_bytes(b"not a png")  # reported and skipped, in any process
    pd.DataFrame({"path": paths, "label": [i % 4 for i in range(N)]}).to_parquet(tmp_path / "m.pq")
    return {
        "network": network, "batch_size": 3, "n": 9, "block_size": 4, "raw_images": str(raw),
        "crop": "adm", "resolution": 8, "workers": 1, "source": "imagenet_folder",
        "split": "train", "checksum_algorithm": None, "manifest": str(tmp_path / "m.pq"),
    }  # fmt: skip


@pytest.mark.slow
def test_reference_blocks_of_two_processes_are_those_of_one(network, tmp_path):
    payload = reference_payload(tmp_path, network)
    entry = "uvit_pipeline.metrics.blocks:reference_part"
    one, two = {**payload, "out": str(tmp_path / "one")}, {**payload, "out": str(tmp_path / "two")}
    run_parallel(LaunchSpec(), entry, one, work_dir=tmp_path / "w1")
    run_parallel(TWO, entry, two, work_dir=tmp_path / "w2")
    assert block_bytes(tmp_path / "one", "reference", 3) == block_bytes(
        tmp_path / "two", "reference", 3
    )
    merged = blocks.merge_blocks(tmp_path / "two", "reference", 3)
    assert merged["acts"].shape == (8, 16)  # the first 9 rows, one of them unreadable
    assert merged["skipped"].tolist() == [3]


@pytest.mark.slow
def test_a_killed_rank_resumes_without_redoing_finished_blocks(
    samples, network, tmp_path, child_imports_tests
):
    payload = score_payload(samples, network, None, tmp_path / "blocks")
    payload.update(captions=None, chunk_size=KILL_CHUNK, samples=str(tmp_path / "samples"))
    rechunk(samples, tmp_path / "samples", KILL_CHUNK)
    assert_resumes_after_a_kill(tmp_path, "score", payload)


def rechunk(src: Path, dst: Path, size: int) -> None:
    """The sample chunks of `src` re-cut into chunks of `size`."""
    dst.mkdir()
    files = sorted(src.glob("chunk-*.npz"))
    images = np.concatenate([np.load(p)["images"] for p in files])
    labels = np.concatenate([np.load(p)["labels"] for p in files])
    for k, lo in enumerate(range(0, len(images), size)):
        np.savez(
            dst / f"chunk-{k:06d}.npz", images=images[lo : lo + size], labels=labels[lo : lo + size]
        )


@pytest.mark.slow
def test_a_rank_killed_during_reference_statistics_resumes_block_by_block(
    network, tmp_path, child_imports_tests
):
    """Blocks of 2 of 9 images: rank 0 makes 0, 2, 4 and rank 1 makes 1, 3; rank 1 dies after 1."""
    payload = {**reference_payload(tmp_path, network), "block_size": 2}
    assert_resumes_after_a_kill(tmp_path, "reference", {**payload, "out": str(tmp_path / "two")})
    merged = blocks.merge_blocks(tmp_path / "two", "reference", 5)
    assert merged["skipped"].tolist() == [3]


def assert_resumes_after_a_kill(tmp_path: Path, what: str, payload: dict) -> None:
    """5 blocks over 2 processes (rank 0 makes 0, 2, 4, rank 1 makes 1, 3); rank 1 is killed with
    SIGKILL right after its first block. The rerun keeps every finished block as it was and ends
    with the blocks 1 process writes."""
    entry = f"uvit_pipeline.metrics.blocks:{what}_part"
    folder = Path(payload["out"])

    def written() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in folder.glob(f"{what}-*.npz")}

    with pytest.raises(ChildFailed):
        run_parallel(
            TWO,
            f"tests.metrics.kill_entry:{what}_then_die",
            {**payload, "kill_rank": 1},
            work_dir=tmp_path / "w1",
        )
    done = written()
    assert f"{what}-000001.npz" in done and f"{what}-000003.npz" not in done  # killed after one
    run_parallel(TWO, entry, payload, work_dir=tmp_path / "w2")
    after = written()
    assert len(after) == 5 and all(after[name] == t for name, t in done.items())
    one = {**payload, "out": str(tmp_path / "one")}
    run_parallel(LaunchSpec(), entry, one, work_dir=tmp_path / "w0")
    assert block_bytes(folder, what, 5) == block_bytes(tmp_path / "one", what, 5)
