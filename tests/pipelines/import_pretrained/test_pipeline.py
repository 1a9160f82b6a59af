"""`import_pretrained`: an official `.pth` (plain EMA state dict) and its `fid_stats` file become our
checkpoint, reference statistics and FID network, all or nothing (§2, §3.3, §6). Read through the
catalog's own datasets (PretrainedDataset, NpzStatsDataset) as a run reads them."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError, Version

from tests.models.test_official import official_shapes
from uvit_pipeline.datasets import DirectoryDataset, NpzStatsDataset, PretrainedDataset
from uvit_pipeline.diffusion import get_schedule
from uvit_pipeline.models import OFFICIAL_CONFIGS
from uvit_pipeline.models.official import OFFICIAL_DIFFUSION
from uvit_pipeline.pipelines.import_pretrained import create_pipeline
from uvit_pipeline.pipelines.params import ParameterError, validate_section
from uvit_pipeline.sampling.generate import generate_samples
from uvit_pipeline.training import load_checkpoint_dir, load_uvit_from_checkpoint

from ..conftest import run

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
def tiny_official(monkeypatch, tmp_path, inception_calls):
    """A tiny entry in the official tables (the dict objects every module imported), the official
    statistics file, and the FID Inception recorded instead of loaded."""
    monkeypatch.setitem(OFFICIAL_CONFIGS, TINY, dict(TINY_KWARGS))
    monkeypatch.setitem(
        OFFICIAL_DIFFUSION,
        TINY,
        {"schedule": "vp_continuous", "p_uncond": 0.0, "data": {"kind": "pixels"}},
    )
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    stats = tmp_path / "fid_stats_tiny.npz"
    np.savez(stats, mu=rng.normal(size=16), sigma=a @ a.T)  # the official layout: mu, sigma (§6)
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


def import_official(
    root: Path, pth: str, config: str | None = None, preset: str | None = None, **inputs
) -> dict:
    """Run the pipeline on the catalog's datasets for these files; staging under `root/staging`."""
    catalog = {
        "pretrained_checkpoint": PretrainedDataset(source=pth).load(),
        "official_fid_stats": NpzStatsDataset(filepath=str(root / "fid_stats_tiny.npz")).load(),
        "inception_weights": PretrainedDataset(source="pytorch-fid").load(),
        **inputs,
    }
    params = {
        "import_pretrained": {"config": config},
        "model": {"preset": preset},
        "paths": {"staging": str(root / "staging"), "train_state": str(root / "train_state")},
    }
    return run(create_pipeline(), catalog, params)


def nothing_written(root: Path) -> bool:
    staging = root / "staging"
    return not staging.exists() or not any(staging.iterdir())


def test_official_pth_becomes_a_checkpoint_that_samples(tiny_official, inception_calls):
    state = official_state()
    pth = save_pth(state, tiny_official / "tiny.pth")
    out = import_official(tiny_official, pth)  # config inferred from the keys and shapes

    config, ema, raw = load_checkpoint_dir(out["uvit_checkpoint"])
    assert raw is None  # released files are EMA weights only
    assert config["official_config"] == TINY
    assert config["model_kwargs"] == TINY_KWARGS
    assert (config["schedule"], config["p_uncond"]) == ("vp_continuous", 0.0)
    assert config["imported_from"] == os.path.abspath(pth)
    assert ema.keys() == state.keys() and all(torch.equal(ema[k], v) for k, v in state.items())

    # the statistics as they are, named after the FID network, whose weights were checked
    stats = out["reference_stats"]
    assert stats["network"] == "inception_v3_fid" and stats["mu"].shape == (16,)
    with np.load(tiny_official / "fid_stats_tiny.npz") as f:
        np.testing.assert_array_equal(stats["sigma"], f["sigma"])
    assert inception_calls == [None]  # pytorch-fid's standard weights
    assert (Path(out["feature_network"]) / "network.json").is_file()

    # Through the catalog dataset: the staging dir is moved into place, then the EMA net samples.
    ds = DirectoryDataset(
        filepath=str(tiny_official / "data/06_models/tiny/uvit_checkpoint"),
        version=Version(None, None),
    )
    ds.save(out["uvit_checkpoint"])
    assert not Path(out["uvit_checkpoint"]).exists()
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
    out = import_official(tiny_official, pth, config=TINY)
    _, ema, _ = load_checkpoint_dir(out["uvit_checkpoint"])
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
def test_refuses_files_that_are_not_uvit_state_dicts(tiny_official, inception_calls, obj, match):
    pth = save_pth(obj, tiny_official / "x.pth")
    with pytest.raises(ValueError, match=match) as err:
        import_official(tiny_official, pth)
    assert str(err.value).startswith(pth)
    assert nothing_written(tiny_official) and inception_calls == []  # refused before anything


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
        import_official(tiny_official, pth)
    # Named config: the same key, against that config.
    with pytest.raises(
        ValueError,
        match=r"does not match config tiny_test_uvit:\n  missing key "
        r"out_blocks.0.skip_linear.weight",
    ):
        import_official(tiny_official, pth, config=TINY)
    assert nothing_written(tiny_official)


def test_shape_mismatch_names_key_and_both_shapes(tiny_official):
    state = official_state()
    state["decoder_pred.weight"] = torch.zeros(48, 32)  # a patch-4 head on a patch-2 config
    pth = save_pth(state, tiny_official / "x.pth")
    with pytest.raises(
        ValueError,
        match=r"shape mismatch for decoder_pred.weight: file has \[48, 32\], "
        r"config expects \[12, 32\]",
    ):
        import_official(tiny_official, pth, config=TINY)
    assert nothing_written(tiny_official)


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
        import_official(tiny_official, pth)
    assert not marker.exists() and nothing_written(tiny_official)
    # Control: the payload is live (an unsafe load would run it), so the check above means something.
    torch.load(pth, weights_only=False)
    assert marker.is_dir()


def test_bad_inputs_and_parameters_are_named(tiny_official):
    with pytest.raises(DatasetError, match="'data/01_raw/pretrained/nope.pth' does not exist"):
        PretrainedDataset(source="data/01_raw/pretrained/nope.pth").load()
    with pytest.raises(ParameterError, match="import_pretrained.config must be one of .*'cifar11'"):
        validate_section("import_pretrained", {"config": "cifar11"})
    (tiny_official / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        import_official(tiny_official, str(tiny_official / "text.pth"))
    # an environment without an official statistics file (catalog entry NotUsed -> None)
    pth = save_pth(official_state(), tiny_official / "x.pth")
    with pytest.raises(ValueError, match="official_fid_stats: no official statistics"):
        import_official(tiny_official, pth, official_fid_stats=None)
    assert nothing_written(tiny_official)


def test_a_checkpoint_of_another_experiment_is_refused(tiny_official, inception_calls):
    """Importing e.g. the small MS-COCO model in the deep experiment's environment would file it under
    the wrong name: the inferred configuration must be the environment's."""
    pth = save_pth(official_state(), tiny_official / "x.pth")
    with pytest.raises(ValueError, match=r"holds the tiny_test_uvit model.*--env tiny_test_uvit"):
        import_official(tiny_official, pth, preset="cifar10_uvit_small")
    assert nothing_written(tiny_official)
    import_official(tiny_official, pth, preset=TINY)  # the matching environment imports it
