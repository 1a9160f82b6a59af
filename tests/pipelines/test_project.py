"""Project-level behaviour through `KedroSession`, as `kedro run` uses it: each environment's default
DAG, validation before any node, the whole demo DAG with its MLflow run, reruns."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from .conftest import ROOT, TINY

DEMO_DAG = [
    "generate_demo_data", "ingest_images", "train_demo_autoencoder", "build_image_features", "prepare_feature_network",
    "compute_reference_stats", "train_uvit", "sample_for_evaluation", "score_samples",
    "render_sample_grid", "write_run_report", "log_generator_model",
]  # fmt: skip


def end_stale_mlflow_runs() -> None:
    """kedro-mlflow re-opens its run before every node and closes it once, so after a session the
    run stays on MLflow's stack of this process; `kedro run` exits, tests must close it."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


def copy_project(dst: Path) -> Path:
    """A copy of the project (code comes from the install; conf and data are the copy's)."""
    for name in ("conf", "pyproject.toml", ".telemetry"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    shutil.copytree(
        ROOT / "src", dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    (dst / "data").mkdir()
    return dst


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory) -> Path:
    """A project copy in which the whole demo DAG (shrunk to seconds) has run once."""
    project = copy_project(tmp_path_factory.mktemp("demo-project"))
    cwd = Path.cwd()
    os.chdir(project)
    try:
        with session(project, **TINY) as s:
            s.run()
    finally:
        os.chdir(cwd)
        end_stale_mlflow_runs()
    return project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


def session(project: Path, env: str | None = None, **runtime) -> KedroSession:
    bootstrap_project(project)
    return KedroSession.create(project_path=project, env=env, runtime_params=runtime or None)


def default_nodes(project: Path, env: str | None) -> list[str]:
    from kedro.framework.project import pipelines

    with session(project, env) as s:
        s.load_context()
        return [n.name for n in pipelines["__default__"].nodes]


def test_each_environment_runs_its_own_experiment(project, monkeypatch):
    monkeypatch.chdir(project)
    demo = default_nodes(project, None)  # a plain `kedro run` is the demo
    assert set(demo) == set(DEMO_DAG) and demo.index("generate_demo_data") == 0
    cifar = default_nodes(project, "cifar10_uvit_small")
    assert "generate_demo_data" not in cifar  # a paper experiment never runs the demo generator
    assert cifar[0] == "ingest_images" and "write_run_report" in cifar
    coco = default_nodes(project, "mscoco_uvit_small")
    assert "build_text_features" in coco and "generate_demo_data" not in coco


def test_fallback_default_is_the_demo_environments_list():
    """Without the project hook (e.g. kedro-viz) `__default__` falls back to the demo's stages."""
    import yaml

    from uvit_pipeline.pipeline_registry import DEMO_STAGES

    globals_ = yaml.safe_load((ROOT / "conf/demo/globals.yml").read_text())
    assert tuple(globals_["pipelines"]) == DEMO_STAGES


ENVIRONMENTS = sorted(
    p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in ("base", "local")
)
# inputs of the demo that are placeholders there: kedro-viz must not draw them
DEMO_PLACEHOLDERS = {"clip_model", "decoder", "text_encoder", "text_features", "official_fid_stats"}


def _placeholders(catalog) -> set[str]:
    from uvit_pipeline.datasets import NotUsed

    return {n for n in catalog.keys() if isinstance(catalog.get(n), NotUsed)}


def test_kedro_viz_draws_no_placeholder_inputs(project, monkeypatch):
    """What `kedro viz run` loads (its own loader, no project hooks): the demo's DAG with real inputs
    only; no pipeline has an input that is a `NotUsed` placeholder or `run_overrides`."""
    from kedro_viz.integrations.kedro.data_loader import load_data

    from uvit_pipeline.pipeline_registry import Environment

    monkeypatch.chdir(project)
    monkeypatch.delenv("KEDRO_ENV", raising=False)
    # as in a fresh `kedro viz run` process: no hook has fitted the registry yet
    monkeypatch.setattr(Environment, "fixed", None)
    catalog, registered, _ = load_data(project, env=None)
    hidden = _placeholders(catalog)
    assert DEMO_PLACEHOLDERS <= hidden
    default = registered["__default__"]
    assert {n.name for n in default.nodes} == set(DEMO_DAG)  # the same nodes as `kedro run`
    assert sorted(default.inputs() - {i for i in default.inputs() if i.startswith("params:")}) == [
        "inception_weights"  # the demo generates its raw images and trains its own autoencoder
    ]
    for name, pipeline in registered.items():
        shown = pipeline.all_inputs()
        assert not shown & (hidden | {"run_overrides"}), name


def _inputs(pipeline) -> dict[str, list[str]]:
    return {n.name: n.inputs for n in pipeline.nodes}


def _written(pipeline_name: str) -> dict[str, list[str]]:
    """Each node's inputs as its pipeline.py writes them."""
    import importlib

    module = importlib.import_module(f"uvit_pipeline.pipelines.{pipeline_name}.pipeline")
    return _inputs(module.create_pipeline())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_keeps_its_real_inputs(project, monkeypatch, env):
    """Fitted to an environment (as `kedro run --env <env>` and `kedro viz run --env <env>
    --include-hooks` see it), a node loses exactly the inputs that are placeholders there, and
    `run_overrides`; every real input stays, in its order."""
    from kedro.framework.project import pipelines

    monkeypatch.chdir(project)
    with session(project, env) as s:
        hidden = _placeholders(s.load_context().catalog) | {"run_overrides"}
        registered = {n: _inputs(pipelines[n]) for n in pipelines if n != "__default__"}
    assert set(registered) >= {"evaluation", "generate", "train_uvit", "text_features"}
    for name, pipeline in registered.items():
        for node_name, inputs in _written(name).items():
            assert pipeline[node_name] == [i for i in inputs if i not in hidden], (env, node_name)
    score = registered["evaluation"]["score_samples"]
    if env.startswith(("mscoco", "demo_t2i")):  # text-to-image: text features and CLIP are real
        assert {"text_features"} <= set(score)
        assert "text_features" in registered["train_uvit"]["train_uvit"]
    if env.startswith("mscoco"):
        assert "clip_model" in score
    if env.startswith(("imagenet256_uvit_huge", "imagenet512_uvit_huge")):  # U-ViT-H's decoder
        assert "decoder" in registered["evaluation"]["sample_for_evaluation"]
    if env not in ("demo", "demo_t2i"):  # the paper's official statistics
        assert "official_fid_stats" in registered["fid_reference"]["compute_reference_stats"]
        assert "official_fid_stats" in registered["import_pretrained"]["import_pretrained"]


def test_fixed_inputs_reach_the_node_in_place():
    """A node whose inputs lose a placeholder still gets every argument, in its place: None (or the
    fixed value) where the placeholder was, list and dict inputs alike; names, outputs and tags
    stay; Kedro binds the narrowed signature."""
    import inspect

    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    from uvit_pipeline.pipeline_registry import without_inputs

    def combine(a: int, gone, b: int, overrides: dict, c: int) -> dict:
        return {"a": a, "gone": gone, "b": b, "overrides": overrides, "c": c}

    written = Pipeline(
        [
            node(combine, ["a", "ph", "b", "run_overrides", "c"], "listed", name="n1", tags="t"),
            node(
                combine,
                {"c": "c", "b": "b", "gone": "ph", "a": "a", "overrides": "run_overrides"},
                "named",
                name="n2",
            ),
        ]
    )
    fitted = without_inputs(written, {"ph": None, "run_overrides": {"training": {"lr": 1}}})
    assert [n.inputs for n in fitted.nodes] == [["a", "b", "c"]] * 2
    assert [n.name for n in fitted.nodes] == ["n1", "n2"] and fitted.nodes[0].tags == {"t"}
    func = fitted.nodes[0].func
    assert list(inspect.signature(func).parameters) == ["a", "b", "c"]
    assert func.__wrapped__ is combine and inspect.isfunction(func)  # kedro-viz shows its code
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in {"a": 1, "b": 2, "c": 3}.items()})
    catalog["listed"], catalog["named"] = MemoryDataset(), MemoryDataset()
    SequentialRunner().run(fitted, catalog)
    expected = {"a": 1, "gone": None, "b": 2, "overrides": {"training": {"lr": 1}}, "c": 3}
    assert catalog.load("listed") == expected and catalog.load("named") == expected
    assert without_inputs(written, {}).nodes[0].func is combine  # nothing fixed: untouched


