"""TrainConfig: round trip, resolved model kwargs, and errors that name the dotted parameter."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from uvit_pipeline.fields import parameters
from uvit_pipeline.training import DataConfig, TrainConfig
from uvit_pipeline.training.config import section_fields

from .conftest import TINY_MODEL


def _base(**overrides) -> dict:
    d = dict(model=dict(TINY_MODEL), data={"path": "/features"}, run_dir="/runs/x", batch_size=8)
    d.update(overrides)
    return d


def test_round_trip_and_defaults():
    cfg = TrainConfig.from_dict(_base(betas=[0.9, 0.9]))
    assert cfg.validate() is cfg
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.betas == (0.9, 0.9)
    # §4.4 defaults
    assert (cfg.weight_decay, cfg.ema_rate, cfg.seed) == (0.03, 0.9999, 1234)


def test_model_kwargs_merge_preset_and_training_options():
    cfg = TrainConfig.from_dict(
        _base(
            model={"preset": "U-ViT-S/2", "img_size": 32, "in_chans": 3},
            gradient_checkpointing=True,
        )
    )
    kw = cfg.validate().model_kwargs()
    assert (kw["embed_dim"], kw["depth"], kw["patch_size"]) == (512, 12, 2)
    assert kw["use_checkpoint"] is True and kw["attention"] == "sdpa"


def test_null_label_is_last_class():
    cfg = TrainConfig.from_dict(_base(model={**TINY_MODEL, "num_classes": 11}, p_uncond=0.1))
    assert cfg.validate().null_label() == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "training.batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "training.batch_size"),
        ({"lr": -1.0}, "training.lr"),
        ({"lr": "fast"}, "training.lr"),
        ({"n_steps": 0}, "training.n_steps"),
        ({"warmup_steps": -1}, "training.warmup_steps"),
        ({"betas": [0.9]}, "training.betas"),
        ({"ema_rate": 1.5}, "training.ema_rate"),
        ({"weight_decay": -0.1}, "training.weight_decay"),
        ({"mixed_precision": "fp8"}, "training.mixed_precision"),
        ({"schedule": "cosine"}, "training.schedule"),
        ({"attention": "flash3"}, "training.attention"),
        ({"save_interval": 0}, "training.save_interval"),
        ({"keep_last": 0}, "training.keep_last"),
        ({"run_dir": ""}, "training.run_dir"),
        ({"p_uncond": 0.1}, "training.p_uncond"),  # unconditional model has no null class
        ({"model": {**TINY_MODEL, "patch_size": 3}}, "model.patch_size"),
        ({"model": {**TINY_MODEL, "num_heads": 5}}, "model.num_heads"),
        ({"model": {**TINY_MODEL, "depthh": 3}}, "model.depthh"),
        ({"model": {**TINY_MODEL, "use_checkpoint": True}}, "model.use_checkpoint"),
        ({"model": {"preset": "U-ViT-XXL/1", "img_size": 8, "in_chans": 3}}, "model.preset"),
        ({"model": {"patch_size": 2}}, "model.img_size is required"),
        ({"data": {"path": ""}}, "training.data.path"),
        ({"data": {"path": "/f", "kind": "jpeg"}}, "training.data.kind"),
        ({"data": {"path": "/f", "num_workers": -1}}, "training.data.num_workers"),
        ({"data": {"path": "/f", "kind": "latent_moments"}}, "model.in_chans"),
    ],
)
def test_validate_names_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        TrainConfig.from_dict(_base(**overrides)).validate()


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"training\.bacth_size"):
        TrainConfig.from_dict(_base(bacth_size=8))
    with pytest.raises(ValueError, match=r"training\.data\.pth"):
        TrainConfig.from_dict(_base(data={"pth": "/f"}))


def test_batch_must_split_over_processes():
    cfg = TrainConfig.from_dict(_base(batch_size=6))
    cfg.validate(num_processes=2)
    with pytest.raises(ValueError, match=r"training\.batch_size \(6\) must be divisible.*4"):
        cfg.validate(num_processes=4)


def test_one_set_of_defaults_the_values_of_conf_base():
    """The declared defaults are conf/base's values: no second, disagreeing set in code."""
    conf = Path(__file__).resolve().parents[2] / "conf" / "base"
    base = yaml.safe_load((conf / "parameters_training.yml").read_text())["training"]
    fields = section_fields()["training"]
    assert set(base) == set(fields)
    for name, value in base.items():
        if name == "data":
            declared = {k: f.default for k, f in parameters(DataConfig).items()}
            assert value == declared
        else:
            default = TrainConfig().to_dict()[name]
            assert default == (list(value) if name == "betas" else value), name
    model = yaml.safe_load((conf / "parameters_model.yml").read_text())["model"]
    assert set(model) <= set(section_fields()["model"]) and TrainConfig().model == model


def test_every_parameter_declares_a_check_and_help():
    for section, fields in section_fields().items():
        flat = {**fields, **fields.get("data", {})} if section == "training" else fields
        for name, f in flat.items():
            if isinstance(f, dict):
                continue
            assert callable(f.metadata["check"]) and f.metadata["help"], f"{section}.{name}"
    assert not {f.name for f in dataclasses.fields(TrainConfig)} - {
        *parameters(TrainConfig),
        "model",
        "data",
        "run_dir",
        "cpu",
    }
