"""`import_pretrained`: official `.pth` / `fid_stats` `.npz` -> our checkpoint dir / stats entry, plus the
directory and statistics datasets they are saved through (uvit-reference §2, §3.3, §6)."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError, Version

from tests.models.test_official import official_shapes
from uvit_pipeline.datasets import DirectoryDataset, NpzStatsDataset, RawDirectoryDataset
from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.models import OFFICIAL_CONFIGS
from uvit_pipeline.models.official import OFFICIAL_DIFFUSION
from uvit_pipeline.pipelines.import_pretrained.nodes import (
    import_reference_stats,
    import_uvit_checkpoint,
)
from uvit_pipeline.sampling.generate import generate_samples
from uvit_pipeline.training import load_checkpoint_dir, load_uvit_from_checkpoint

TINY = "tiny_test_uvit"
TINY_KWARGS = dict(
    img_size=8,
    in_chans=3,
    patch_size=2,
    embed_dim=32,
    depth=2,
    num_heads=2,
    conv=True,
    num_classes=-1,
    mlp_ratio=4.0,
    qkv_bias=False,
    mlp_time_embed=False,
    use_checkpoint=False,
)


@pytest.fixture
def tiny_official(monkeypatch, tmp_path):
    """A tiny entry in the official tables (same dict objects every module imported) and cwd = tmp."""
    monkeypatch.setitem(OFFICIAL_CONFIGS, TINY, dict(TINY_KWARGS))
    monkeypatch.setitem(
        OFFICIAL_DIFFUSION,
        TINY,
        {"schedule": "vp_continuous", "p_uncond": 0.0, "data": {"kind": "pixels"}},
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def official_state(kwargs: dict = TINY_KWARGS, seed: int = 0) -> OrderedDict:
    """Random weights under the official key names and shapes (§2.1), in state_dict() order."""
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (k, 0.02 * torch.randn(s, generator=gen)) for k, s in official_shapes(kwargs).items()
    )


def save_pth(obj, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def test_official_pth_becomes_a_checkpoint_that_samples(tiny_official):
    state = official_state()
    pth = save_pth(state, tiny_official / "tiny.pth")
    out = import_uvit_checkpoint({"checkpoint_file": pth, "config": None})  # config inferred

    config, ema, raw = load_checkpoint_dir(out)
    assert raw is None  # released files are EMA weights only
    assert config["official_config"] == TINY
    assert config["model_kwargs"] == TINY_KWARGS
    assert (config["schedule"], config["p_uncond"]) == ("vp_continuous", 0.0)
    assert config["imported_from"] == os.path.abspath(pth)
    assert ema.keys() == state.keys() and all(torch.equal(ema[k], v) for k, v in state.items())

    # Through the catalog dataset: the staging dir is moved into place, then the EMA net samples.
    ds = DirectoryDataset(
        filepath=str(tiny_official / "data/06_models/tiny/uvit_checkpoint"),
        version=Version(None, None),
    )
    ds.save(out)
    assert not Path(out).exists()
    nnet = load_uvit_from_checkpoint(ds.load(), "ema")
    assert all(torch.equal(nnet.state_dict()[k], v) for k, v in state.items())
    images = generate_samples(
        nnet,
        get_schedule(config["schedule"]),
        n=2,
        batch_size=2,
        sample_shape=(3, 8, 8),
        sampler="dpm_solver",
        steps=3,
        progress=False,
    )
    assert images.shape == (2, 3, 8, 8) and images.dtype == np.uint8
    assert images.std() > 0

    with pytest.raises(ValueError, match="EMA weights only"):
        load_uvit_from_checkpoint(ds.load(), "raw")


def test_explicit_config_and_module_prefix(tiny_official):
    state = official_state(seed=1)
    pth = save_pth({f"module.{k}": v for k, v in state.items()}, tiny_official / "ddp.pth")
    out = import_uvit_checkpoint({"checkpoint_file": pth, "config": TINY})
    _, ema, _ = load_checkpoint_dir(out)
    assert ema.keys() == state.keys()  # prefix stripped (safetensors stores keys sorted)
    assert all(torch.equal(ema[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"epoch": 3, "note": "hello"}, r"entries \['epoch', 'note'\] are not tensors"),
        (torch.zeros(4), "holds a Tensor"),
        ({"model": official_state()}, r"wrapper dict with keys \['model'\]"),
        (
            torch.nn.Conv2d(3, 8, 3).state_dict(),
            r"no pos_embed/patch_embed.proj.weight .*'bias', 'weight'",
        ),
    ],
    ids=["non-tensors", "tensor", "wrapper", "other-module"],
)
def test_refuses_files_that_are_not_uvit_state_dicts(tiny_official, obj, match):
    pth = save_pth(obj, tiny_official / "x.pth")
    with pytest.raises(ValueError, match=match) as err:
        import_uvit_checkpoint({"checkpoint_file": pth, "config": None})
    assert str(err.value).startswith(pth)
    assert not (tiny_official / "data/06_models").exists() or not any(
        (tiny_official / "data/06_models").iterdir()
    )


def test_missing_key_is_named(tiny_official):
    state = official_state()
    del state["out_blocks.0.skip_linear.weight"]
    pth = save_pth(state, tiny_official / "x.pth")
    # Inferred: the closest config's differences are listed.
    with pytest.raises(
        ValueError,
        match=r"closest is tiny_test_uvit:\n  missing key out_blocks.0.skip_linear"
        r".weight \(expected shape \[32, 64\]\)",
    ):
        import_uvit_checkpoint({"checkpoint_file": pth, "config": None})
    # Named config: the same key, against that config.
    with pytest.raises(
        ValueError,
        match=r"does not match config tiny_test_uvit:\n  missing key "
        r"out_blocks.0.skip_linear.weight",
    ):
        import_uvit_checkpoint({"checkpoint_file": pth, "config": TINY})


def test_shape_mismatch_names_key_and_both_shapes(tiny_official):
    state = official_state()
    state["decoder_pred.weight"] = torch.zeros(48, 32)  # a patch-4 head on a patch-2 config
    pth = save_pth(state, tiny_official / "x.pth")
    with pytest.raises(
        ValueError,
        match=r"shape mismatch for decoder_pred.weight: file has \[48, 32\], "
        r"config expects \[12, 32\]",
    ):
        import_uvit_checkpoint({"checkpoint_file": pth, "config": TINY})


class _Payload:
    """Unpickling this runs os.mkdir(marker): the classic malicious-checkpoint shape."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_malicious_pickle_is_refused_and_never_runs(tiny_official):
    marker = tiny_official / "pwned"
    pth = save_pth({"pos_embed": _Payload(str(marker))}, tiny_official / "evil.pth")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        import_uvit_checkpoint({"checkpoint_file": pth, "config": None})
    assert not marker.exists()
    # Control: the payload is live (an unsafe load would run it), so the check above means something.
    torch.load(pth, weights_only=False)
    assert marker.is_dir()