def test_invalid_parameter_fails_before_any_node(project, monkeypatch):
    monkeypatch.chdir(project)
    with session(project, training={"batch_size": 0}) as s:
        with pytest.raises(ValueError, match=r"training\.batch_size"):
            s.run()
    assert not (project / "data/01_raw").exists()  # nothing ran


def test_a_run_refused_at_load_leaves_no_mlflow_run(project, monkeypatch):
    import mlflow

    monkeypatch.chdir(project)
    with session(project) as s:  # no checkpoint yet: the generate node's input cannot load
        with pytest.raises(Exception):  # noqa: B017 - which error is the terminal's business
            s.run(pipeline_names=["generate"])
    end_stale_mlflow_runs()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert runs == []


def test_typos_are_refused_with_a_suggestion(project, monkeypatch):
    monkeypatch.chdir(project)
    with session(project, evaluation={"n_sample": 10}) as s:
        with pytest.raises(
            ValueError,
            match=r"evaluation\.n_sample is not a known parameter; did you mean 'n_samples'",
        ):
            s.run()
    with pytest.raises(
        ValueError, match="data_rot: not a known parameter; did you mean 'data_root'"
    ):
        with session(project, "cifar10_uvit_small", data_rot="/x") as s:
            s.load_context()


def test_unknown_environment_lists_the_known_ones(project, monkeypatch):
    monkeypatch.chdir(project)
    with pytest.raises(
        ValueError, match=r"Environment 'nosuchenv' does not exist.*cifar10_uvit_small"
    ):
        with session(project, "nosuchenv") as s:
            s.load_context()


