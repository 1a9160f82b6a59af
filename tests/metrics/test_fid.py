"""FID pieces: Fréchet distance vs pytorch-fid, stats files, FID Inception loading (docs/reference.md §6)."""

from __future__ import annotations

import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance

from uvit_pipeline.metrics import fid


def _random_stats(rng: np.random.Generator, dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    acts = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return fid.statistics(acts)


@pytest.mark.parametrize("dim", [2, 16, 64, 200])
def test_frechet_distance_matches_pytorch_fid(dim):
    rng = np.random.default_rng(dim)
    mu1, s1 = _random_stats(rng, dim, 3 * dim + 10)
    mu2, s2 = _random_stats(rng, dim, 3 * dim + 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes scipy's old `disp`
        expected = calculate_frechet_distance(mu1, s1, mu2, s2)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float)
    assert ours == pytest.approx(expected, rel=1e-8, abs=1e-8)
    assert fid.frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(
        expected, rel=1e-6
    )


def test_frechet_distance_identical_is_zero_and_singular_is_finite():
    rng = np.random.default_rng(0)
    mu, sigma = _random_stats(rng, 8, 100)
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # rank-deficient covariances (fewer samples than dims) still give a finite, non-negative value
    mu_a, s_a = fid.statistics(rng.normal(size=(5, 20)))
    mu_b, s_b = fid.statistics(rng.normal(size=(5, 20)))
    value = fid.frechet_distance(mu_a, s_a, mu_b, s_b)
    assert np.isfinite(value) and value > 0


def test_frechet_distance_rejects_bad_shapes_and_method():
    with pytest.raises(ValueError, match="mu1/mu2"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma1/sigma2"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="method"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_statistics_matches_numpy():
    acts = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    mu, sigma = fid.statistics(acts)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(acts.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError, match="acts"):
        fid.statistics(np.zeros((1, 6)))


def test_stats_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    mu, sigma = _random_stats(rng, 5, 30)
    path = tmp_path / "ref" / "stats.npz"
    fid.save_stats(path, mu, sigma)
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temp file left
    with np.load(path) as raw:  # the official format: plain keys mu, sigma
        assert sorted(raw.files) == ["mu", "sigma"]
    mu2, sigma2 = fid.load_stats(path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)

    wrong_key = tmp_path / "wrong.npz"
    np.savez(wrong_key, mean=mu, sigma=sigma)
    with pytest.raises(ValueError, match=r"wrong\.npz.*missing key.*mu"):
        fid.load_stats(wrong_key)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, mu=mu, sigma=sigma[:3])
    with pytest.raises(ValueError, match=r"shape\.npz"):
        fid.load_stats(wrong_shape)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, mu=np.array([{"a": 1}], dtype=object), sigma=sigma)
    with pytest.raises(ValueError, match=r"pickled\.npz"):
        fid.load_stats(pickled)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"garbage\.npz"):
        fid.load_stats(garbage)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        fid.load_stats(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="save_stats"):
        fid.save_stats(tmp_path / "x.npz", mu, sigma[:2])


@pytest.fixture(scope="module")
def random_fid_weights(tmp_path_factory):
    """A random-weight state_dict in the layout of pt_inception-2015-12-05 (torchvision keys, 1008 fc)."""
    torch.manual_seed(0)
    # FID blocks only change forward(), so torchvision's Inception has the same keys and shapes.
    net = torchvision.models.inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=False
    )
    path = tmp_path_factory.mktemp("fid") / fid.FID_WEIGHTS_FILENAME
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_load_inception_from_local_file(random_fid_weights, tmp_path):
    path, state_dict = random_fid_weights
    model = fid.load_inception(weights_path=path)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    first_conv = model.blocks[0][0].conv.weight
    torch.testing.assert_close(first_conv, state_dict["Conv2d_1a_3x3.conv.weight"])
    torch.testing.assert_close(
        model.blocks[3][2].branch1x1.conv.weight, state_dict["Mixed_7c.branch1x1.conv.weight"]
    )
    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    acts = fid.inception_activations(images, model, batch_size=2)
    assert acts.shape == (3, 2048) and acts.dtype == np.float64
    # our pipeline = pytorch-fid's: [0,1] input, the model resizes to 299 and maps to [-1,1] itself
    with torch.no_grad():
        direct = model(torch.from_numpy(images).float() / 255.0)[0].flatten(1).double().numpy()
    np.testing.assert_allclose(acts, direct, rtol=1e-5, atol=1e-6)

    # PNG round trip: same activations from a directory, sorted file order
    for i, img in enumerate(images):
        Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / f"{i}.png")
    from_dir = fid.activations_from_png_dir(tmp_path, model, batch_size=50)
    np.testing.assert_allclose(from_dir, acts, rtol=1e-5, atol=1e-6)


def test_load_inception_rejects_wrong_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="catalog entry `inception_weights`"):
        fid.load_inception(weights_path=bad)
    with pytest.raises(FileNotFoundError, match="catalog entry `inception_weights`"):
        fid.load_inception(weights_path=tmp_path / "absent.pth")


def test_load_inception_offline_error_names_catalog_entry(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="catalog entry `inception_weights`") as info:
        fid.load_inception()
    assert fid.FID_WEIGHTS_URL in str(info.value)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(RuntimeError, match="catalog entry `inception_weights`"):
        fid.load_inception(allow_download=False)


def test_inception_activations_input_validation():
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="uint8"):
        fid.inception_activations(np.zeros((2, 3, 8, 8), np.float32), model)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fid.inception_activations(np.zeros((2, 1, 8, 8), np.uint8), model)
    with pytest.raises(ValueError, match="no images"):
        fid.inception_activations(iter([]), model)


def test_rebatch_iterable_of_batches():
    chunks = [np.full((n, 3, 2, 2), n, np.uint8) for n in (3, 1, 4)]
    batches = list(fid._rebatch(iter(chunks), 3, "images"))
    assert [len(b) for b in batches] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(chunks))
