"""CheckpointInfo: the one typed reading of a checkpoint's config.json."""

from __future__ import annotations

import json

import pytest

from uvit_pipeline.models import CheckpointInfo, label_roles, read_checkpoint_info

KWARGS = {"img_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize(
    ("num_classes", "clip_dim", "p_uncond", "roles"),
    [
        (11, None, 0.1, (10, 10)),  # label dropping: the last index is the null class (§1.1)
        (10, None, 0.0, (10, None)),
        (-1, None, 0.1, (None, None)),  # unconditional
        (-1, 64, 0.1, (None, None)),  # text: the null condition is the empty prompt (§4.3)
        (None, None, 0.1, (None, None)),
    ],
)
def test_label_roles(num_classes, clip_dim, p_uncond, roles):
    assert label_roles(num_classes, clip_dim, p_uncond) == roles


def _write(tmp_path, config):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_reads_a_latent_class_checkpoint(tmp_path):
    config = {
        "model_kwargs": {**KWARGS, "in_chans": 4, "num_classes": 5},
        "schedule": "discrete",
        "p_uncond": 0.15,
        "data": {"kind": "latent_moments", "scale_factor": 0.23010},
    }
    info = read_checkpoint_info(_write(tmp_path / "c", config))
    assert (info.num_real_classes, info.null_label) == (4, 4)
    assert info.is_latent and not info.is_text and info.scale_factor == 0.23010
    assert info.sample_shape == (4, 8, 8) and info.context_shape is None
    assert info.schedule == "discrete" and info.config == config


def test_reads_a_text_checkpoint_and_its_encoder(tmp_path):
    encoder = {"name": "clip", "sha256": "ab"}
    config = {
        "model_kwargs": {**KWARGS, "clip_dim": 16, "num_clip_token": 5},
        "schedule": "discrete",
        "p_uncond": 0.1,
        "text_encoder": encoder,
    }
    info = read_checkpoint_info(_write(tmp_path / "t", config))
    assert info.is_text and info.null_label is None and info.context_shape == (5, 16)
    assert info.text_encoder == encoder and info.data_kind == "pixels"


def test_a_bad_config_is_named(tmp_path):
    with pytest.raises(ValueError, match="config.json has no 'model_kwargs'"):
        CheckpointInfo.from_config({"schedule": "discrete"}, tmp_path)
    with pytest.raises(ValueError, match="model_kwargs.depthh is not a UViT argument"):
        CheckpointInfo.from_config({"model_kwargs": {"depthh": 2}, "schedule": "x"}, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint_info(tmp_path / "missing")