def test_bad_parameters_are_named(tiny_official):
    with pytest.raises(FileNotFoundError, match="import_pretrained.checkpoint_file"):
        import_uvit_checkpoint({"checkpoint_file": None, "config": None})
    with pytest.raises(
        FileNotFoundError, match="import_pretrained.checkpoint_file: no file at 'nope.pth'"
    ):
        import_uvit_checkpoint({"checkpoint_file": "nope.pth", "config": None})
    pth = save_pth(official_state(), tiny_official / "x.pth")
    with pytest.raises(ValueError, match="import_pretrained.config must be one of .*got 'cifar11'"):
        import_uvit_checkpoint({"checkpoint_file": pth, "config": "cifar11"})
    (tiny_official / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        import_uvit_checkpoint({"checkpoint_file": str(tiny_official / "text.pth"), "config": None})


# --- reference statistics ---------------------------------------------------------------------------


def test_official_fid_stats_import_and_versioned_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=16).astype(np.float32)
    a = rng.normal(size=(16, 16))
    sigma = a @ a.T
    official = tmp_path / "fid_stats_cifar10_train_pytorch.npz"
    np.savez(official, mu=mu, sigma=sigma)  # the official layout: just mu and sigma (§6)

    stats = import_reference_stats({"reference_stats_file": str(official)})
    assert stats["network"] == "inception_v3_fid"
    np.testing.assert_array_equal(stats["mu"], mu.astype(np.float64))
    np.testing.assert_array_equal(stats["sigma"], sigma)

    ds = NpzStatsDataset(
        filepath=str(tmp_path / "ref" / "reference_stats.npz"), version=Version(None, None)
    )
    assert not ds.exists()
    ds.save(stats)
    assert ds.exists()
    (saved,) = (tmp_path / "ref" / "reference_stats.npz").glob(
        "*/reference_stats.npz"
    )  # <version>/<name>
    back = ds.load()
    assert back["network"] == "inception_v3_fid"
    np.testing.assert_array_equal(back["mu"], stats["mu"])
    np.testing.assert_array_equal(back["sigma"], stats["sigma"])
    pinned = NpzStatsDataset(
        filepath=str(tmp_path / "ref" / "reference_stats.npz"),
        version=Version(saved.parent.name, None),
    )
    np.testing.assert_array_equal(pinned.load()["sigma"], sigma)

    # An official file read directly through the dataset gets the Inception network name.
    direct = NpzStatsDataset(filepath=str(official)).load()
    assert direct["network"] == "inception_v3_fid"
    custom = NpzStatsDataset(filepath=str(tmp_path / "demo.npz"))
    custom.save({"mu": mu, "sigma": sigma, "network": "demo_classifier"})
    assert custom.load()["network"] == "demo_classifier"
    assert not list(tmp_path.glob("*.tmp"))


