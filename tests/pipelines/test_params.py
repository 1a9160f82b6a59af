"""The parameter schema: unknown keys in any section are refused with the closest known key, bad values
with their dotted name, before any compute (pipelines/params.py)."""

from __future__ import annotations

import copy

import pytest

from uvit_pipeline.pipelines.params import (
    SCHEMA,
    ParameterError,
    check_runtime_params,
    validate_all,
)

from .conftest import ROOT, load_params


@pytest.fixture(scope="module")
def demo() -> dict:
    return load_params("demo")


def with_value(params: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(params)
    *path, last = dotted.split(".")
    node = out
    for key in path:
        node = node[key]
    node[last] = value
    return out


def test_every_section_of_base_is_in_the_schema_and_valid(demo):
    assert set(demo) == set(SCHEMA)
    validate_all(demo)


@pytest.mark.parametrize(
    ("dotted", "suggestion"),
    [
        ("evaluation.n_sample", "n_samples"),
        ("features.shardsize", "shard_size"),
        ("data.root", None),
        ("training.data.num_worker", "num_workers"),
        ("fid.classifier.step", "steps"),
        ("model.embed_dims", "embed_dim"),
        ("generate.prompt", "prompts"),
    ],
)
def test_unknown_keys_are_refused_everywhere(demo, dotted, suggestion):
    with pytest.raises(
        ParameterError, match=rf"{dotted.replace('.', '[.]')} is not a known"
    ) as err:
        validate_all(with_value(demo, dotted, 1))
    if suggestion:
        assert f"did you mean {suggestion!r}" in str(err.value)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("training.batch_size", 0),
        ("training.lr", -1.0),
        ("training.mixed_precision", "fp8"),
        ("model.patch_size", 5),
        ("model.preset", "U-ViT-XXL/2"),
        ("evaluation.sampler", "ddim"),
        ("features.batch_size", -3),
        ("features.crop", "centre"),
        ("fid.network", "clip"),
        ("data.source", "laion"),
        ("launcher.num_processes", 0),
    ],
)
def test_bad_values_name_their_parameter(demo, dotted, value):
    with pytest.raises(ValueError, match=dotted.replace(".", r"\.")):
        validate_all(with_value(demo, dotted, value))


def test_documented_no_for_mixed_precision_is_accepted(demo):
    # YAML and `--params training.mixed_precision=no` read the documented value as False
    validate_all(with_value(demo, "training.mixed_precision", False))
    with pytest.raises(ValueError, match="training.mixed_precision"):
        validate_all(with_value(demo, "training.mixed_precision", True))


def test_runtime_params_nothing_reads_are_refused():
    conf = ROOT / "conf"
    check_runtime_params({"training": {"lr": 1.0}}, conf, "demo")
    check_runtime_params({"data_root": "/x"}, conf, "cifar10_uvit_small")
    with pytest.raises(
        ParameterError, match="data_rot: not a known parameter; did you mean 'data_root'"
    ):
        check_runtime_params({"data_rot": "/x"}, conf, "cifar10_uvit_small")
    check_runtime_params({"data_root": "/x"}, conf, "demo")  # the demo on one's own images
    with pytest.raises(ParameterError, match="data_root=... is not used by environment 'demo_t2i'"):
        check_runtime_params({"data_root": "/x"}, conf, "demo_t2i")
