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
        ("ingestion.root", None),
        ("training.data.num_worker", "num_workers"),
        ("fid_reference.classifier.step", "steps"),
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
        ("fid_reference.network", "clip"),
        ("ingestion.source", "laion"),
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


def test_a_list_in_params_stays_one_value():
    """Kedro 1.7 splits `--params` at every comma; the project's `kedro run` only between keys."""
    from kedro.framework.cli.utils import find_run_command

    from uvit_pipeline.cli import run, split_top_level

    assert find_run_command("uvit_pipeline") is run  # `kedro run` and `python -m uvit_pipeline`
    args = "generate.classes=[0,1,2],training.betas=[0.9,0.999],training.lr=1e-3"
    runtime = run.make_context("run", ["--params", args]).params["params"]
    assert runtime == {
        "generate": {"classes": [0, 1, 2]},
        "training": {"betas": [0.9, 0.999], "lr": 0.001},
    }
    params = load_params("demo", runtime)
    validate_all(params)
    assert params["generate"]["classes"] == [0, 1, 2] and params["training"]["betas"] == [
        0.9,
        0.999,
    ]
    assert split_top_level('generate.prompts=[a red circle, "b, c"], x={a: 1, b: 2}') == [
        'generate.prompts=[a red circle, "b, c"]',
        "x={a: 1, b: 2}",
    ]
    with pytest.raises(Exception, match="must be key=value"):
        run.make_context("run", ["--params", "generate.classes=[0,1],2"])


def test_dotted_keys_in_a_config_file(tmp_path):
    from uvit_pipeline.cli import run
    from uvit_pipeline.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    config = tmp_path / "run.yml"
    config.write_text(
        "run:\n  params:\n    ingestion.workers: 3\n    training.lr: 0.01\n"
        "    training:\n      n_steps: 7\n"
    )
    runtime = run.make_context("run", ["--config", str(config)]).params["params"]
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = CONFIG_LOADER_CLASS(str(ROOT / "conf"), env="demo", runtime_params=runtime, **args)
    check_runtime_params(loader.runtime_params, ROOT / "conf", "demo")
    params = loader["parameters"]
    validate_all(params)
    assert params["ingestion"]["workers"] == 3
    assert (params["training"]["lr"], params["training"]["n_steps"]) == (0.01, 7)
    assert params["training"]["batch_size"] == load_params("demo")["training"]["batch_size"]


def test_a_renamed_section_names_its_new_name():
    with pytest.raises(ParameterError, match="the section 'data' is now 'ingestion'"):
        check_runtime_params({"data": {"workers": 4}}, ROOT / "conf", "demo")


def test_slurm_launcher_takes_its_counts_from_the_allocation(monkeypatch):
    """`launcher.slurm: true` with null counts is valid inside an allocation (the counts come from
    SLURM's environment) and refused with one clear line outside one."""
    from uvit_pipeline.pipelines.params import ParameterError, validate_all

    params = load_params("demo")
    params["launcher"].update(slurm=True, num_processes=None, num_machines=None, machine_rank=None)
    for var in ("SLURM_JOB_ID", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ParameterError, match="SLURM_JOB_ID is not set"):
        validate_all(params)
    slurm = {"SLURM_JOB_ID": "7", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NODELIST": "localhost"}  # fmt: skip
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    validate_all(params)  # one machine, one process: the demo's batch divides
