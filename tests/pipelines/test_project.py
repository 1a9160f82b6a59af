"""Project-level tests: pipeline registry, parameter validation, and the whole demo DAG in `conf/test`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from uvit_pipeline.pipelines.params import validate_sections

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["demo_data", "ingestion", "features", "fid_reference", "training", "evaluation"]


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory) -> Path:
    """A copy of the project (code is imported from the install; conf and data are the copy's)."""
    dst = tmp_path_factory.mktemp("project")
    for name in ("conf", "pyproject.toml", ".telemetry"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    shutil.copytree(
        ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for layer in (
        "01_raw",
        "02_intermediate",
        "04_feature",
        "05_model_input",
        "06_models",
        "07_model_output",
        "08_reporting",
    ):
        (dst / "data" / layer).mkdir(parents=True)
    return dst


def test_registry_has_every_stage_and_default_is_the_demo_dag():
    bootstrap_project(ROOT)
    from kedro.framework.project import pipelines

    for name in STAGES:
        assert name in pipelines, name
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert {
        "generate_demo_data",
        "ingest_images",
        "build_image_features",
        "prepare_feature_network",
        "compute_reference_stats",
        "train_uvit",
        "evaluate",
    } <= default_nodes
    # The DAG is connected from raw data to the metric.
    order = [n.name for n in pipelines["__default__"].nodes]
    assert order.index("generate_demo_data") < order.index("train_uvit") < order.index("evaluate")


def _base_params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "conf/base/parameters.yml").read_text())


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("training", "batch_size", 0, "training.batch_size"),
        ("training", "lr", -1.0, "training.lr"),
        ("model", "patch_size", 5, "model.patch_size"),
        ("model", "preset", "U-ViT-XXL/2", "model.preset"),
        ("evaluation", "sampler", "ddim", "evaluation.sampler"),
        ("features", "batch_size", -3, "features.batch_size"),
        ("fid", "network", "clip", "fid.network"),
    ],
)
def test_invalid_parameters_are_rejected_with_their_dotted_name(section, key, value, message):
    params = _base_params()
    params[section][key] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_sections(
            params, {"data", "features", "model", "training", "launcher", "fid", "evaluation"}
        )


def test_base_parameters_are_valid():
    validate_sections(
        _base_params(), {"data", "features", "model", "training", "launcher", "fid", "evaluation"}
    )


def test_invalid_parameter_fails_the_run_before_any_node(project_copy, monkeypatch):
    monkeypatch.chdir(project_copy)
    bootstrap_project(project_copy)
    with KedroSession.create(
        project_path=project_copy, env="test", runtime_params={"training": {"batch_size": 0}}
    ) as session:
        with pytest.raises(ValueError, match=r"training\.batch_size"):
            session.run(pipeline_names=["__default__"])
    assert not (project_copy / "data/01_raw/demo/imagenet").exists()  # nothing ran


@pytest.mark.slow
def test_demo_dag_end_to_end(project_copy, monkeypatch):
    """The whole default DAG on the test-sized demo: every stage's versioned output, MLflow run content."""
    import mlflow

    monkeypatch.chdir(project_copy)
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env="test") as session:
        session.run(pipeline_names=["__default__"])

    data = project_copy / "data"
    assert (data / "01_raw/demo/imagenet/train").is_dir()
    assert (data / "01_raw/demo/coco/annotations/captions_train2014.json").is_file()
    for entry in (
        "02_intermediate/test/image_manifest.parquet",
        "04_feature/test/image_features",
        "05_model_input/test/reference_stats.npz",
        "06_models/test/uvit_checkpoint",
        "08_reporting/test/sample_grid.png",
    ):
        versions = list((data / entry).iterdir())
        assert len(versions) == 1, entry  # one versioned copy per run

    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["uvit_test"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert "demo_fd" in run.data.metrics and "fid" not in run.data.metrics
    assert 0.0 <= run.data.metrics["demo_class_accuracy"] <= 1.0
    assert run.data.params["training.n_steps"] == "20"
    loss = mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(loss) >= 2  # the loss curve, logged by rank 0 of the training child
    artifacts = {
        a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")
    }
    assert "evaluation/sample_grid.png" in artifacts