@pytest.mark.slow
def test_demo_dag_end_to_end(finished_demo):
    """The whole default DAG on the demo shrunk to seconds: every stage's versioned output and the
    MLflow run (name, curves, metrics, artifacts, tags); a rerun with nothing to do leaves no run."""
    import mlflow

    project = finished_demo
    data = project / "data"
    assert (data / "01_raw/demo/imagenet/train").is_dir()
    for entry in (
        "02_intermediate/demo/image_manifest.parquet",
        "04_feature/demo/image_features",
        "05_model_input/demo/reference_stats.npz",
        "06_models/demo/uvit_checkpoint",
        "07_model_output/demo/generated_samples",
        "08_reporting/demo/sample_grid.png",
        "08_reporting/demo/run_report.html",
        "08_reporting/demo/evaluation_metrics.json",
    ):
        assert len(list((data / entry).iterdir())) == 1, entry  # one versioned copy per run
    # the report lists this run's --params (`run_overrides`, given to its node by the registry)
    report = next((data / "08_reporting/demo/run_report.html").rglob("run_report.html")).read_text()
    assert (
        "<td><code>training.n_steps</code></td>" in report
        and "the environment's values" not in report
    )

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    experiments = {e.name for e in mlflow.search_experiments()}
    assert "uvit_demo" in experiments and "uvit_pipeline" not in experiments  # no stray experiment
    (run,) = mlflow.search_runs(experiment_names=["uvit_demo"], output_format="list")
    assert run.info.status == "FINISHED" and run.info.run_name == "demo · full experiment"
    assert "demo_fd" in run.data.metrics and "fid" not in run.data.metrics
    assert 0.0 <= run.data.metrics["demo_class_accuracy"] <= 1.0
    assert run.data.params["training.n_steps"] == "6"
    assert run.data.tags["uvit_checkpoint.path"].startswith(
        str(data / "06_models/demo/uvit_checkpoint")
    )
    assert run.data.tags["raw_images.path"].endswith("data/01_raw/demo/imagenet")
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2  # from the training child
    assert "peak_mem_gib" in run.data.metrics
    # the checkpoint names the run that trained it (notebook 01 reads its curve from there)
    summary = next(Path(run.data.tags["uvit_checkpoint.path"]).rglob("summary.json"))
    assert json.loads(summary.read_text())["mlflow_run_ids"] == [run.info.run_id]
    artifacts = {
        a.path
        for folder in ("evaluation", "training")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "evaluation/sample_grid.png",
        "evaluation/run_report.html",
        "training/loss_curve.png",
    } <= artifacts
    experiment = mlflow.get_experiment_by_name("uvit_demo")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (model,) = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list"
    )  # the serving pipeline's generator, servable with `mlflow models serve`
    assert model.name == "generator" and model.source_run_id == run.info.run_id

    from uvit_pipeline.generator import load_generator  # the README's three lines

    gen = load_generator(project_path=project, device="cpu")
    images = gen(["red-circle", 3], steps=2, guidance=1.0, seed=0)
    assert gen.kind == "class" and "red-circle" in gen.class_names
    assert [im.size for im in images] == [(16, 16)] * 2

    cwd = Path.cwd()
    os.chdir(project)
    try:
        with session(project, **TINY) as s:  # everything exists: nothing runs, no empty run is left
            s.run(only_missing_outputs=True)
    finally:
        os.chdir(cwd)
        end_stale_mlflow_runs()
    assert len(mlflow.search_runs(experiment_names=["uvit_demo"], output_format="list")) == 1


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """A user's folder in the ImageNet layout (real digits, 3 classes, 16 px)."""
    pytest.importorskip("sklearn")
    from PIL import Image

    from uvit_pipeline.data.digits import digits_arrays

    root = tmp_path_factory.mktemp("my-images")
    images, labels = digits_arrays(16)
    for k in range(3):
        (root / "train" / f"digit{k}").mkdir(parents=True)
        for i in range(6):
            j = int((labels == k).nonzero()[0][i])
            Image.fromarray(images[j].transpose(1, 2, 0)).save(root / f"train/digit{k}/{j}.png")
    return root


