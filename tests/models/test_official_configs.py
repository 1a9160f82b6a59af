"""The official configuration values (models/official_configs.json) are the single source of the
official model kwargs and diffusion settings; UViTConfig holds the constructor's defaults and checks."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest
import torch

from uvit_pipeline.models import (
    OFFICIAL_CONFIGS,
    PRESETS,
    UViT,
    UViTConfig,
    load_official_configs,
    official_config,
)
from uvit_pipeline.models.config import GEOMETRY_KEYS, official_nnet_kwargs
from uvit_pipeline.models.official import OFFICIAL_DIFFUSION, expected_shapes
from uvit_pipeline.training import TrainConfig

from .test_state_dict import EXPECTED_PARAMS

CONFIGS = load_official_configs()
# docs/reference.md §3.2 / §9.1, written out here as an independent check of the file.
TRAIN_SCRIPTS = {
    "cifar10_uvit_small": "train.py",
    "celeba64_uvit_small": "train.py",
    "imagenet64_uvit_mid": "train.py",
    "imagenet64_uvit_large": "train.py",
    "imagenet256_uvit_large": "train_ldm.py",
    "imagenet256_uvit_huge": "train_ldm_discrete.py",
    "imagenet512_uvit_large": "train_ldm.py",
    "imagenet512_uvit_huge": "train_ldm_discrete.py",
    "mscoco_uvit_small": "train_t2i_discrete.py",
    "mscoco_uvit_small_deep": "train_t2i_discrete.py",
}
# The paper backbone each official config uses (§2.4, §3.1).
BACKBONE = {
    "cifar10_uvit_small": "U-ViT-S/2",
    "celeba64_uvit_small": "U-ViT-S/4",
    "imagenet64_uvit_mid": "U-ViT-M/4",
    "imagenet64_uvit_large": "U-ViT-L/4",
    "imagenet256_uvit_large": "U-ViT-L/2",
    "imagenet256_uvit_huge": "U-ViT-H/2",
    "imagenet512_uvit_large": "U-ViT-L/4",
    "imagenet512_uvit_huge": "U-ViT-H/4",
    "mscoco_uvit_small": "U-ViT-S/2",
    "mscoco_uvit_small_deep": "U-ViT-S/2-Deep",
}
# The original constructor's defaults (§1).
ORIGINAL_DEFAULTS = dict(
    img_size=224,
    patch_size=16,
    in_chans=3,
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_ratio=4.0,
    qkv_bias=False,
    qk_scale=None,
    mlp_time_embed=False,
    num_classes=-1,
    use_checkpoint=False,
    conv=True,
    skip=True,
)


def test_file_lists_every_official_config_with_the_facts_the_code_needs():
    assert set(CONFIGS) == set(EXPECTED_PARAMS) == set(TRAIN_SCRIPTS)
    for name, cfg in CONFIGS.items():
        assert cfg["train.script"] == TRAIN_SCRIPTS[name], name
        discrete = cfg["train.script"].endswith("_discrete.py")
        assert cfg["schedule"] == ("discrete" if discrete else "vp_continuous"), name
        assert cfg["seed"] == 1234 and cfg["optimizer.weight_decay"] == 0.03
        assert len(ast.literal_eval(cfg["optimizer.betas"])) == 2
        assert 2 < cfg["paper_fid"] < 6
        assert all(f"nnet.{k}" in cfg for k in GEOMETRY_KEYS), name
    assert CONFIGS["imagenet256_uvit_huge"]["paper_fid"] == 2.29
    assert CONFIGS["imagenet256_uvit_large"]["dataset.p_uncond"] == 0.15  # §8, baofff/U-ViT#14


def test_deep_coco_is_the_small_config_with_depth_16():
    deep, small = dict(CONFIGS["mscoco_uvit_small_deep"]), dict(CONFIGS["mscoco_uvit_small"])
    assert deep.pop("derived_from") == "mscoco_uvit_small"
    assert (deep.pop("nnet.depth"), small.pop("nnet.depth")) == (16, 12)
    assert (deep.pop("paper_fid"), small.pop("paper_fid")) == (5.48, 5.95)
    assert deep == small


def test_loader_returns_copies_and_names_unknown_configs():
    official_config("cifar10_uvit_small")["nnet.depth"] = 99
    load_official_configs()["cifar10_uvit_small"]["nnet.depth"] = 99
    assert official_config("cifar10_uvit_small")["nnet.depth"] == 12
    with pytest.raises(ValueError, match="unknown official config 'cifar11'.*cifar10_uvit_small"):
        official_config("cifar11")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_official_nnet_dict_constructs_the_model_as_is(name):
    nnet = official_nnet_kwargs(name)  # e.g. no in_chans for CIFAR-10 / CelebA: default 3
    with torch.device("meta"):
        model = UViT(**nnet)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]  # §2.4
    assert OFFICIAL_CONFIGS[name] == model.config == UViTConfig(**nnet).to_dict()
    assert {k: OFFICIAL_CONFIGS[name][k] for k in nnet} == nnet
    assert expected_shapes(UViTConfig(**nnet)) == expected_shapes(nnet)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_paper_backbones_agree_with_the_official_configs(name):
    backbone = PRESETS[BACKBONE[name]]
    assert {k: OFFICIAL_CONFIGS[name][k] for k in backbone} == backbone


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_official_diffusion_is_read_from_the_file(name):
    cfg, diff = CONFIGS[name], OFFICIAL_DIFFUSION[name]
    assert diff["schedule"] == cfg["schedule"]
    assert diff["p_uncond"] == (cfg["dataset.p_uncond"] if cfg.get("dataset.cfg") else 0.0)
    if name.startswith(("imagenet256", "imagenet512", "mscoco")):  # latent configs (§3.1)
        want = 0.2301 if name.startswith("mscoco") else 0.18215  # §4.5
        assert diff["data"] == {"kind": "latent_moments", "scale_factor": want}
    else:
        assert diff["data"] == {"kind": "pixels"}
        assert diff["p_uncond"] == 0.0


def test_uvit_signature_equals_uvitconfig_and_the_original_defaults():
    params = list(inspect.signature(UViT).parameters.values())
    fields = dataclasses.fields(UViTConfig)
    assert [p.name for p in params] == [f.name for f in fields]  # UViT passes them positionally
    assert [p.default for p in params] == [f.default for f in fields]
    assert {k: v for k, v in UViTConfig().to_dict().items() if k in ORIGINAL_DEFAULTS} == (
        ORIGINAL_DEFAULTS
    )
    with torch.device("meta"):
        assert UViT().config == UViTConfig().to_dict()


TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"patch_size": 5}, "model.patch_size (5) must divide model.img_size (32)"),
        ({"num_heads": 3}, "model.num_heads (3) must divide model.embed_dim (32)"),
        ({"depth": -1}, "model.depth must be a non-negative integer"),
        ({"in_chans": 0}, "model.in_chans must be a positive integer, got 0"),
        ({"img_size": 32.0}, "model.img_size must be a positive integer"),
        ({"mlp_ratio": 0}, "model.mlp_ratio must be a number > 0"),
        ({"qk_scale": -1.0}, "model.qk_scale must be None or > 0"),
        ({"conv": "false"}, "model.conv must be true or false"),
        ({"num_classes": 2.0}, "model.num_classes must be an integer"),
        ({"clip_dim": 8}, "model.clip_dim and model.num_clip_token must be given together"),
        ({"clip_dim": 8, "num_clip_token": 2, "num_classes": 3}, "model.num_classes > 0"),
        ({"attention": "flash"}, "model.attention: attention must be one of"),
        ({"checkpoint_every": 0}, "model.checkpoint_every must be a positive integer"),
    ],
)
def test_validate_names_the_dotted_parameter(override, message):
    with pytest.raises(ValueError) as err:
        UViTConfig(**{**TINY, **override}).validate()
    assert message in str(err.value)
    with pytest.raises(ValueError) as err:  # the model reports the bare argument name
        UViT(**{**TINY, **override})
    assert message.replace("model.", "") in str(err.value)


def test_from_kwargs_names_unknown_arguments():
    with pytest.raises(ValueError, match=r"model\.depht is not a UViT argument"):
        UViTConfig.from_kwargs({**TINY, "depht": 2})
    assert UViTConfig.from_kwargs(TINY).validate() == UViTConfig(**TINY)


def test_training_accepts_an_official_nnet_dict():
    nnet = official_nnet_kwargs("cifar10_uvit_small")  # states no in_chans (§3.1)
    cfg = TrainConfig.from_dict(
        dict(model=nnet, data={"path": "/features"}, run_dir="/runs/x", batch_size=8)
    ).validate()
    kwargs = cfg.model_kwargs()
    assert kwargs["in_chans"] == 3 and kwargs["embed_dim"] == 512
    with pytest.raises(ValueError, match=r"model\.patch_size \(3\) must divide model\.img_size"):
        TrainConfig.from_dict(
            dict(model={**nnet, "patch_size": 3}, data={"path": "/f"}, run_dir="/r")
        ).validate()
