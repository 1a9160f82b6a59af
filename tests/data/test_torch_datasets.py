"""FeatureDataset: scaling, flips (pixel: on the fly; latent: stored view), label dropping."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from uvit_pipeline.data import FeatureDataset, FeatureStore, FeatureStoreWriter


def _pixel_store(root, n=4):
    x = np.arange(n * 3 * 2 * 3, dtype=np.uint8).reshape(n, 3, 2, 3) * 3  # asymmetric in W
    label = np.arange(n, dtype=np.int64)
    with FeatureStoreWriter(
        root, {"kind": "pixels"}, {"x": ((3, 2, 3), "uint8"), "label": ((), "int64")}, 3
    ) as w:
        w.add({"x": x, "label": label})
    return x, label


def _latent_store(root, n=4):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((n, 2, 8, 2, 2)).astype(np.float16)
    with FeatureStoreWriter(
        root,
        {"kind": "latent_moments", "flip": "stored"},
        {"moments": ((2, 8, 2, 2), "float16"), "label": ((), "int64")},
        3,
    ) as w:
        w.add({"moments": m, "label": np.zeros(n, np.int64) + 7})
    return m


def test_pixel_items_scaled_and_flipped(tmp_path):
    x, label = _pixel_store(tmp_path / "s")
    plain = FeatureDataset(tmp_path / "s", random_flip=False)
    xi, yi = plain[1]
    assert xi.dtype == torch.float32 and yi.dtype == torch.long and yi.shape == ()
    torch.testing.assert_close(xi, torch.from_numpy(x[1].astype(np.float32)) / 127.5 - 1)
    assert yi.item() == 1
    flipping = FeatureDataset(FeatureStore(tmp_path / "s"), random_flip=True, seed=1)
    flipped = 0
    for _ in range(200):
        xf, _ = flipping[1]
        if torch.equal(xf, xi.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(xf, xi)
    assert 60 < flipped < 140


def test_latent_items_pick_one_stored_view(tmp_path):
    m = _latent_store(tmp_path / "s")
    plain = FeatureDataset(tmp_path / "s", random_flip=False)
    for _ in range(10):
        z, y = plain[2]
        assert z.shape == (8, 2, 2) and z.dtype == torch.float32 and y.item() == 7
        torch.testing.assert_close(z, torch.from_numpy(m[2, 0].astype(np.float32)))
    ds = FeatureDataset(tmp_path / "s", random_flip=True)
    view = [torch.from_numpy(m[2, k].astype(np.float32)) for k in (0, 1)]
    picks = []
    for _ in range(100):
        z, _ = ds[2]
        picks.append(1 if torch.equal(z, view[1]) else 0)
        assert torch.equal(z, view[picks[-1]])
    assert 20 < sum(picks) < 80


def test_label_dropping(tmp_path):
    _pixel_store(tmp_path / "s")
    always = FeatureDataset(tmp_path / "s", random_flip=False, p_uncond=1.0, null_label=10)
    assert {always[i][1].item() for i in range(4)} == {10}
    some = FeatureDataset(tmp_path / "s", random_flip=False, p_uncond=0.3, null_label=10)
    dropped = sum(some[3][1].item() == 10 for _ in range(1000))
    assert 230 < dropped < 370
    with pytest.raises(ValueError, match="null_label"):
        FeatureDataset(tmp_path / "s", random_flip=False, p_uncond=0.1)
    with pytest.raises(ValueError, match="p_uncond"):
        FeatureDataset(tmp_path / "s", random_flip=False, p_uncond=1.5, null_label=1)


def test_same_seed_same_stream_and_kind_check(tmp_path):
    _pixel_store(tmp_path / "s")
    a = FeatureDataset(tmp_path / "s", random_flip=True, p_uncond=0.5, null_label=9, seed=3)
    b = FeatureDataset(tmp_path / "s", random_flip=True, p_uncond=0.5, null_label=9, seed=3)
    for i in range(20):
        xa, ya = a[i % 4]
        xb, yb = b[i % 4]
        assert torch.equal(xa, xb) and ya == yb
    with FeatureStoreWriter(tmp_path / "t", {"kind": "text"}, {"label": ((), "int64")}, 2) as w:
        w.add({"label": np.zeros(1, np.int64)})
    with pytest.raises(ValueError, match="kind"):
        FeatureDataset(tmp_path / "t", random_flip=False)


@pytest.mark.slow
def test_dataloader_workers_reproducible(tmp_path):
    _pixel_store(tmp_path / "s", n=8)
    ds = FeatureDataset(tmp_path / "s", random_flip=True, p_uncond=0.5, null_label=99)

    def run():
        torch.manual_seed(0)
        loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
        return [(x.clone(), y.clone()) for x, y in loader]

    first, second = run(), run()
    assert len(first) == 2
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