def test_demo_on_your_own_folder_reads_it_and_never_writes_it(project, own_folder, monkeypatch):
    from uvit_pipeline.datasets import RawDirectoryDataset

    monkeypatch.chdir(project)
    with session(project, data_root=str(own_folder)) as s:
        context = s.load_context()
        from kedro.framework.project import pipelines

        nodes = [n.name for n in pipelines["__default__"].nodes]
        assert "generate_demo_data" not in nodes and nodes[0] == "ingest_images"
        raw = context.catalog.get("raw_images")
        assert isinstance(raw, RawDirectoryDataset) and raw.load() == str(own_folder)
        stores = context.catalog.get("image_features")._filepath.as_posix()
        assert f"/demo-{own_folder.name}-" in stores  # its artefacts get their own data set name
        ae = context.catalog.get("autoencoder")._filepath.as_posix()
        assert f"/demo-{own_folder.name}-" in ae  # never a version of the demo's autoencoder
    with session(project, data_root=str(own_folder)) as s:
        with pytest.raises(ValueError, match="generate_demo_data would write the raw images"):
            s.run(pipeline_names=["demo_data"])
    end_stale_mlflow_runs()
    assert default_nodes(project, None)[0] == "generate_demo_data"  # without data_root: as before


@pytest.mark.slow
def test_demo_trains_on_your_own_folder(project, own_folder, monkeypatch):
    """`kedro run --params data_root=<folder>`: the whole demo recipe (shrunk to seconds) on the
    user's images, their class names under the grid rows, the folder untouched."""
    before = _tree(own_folder)
    monkeypatch.chdir(project)
    try:
        with session(project, data_root=str(own_folder), **TINY) as s:
            s.run()
    finally:
        end_stale_mlflow_runs()
    assert _tree(own_folder) == before
    tag = f"demo-{own_folder.name}-"
    assert list((project / "data/06_models").glob(f"{tag}*/autoencoder"))  # trained on the folder
    assert len(list((project / "data/08_reporting").rglob("sample_grid.png/*/*.png"))) == 1
    assert not (project / "data/01_raw/demo").exists()  # the demo set was not generated