def test_stats_without_mu_sigma_are_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(4), cov=np.eye(4))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['mu', 'sigma'\]"):
        import_reference_stats({"reference_stats_file": str(bad)})
    with pytest.raises(DatasetError, match=r"keys \['mu', 'sigma'\] missing"):
        NpzStatsDataset(filepath=str(bad)).load()
    with pytest.raises(ValueError, match="import_pretrained.reference_stats_file"):
        import_reference_stats({"reference_stats_file": None})


# --- directory datasets -------------------------------------------------------------------------------


def _make_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "payload.txt").write_text(text)
    return path


def test_directory_dataset_moves_in_atomically_and_replaces(tmp_path):
    dst = tmp_path / "catalog" / "store"
    ds = DirectoryDataset(filepath=str(dst))
    assert not ds.exists()
    first = _make_dir(tmp_path / "staging1", "one")
    ds.save(str(first))
    assert not first.exists()  # moved, not copied
    assert ds.load() == str(dst)
    assert (dst / "payload.txt").read_text() == "one"

    ds.save(_make_dir(tmp_path / "staging2", "two"))  # replaces the old directory in one rename
    assert (dst / "payload.txt").read_text() == "two"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["store"]  # no .tmp / .old leftovers

    keep = _make_dir(tmp_path / "keep", "three")
    DirectoryDataset(filepath=str(dst), copy=True).save(keep)
    assert keep.is_dir() and (dst / "payload.txt").read_text() == "three"


def test_directory_dataset_errors_name_the_path(tmp_path):
    ds = DirectoryDataset(filepath=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="absent"):
        ds.load()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="file.txt' which is not one"):
        ds.save(tmp_path / "file.txt")
    raw = RawDirectoryDataset(filepath=str(tmp_path / "imagenet"))
    with pytest.raises(
        DatasetError, match=f"Raw data folder '{tmp_path / 'imagenet'}' does not exist"
    ):
        raw.load()
    _make_dir(tmp_path / "imagenet", "data")
    assert raw.load() == str(tmp_path / "imagenet")
