"""NpzStatsDataset: reference statistics in the official `fid_stats_*.npz` layout (§6), read through
`metrics.fid.load_stats` (keys and shapes checked, no pickles), written atomically, versioned."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError, Version

from uvit_pipeline.datasets import NpzStatsDataset


@pytest.fixture
def official(tmp_path):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=16).astype(np.float32)
    a = rng.normal(size=(16, 16))
    path = tmp_path / "fid_stats_cifar10_train_pytorch.npz"
    np.savez(path, mu=mu, sigma=a @ a.T)  # the official layout: just mu and sigma
    return path, mu, a @ a.T


def test_official_file_is_inception_statistics_in_float64(official):
    path, mu, sigma = official
    stats = NpzStatsDataset(filepath=str(path)).load()
    assert stats["network"] == "inception_v3_fid"  # official files name no network
    assert stats["mu"].dtype == np.float64 and stats["sigma"].dtype == np.float64
    np.testing.assert_array_equal(stats["mu"], mu.astype(np.float64))
    np.testing.assert_array_equal(stats["sigma"], sigma)


def test_versioned_round_trip_keeps_the_network(official, tmp_path):
    _, mu, sigma = official
    target = tmp_path / "ref" / "reference_stats.npz"
    ds = NpzStatsDataset(filepath=str(target), version=Version(None, None))
    assert not ds.exists()
    ds.save({"mu": mu, "sigma": sigma, "network": "demo_classifier"})
    assert ds.exists()
    (saved,) = target.glob("*/reference_stats.npz")  # <version>/<name>
    back = ds.load()
    assert back["network"] == "demo_classifier"
    np.testing.assert_array_equal(back["mu"], mu.astype(np.float64))
    np.testing.assert_array_equal(back["sigma"], sigma)
    pinned = NpzStatsDataset(filepath=str(target), version=Version(saved.parent.name, None))
    np.testing.assert_array_equal(pinned.load()["sigma"], sigma)
    # no network given: the statistics are Inception's
    plain = NpzStatsDataset(filepath=str(tmp_path / "plain.npz"))
    plain.save({"mu": mu, "sigma": sigma})
    assert plain.load()["network"] == "inception_v3_fid"
    assert not list(tmp_path.rglob("*.tmp"))  # written through a temporary sibling, renamed


def test_bad_files_are_refused_with_their_path(tmp_path):
    missing = tmp_path / "fid_stats_missing.npz"
    with pytest.raises(DatasetError, match=r"fid_stats_missing.npz' does not exist. Official"):
        NpzStatsDataset(filepath=str(missing)).load()
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(4), cov=np.eye(4))
    with pytest.raises(DatasetError, match=r"bad.npz: missing key\(s\) \['mu', 'sigma'\]"):
        NpzStatsDataset(filepath=str(bad)).load()
    shapes = tmp_path / "shapes.npz"
    np.savez(shapes, mu=np.zeros(4), sigma=np.eye(3))
    with pytest.raises(DatasetError, match=r"need mu \(D,\) and sigma \(D, D\)"):
        NpzStatsDataset(filepath=str(shapes)).load()
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    with pytest.raises(DatasetError, match="pickled.npz"):
        NpzStatsDataset(filepath=str(pickled)).load()
    text = tmp_path / "text.npz"
    text.write_text("not numpy")
    with pytest.raises(DatasetError, match="text.npz is not a readable .npz"):
        NpzStatsDataset(filepath=str(text)).load()
