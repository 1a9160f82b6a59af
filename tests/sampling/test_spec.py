"""SamplingSpec: one frozen value from the nodes to the sampler and the accelerate child."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from uvit_pipeline.models import UViT
from uvit_pipeline.sampling import SamplingSpec
from uvit_pipeline.training.checkpoint import export_final

KWARGS = dict(img_size=8, patch_size=2, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def _checkpoint(path, p_uncond=0.1, data=None, **kwargs):
    torch.manual_seed(0)
    model = UViT(**{**KWARGS, **kwargs})
    config = {
        "model_kwargs": {**KWARGS, **kwargs},
        "schedule": "vp_continuous",
        "p_uncond": p_uncond,
        "data": data or {"kind": "pixels", "scale_factor": 0.18215},
    }
    return export_final(path, model, model, config, {"steps": 0})


def test_json_round_trip_keeps_every_field(tmp_path):
    spec = SamplingSpec(checkpoint="c", sampler="dpm_solver", steps=3, labels=[1, 2], seed=4)
    assert spec.labels == (1, 2)  # frozen all the way down
    back = SamplingSpec.from_json(spec.to_json(tmp_path / "spec.json"))
    assert back == spec
    assert spec.to_dict()["labels"] == [1, 2]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.steps = 5


def test_unknown_keys_and_bad_weights_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['stepz'\]"):
        SamplingSpec.from_dict({"checkpoint": "c", "stepz": 3})
    with pytest.raises(ValueError, match="which must be one of"):
        SamplingSpec(checkpoint="c", which="best")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="holds no JSON object"):
        SamplingSpec.from_json(tmp_path / "bad.json")


def test_for_checkpoint_takes_classes_and_scale_from_the_checkpoint(tmp_path):
    ckpt = _checkpoint(tmp_path / "a")
    spec = SamplingSpec.for_checkpoint(
        ckpt, autoencoder="vae", text_features="t", sampler="dpm_solver", steps=3, cfg_scale=0.4
    )
    assert (spec.num_real_classes, spec.null_label) == (4, 4)
    assert spec.autoencoder is None and spec.text_features is None  # a pixel class model
    assert spec.checkpoint == str(ckpt.resolve()) and spec.scale_factor == 0.18215


def test_for_checkpoint_refuses_what_the_checkpoint_cannot_sample(tmp_path):
    plain = _checkpoint(tmp_path / "plain", p_uncond=0.0)
    with pytest.raises(ValueError, match=r"generate.cfg_scale: a CFG scale > 0 \(1.0\)"):
        SamplingSpec.for_checkpoint(
            plain, autoencoder=None, text_features=None, cfg_param="generate.cfg_scale",
            cfg_scale=1.0,
        )  # fmt: skip
    latent = _checkpoint(
        tmp_path / "latent", data={"kind": "latent_moments", "scale_factor": 0.5}, in_chans=4
    )
    with pytest.raises(ValueError, match="latent model: the catalog entry `autoencoder`"):
        SamplingSpec.for_checkpoint(latent, autoencoder=None, text_features=None)
