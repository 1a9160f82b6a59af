"""Project hooks: the environment's default DAG, parameter validation, and everything MLflow.

Nodes never touch MLflow: this module names the run, tags it with where every artefact lives, logs
metrics/figures/reports from catalog entries marked for it, hands the run to training children, and
removes runs that executed no node.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from uvit_pipeline.datasets.guard import guard
from uvit_pipeline.pipelines._staging import release_run_locks
from uvit_pipeline.pipelines.params import ParameterError, check_runtime_params, validate_all

log = logging.getLogger(__name__)

# Catalog metadata keys read by `MlflowTracking` (set in conf/*/catalog.yml):
#   metadata: {mlflow: metrics}       the saved dict {name: number} is logged as metrics
#   metadata: {mlflow: artifact, mlflow_folder: evaluation}   the saved image/dict/text is an artifact
#   metadata: {mlflow: tag}           the saved/loaded location is recorded as tag `<entry>.path`
#   metadata: {mlflow_history: metrics.jsonl}   the saved directory's JSON-lines log: every complete
#                                     record the run lacks is logged as metrics (a resumed training)


# Stages that write the raw data themselves (the demo generator): never run on a user's data_root.
GENERATORS = ("demo_data",)


class ExperimentPipelines:
    """The registry built for the environment: `__default__` = the stages it lists in `globals.yml`
    under `pipelines`, less the demo generator when `--params data_root=...` names the user's own
    images; the inputs it does not have (`NotUsed` entries) and `run_overrides` (this run's
    `--params`) given to the nodes as values instead of datasets (`pipeline_registry`)."""

    @hook_impl
    def after_context_created(self, context) -> None:
        from kedro.framework.project import PACKAGE_NAME, pipelines

        from uvit_pipeline import pipeline_registry
        from uvit_pipeline.pipeline_registry import DEMO_STAGES

        loader = context.config_loader
        stages = loader["globals"].get("pipelines")
        if (loader.runtime_params or {}).get("data_root") is not None:
            # A demo pointed at the user's own folder: that folder replaces the generated set.
            stages = [s for s in stages or DEMO_STAGES if s not in GENERATORS]
        if pipeline_registry.use_environment(stages, pipeline_registry.fixed_inputs(loader)):
            pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")  # rebuild the registry

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run: a refused run leaves none
    def before_pipeline_run(self, run_params: dict, pipeline) -> None:
        """A run on the user's own images never writes them (e.g. `--pipelines demo_data`)."""
        root = (run_params.get("runtime_params") or {}).get("data_root")
        writers = sorted(n.name for n in pipeline.nodes if "raw_images" in n.outputs)
        if root is not None and writers:
            raise ParameterError(
                f"--params data_root={root}: node(s) {', '.join(writers)} would write the raw "
                "images into your folder; leave out the demo_data pipeline when you train on your "
                "own images"
            )


class ValidateParameters:
    """Reject invalid or unknown parameters before any node runs and before an MLflow run opens."""

    @hook_impl
    def after_context_created(self, context) -> None:
        loader = context.config_loader
        env = context.env or loader.default_run_env
        check_runtime_params(dict(loader.runtime_params or {}), Path(str(loader.conf_source)), env)

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        if "parameters" in catalog:
            validate_all(catalog.load("parameters"))


class CatalogGuard:
    """Every catalog entry saves atomically and names a damaged newest version on load, whatever its
    class: `datasets.guard.guard` is applied to each dataset before the run first touches it."""

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    def _guard(self, name: str) -> None:
        if self._catalog is not None and name in self._catalog:
            guard(self._catalog.get(name), name)

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str) -> None:
        self._guard(dataset_name)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str) -> None:
        self._guard(dataset_name)


class MissingInputs:
    """A run whose free inputs are missing (no checkpoint yet, no raw data) is refused before any node
    runs, with the pipeline that makes the input or the raw layout expected. `tryfirst`: plugin hooks
    run before project hooks otherwise, and kedro-mlflow opens its run in this hook."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline, catalog) -> None:
        from kedro.io import DatasetError

        from uvit_pipeline.data.sources import SOURCES
        from uvit_pipeline.datasets.directory import DirectoryDataset, RawDirectoryDataset

        # the checkpoint first: without it, nothing downstream of it matters
        for name in sorted(pipeline.inputs(), key=lambda n: (n != "uvit_checkpoint", n)):
            if name.startswith("params:") or name == "parameters" or name not in catalog:
                continue
            dataset = catalog.get(name)
            if not isinstance(dataset, DirectoryDataset) or dataset._optional:
                continue
            try:
                if dataset.exists():
                    continue
            except DatasetError:
                pass
            if isinstance(dataset, RawDirectoryDataset):
                source = (catalog.load("params:ingestion") or {}).get("source")
                spec = SOURCES.get(source)
                root = dataset.location
                raise dataset.missing(spec.layout.replace("<root>", root) if spec else "")
            raise dataset.missing()


class CheckGenerateRequest:
    """Prompts for a class-conditional checkpoint, or classes for a text model, are refused before
    any node runs (when the checkpoint exists already; the generate node checks again). In the
    `demo_t2i` data set, a prompt sharing no word with the demo's captions gets a warning."""

    def __init__(self) -> None:
        self._dataset = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._dataset = context.config_loader["globals"].get("dataset")

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline, catalog) -> None:
        from uvit_pipeline.models.checkpoint import read_checkpoint_info
        from uvit_pipeline.pipelines.generate.nodes import generate_images
        from uvit_pipeline.sampling.requests import check_requested_conditions

        # the registry may wrap a node's function (pipeline_registry.with_fixed_inputs)
        if not any(
            getattr(n.func, "__wrapped__", n.func) is generate_images for n in pipeline.nodes
        ):
            return
        from kedro.io import DatasetError

        if self._dataset == "demo_t2i":
            self._warn_unknown_words(catalog)

        try:
            checkpoint = catalog.get("uvit_checkpoint").load()
        except (DatasetError, KeyError, AttributeError):
            return  # not there yet: trained or imported in this run
        if checkpoint is None or not (Path(str(checkpoint)) / "config.json").is_file():
            return
        generate = catalog.load("params:generate")
        prompt_file = catalog.load("prompt_file") if "prompt_file" in catalog else None
        prompts = list(prompt_file or []) + list(generate.get("prompts") or [])
        check_requested_conditions(
            read_checkpoint_info(checkpoint), prompts, generate.get("classes") or []
        )

    @staticmethod
    def _warn_unknown_words(catalog) -> None:
        from uvit_pipeline.data.demo import CLASSES, COLOURS, unknown_to_demo

        prompts = list(catalog.load("params:generate").get("prompts") or [])
        if "prompt_file" in catalog:
            prompts += list(catalog.load("prompt_file") or [])
        for prompt in prompts:
            if unknown_to_demo(prompt):
                log.warning(
                    "Prompt %r shares no word with the demo's captions: the demo model knows only "
                    "its shapes (%s) in its colours (%s), sizes and places",
                    prompt,
                    ", ".join(sorted({shape for _, shape in CLASSES})),
                    ", ".join(COLOURS),
                )


class NameFailedNode:
    """Names the node an unexpected error came from (the console hides Kedro's own line for it,
    `warning_filters._ErrorsOnce`); a known error ends the run with its one `Error: …` line."""

    @hook_impl
    def on_node_error(self, error: Exception, node) -> None:
        from uvit_pipeline.errors import known_error

        if known_error(error) is None:
            log.error("Node %s failed: %s: %s", node.name, type(error).__name__, error)


class RunSummary:
    """After a `kedro run` that ran nodes: the metrics it saved, where its images and report are, and
    its MLflow run's address. Where generated images end up is logged as soon as they are saved
    (the generate node writes them to a staging folder first)."""

    IMAGES = ("generated_images",)

    def __init__(self) -> None:
        self._catalog = None
        self._reset()

    def _reset(self) -> None:
        self._metrics: dict[str, float] = {}
        self._files: list[tuple[str, str]] = []
        self._run: tuple[str, str] | None = None
        self._nodes = 0

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def before_pipeline_run(self) -> None:
        import mlflow

        self._reset()
        run = mlflow.active_run()  # kedro-mlflow's (plugin hooks run before project hooks)
        if run is not None:
            self._run = (run.info.experiment_id, run.info.run_id)

    @hook_impl
    def before_node_run(self) -> None:
        self._nodes += 1

    def _saved_path(self, name: str) -> str | None:
        """Where the entry's save just went: the version folder of this run when versioned."""
        dataset = self._catalog.get(name) if self._catalog is not None else None
        filepath = getattr(dataset, "_filepath", None)
        if filepath is None:
            return None
        if getattr(dataset, "_version", None) is not None:
            return dataset._get_versioned_path(dataset.resolve_save_version()).as_posix()
        return str(filepath)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        meta = getattr(self._catalog.get(dataset_name), "metadata", None) or {}
        if meta.get("mlflow") == "metrics" and isinstance(data, dict):
            self._metrics.update({k: v for k, v in data.items() if isinstance(v, int | float)})
        path = self._saved_path(dataset_name)
        if path is None:
            return
        if dataset_name in self.IMAGES:
            log.info("Images saved to %s", path)
            self._files.append((dataset_name, path))
        elif (
            path.endswith((".png", ".html"))
            and meta.get("kedro-viz", {}).get("layer") == "reporting"
        ):
            self._files.append((dataset_name, path))

    @hook_impl
    def after_pipeline_run(self) -> None:
        if not self._nodes:
            return
        lines = ["Summary of this run:"]
        if self._metrics:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(self._metrics.items()))
            lines.append(f"  metrics: {shown}")
        lines += [f"  {name}: {path}" for name, path in self._files]
        url = mlflow_run_url(*self._run) if self._run else None
        if url:
            lines.append(f"  MLflow run: {url}")
        log.info("\n".join(lines))


def mlflow_run_url(experiment_id: str, run_id: str, tracking_uri: str | None = None) -> str:
    """The run's page in the MLflow UI: on the tracking server for an http(s) store, else on
    `mlflow ui --backend-store-uri <store>` at its default address (README "Inspecting runs")."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


class RunLocks:
    """Releases the folder locks nodes took for the run (`pipelines._staging.hold_for_run`) once the
    run has saved its outputs, or failed."""

    @hook_impl
    def after_pipeline_run(self) -> None:
        release_run_locks()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self.after_pipeline_run()


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


PID_TAG, HOST_TAG = "uvit.pid", "uvit.host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def mark_orphaned_runs(client=None) -> list[str]:
    """Mark KILLED every RUNNING MLflow run opened on this host by a process that no longer exists
    (a `kedro run` killed with SIGKILL never ends its run); returns their ids."""
    import mlflow

    client = client or mlflow.MlflowClient()
    host = socket.gethostname()
    killed = []
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = (
            client.search_runs(
                experiments,
                filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                max_results=1000,
            )
            if experiments
            else []
        )
    except Exception as err:  # tracking store unreachable: this is housekeeping, not the run
        log.warning("Could not look for orphaned MLflow runs: %s", err)
        return killed
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
            log.warning(
                "MLflow run %s (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                run.info.run_id,
                run.data.tags.get("mlflow.runName", ""),
                pid,
            )
    return killed


class MlflowTracking:
    """Run name, tags, metrics and artifacts of the kedro-mlflow run; training children join it."""

    CHILD_TAG = "launches_child"  # nodes whose accelerate children log into the run

    def __init__(self) -> None:
        self._catalog = None
        self._env = None
        self._names: list[str] = []
        self._nodes_run = 0
        self._named = False
        self._saved_env: dict[str, str | None] = {}
        self._reused: str | None = None  # a run active before this session (never removed)

    @staticmethod
    def _run():
        import mlflow

        return mlflow.active_run()

    @hook_impl
    def after_context_created(self, context) -> None:
        self._env = context.env or context.config_loader.default_run_env
        active = self._run()
        self._reused = active.info.run_id if active is not None else None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def before_pipeline_run(self, run_params: dict) -> None:
        self._names = list(run_params.get("pipeline_names") or ["__default__"])
        self._nodes_run, self._named = 0, False
        self._started_ms = int(time.time() * 1000)
        mark_orphaned_runs()
        self._name_run()

    def _name_run(self) -> None:
        """Name and tag the run once it exists (kedro-mlflow opens it in its own hook)."""
        import mlflow

        run = self._run()
        if run is None or self._named:
            return
        mlflow.set_tag("mlflow.runName", f"{self._env} · {self._what_ran()}")
        # Who runs it: a later start marks the run KILLED if this process is gone (kill -9).
        tags = {"kedro.env": self._env, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        commit = _git_commit(Path.cwd())
        if commit:
            tags["git.commit"] = commit
        mlflow.set_tags(tags)
        # Open the experiment in MLflow's model-training view, not the GenAI one.
        mlflow.MlflowClient().set_experiment_tag(
            run.info.experiment_id, "mlflow.experimentKind", "custom_model_development"
        )
        self._named = True

    def _what_ran(self) -> str:
        """The run's name after the environment: its pipelines ("full experiment" for the default
        DAG), and for `generate` how many prompts or classes it was asked for."""
        names = ["full experiment" if n == "__default__" else n for n in self._names]
        label = " + ".join(names)
        if "generate" in self._names and self._catalog is not None:
            try:
                generate = self._catalog.load("params:generate")
                prompts = len(generate["prompts"]) + len(self._catalog.load("prompt_file") or [])
            except Exception:  # the run itself reports a bad prompt file or parameter
                return label
            classes = len(generate["classes"])
            if prompts:
                label += f" ({prompts} prompt{'s' * (prompts != 1)})"
            elif classes:
                label += f" ({classes} class{'es' * (classes != 1)})"
        return label

    @hook_impl
    def before_node_run(self, node) -> None:
        import mlflow

        self._nodes_run += 1
        self._name_run()
        run = self._run()
        if run is None or self.CHILD_TAG not in node.tags:
            return
        # The accelerate child logs its curves into this run, in this experiment (no stray one).
        experiment = mlflow.get_experiment(run.info.experiment_id)
        child_env = {
            "MLFLOW_RUN_ID": run.info.run_id,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
            "MLFLOW_EXPERIMENT_NAME": experiment.name,
            "MLFLOW_EXPERIMENT_ID": run.info.experiment_id,
        }
        self._saved_env = {k: os.environ.get(k) for k in child_env}
        os.environ.update(child_env)

    def _after_child(self) -> None:
        import mlflow

        if not self._saved_env:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        run = self._run()
        if run is not None:
            # MLflow's exit handler in the child marked the shared run FINISHED; it is still running.
            mlflow.MlflowClient().update_run(run.info.run_id, status="RUNNING")

    @hook_impl
    def after_node_run(self, node) -> None:
        self._after_child()

    @hook_impl
    def on_node_error(self, node) -> None:
        self._after_child()

    def _metadata(self, name: str) -> dict:
        if self._catalog is None or name not in self._catalog:
            return {}
        dataset = self._catalog.get(name)
        return getattr(dataset, "metadata", None) or {}

    def _tag_location(self, name: str, data: Any) -> None:
        import mlflow

        dataset = self._catalog.get(name) if self._catalog is not None else None
        where = getattr(dataset, "location", None)
        if where is None and isinstance(data, str) and Path(data).exists():
            where = data
        if where is not None:
            mlflow.set_tag(f"{name}.path", str(where))

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any) -> None:
        if self._run() is not None and self._metadata(dataset_name).get("mlflow") == "tag":
            self._tag_location(dataset_name, data)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        import mlflow

        meta = self._metadata(dataset_name)
        kind = meta.get("mlflow")
        if self._run() is None or kind is None:
            return
        if meta.get("mlflow_history"):
            self._log_history(dataset_name, meta["mlflow_history"])
            self._link_attempts(dataset_name)
        if kind == "tag":
            self._tag_location(dataset_name, data)
        elif kind == "metrics":
            numbers = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
            mlflow.log_metrics(numbers)
        elif kind == "artifact":
            folder = meta.get("mlflow_folder", "outputs")
            filename = meta.get("mlflow_file", dataset_name)
            if hasattr(data, "save") and hasattr(data, "size"):  # a PIL image
                mlflow.log_image(data, artifact_file=f"{folder}/{filename}.png")
            elif isinstance(data, dict | list):
                mlflow.log_dict(data, f"{folder}/{filename}.json")
            elif isinstance(data, str):
                mlflow.log_text(data, f"{folder}/{filename}")
        else:
            raise ValueError(f"catalog entry {dataset_name}: unknown metadata mlflow={kind!r}")

    def _log_history(self, name: str, filename: str) -> None:
        """Log every complete record of the entry's JSON-lines history (`metadata: mlflow_history`)
        that the run does not hold yet: a resumed training logged only its own steps live."""
        import mlflow
        from mlflow.entities import Metric

        from uvit_pipeline.training.monitor import read_jsonl

        where = getattr(self._catalog.get(name), "location", None)
        path = Path(str(where)) / filename if where else None
        if path is None or not path.is_file():
            return
        run_id = self._run().info.run_id
        client = mlflow.MlflowClient()
        logged = {m.step for m in client.get_metric_history(run_id, "loss")}
        metrics = [
            Metric(key, float(value), int(float(r.get("time", time.time())) * 1000), int(r["step"]))
            for r in read_jsonl(path)
            if isinstance(r.get("step"), int) and r["step"] not in logged
            for key, value in r.items()
            if key not in ("step", "time") and isinstance(value, int | float)
        ]
        for lo in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[lo : lo + 1000])
        if metrics:
            log.info("Logged %d earlier metric values of %s to MLflow", len(metrics), path)

    def _link_attempts(self, name: str) -> None:
        """A resumed training: this run now holds the whole curve (`_log_history`); the runs of the
        interrupted attempts (`mlflow_run_ids` of the export's summary.json) point to it, and it to
        them, so the MLflow UI shows which run to read."""
        import mlflow

        from uvit_pipeline._io import read_json

        where = getattr(self._catalog.get(name), "location", None)
        summary = Path(str(where)) / "summary.json" if where else None
        if summary is None or not summary.is_file():
            return
        current = self._run().info.run_id
        earlier = [
            i for i in read_json(summary, "").get("mlflow_run_ids") or [] if i and i != current
        ]
        client = mlflow.MlflowClient()
        for run_id in earlier:
            try:
                old = client.get_run(run_id)
            except mlflow.exceptions.MlflowException:
                continue  # deleted, or in another tracking store
            client.set_tag(run_id, "uvit.continued_in_run", current)
            if "resumed in" not in (old.info.run_name or ""):
                client.set_tag(
                    run_id, "mlflow.runName", f"{old.info.run_name} (resumed in {current[:8]})"
                )
        if earlier:
            mlflow.set_tag("uvit.resumes_runs", ",".join(earlier))
            log.info(
                "Training resumed from MLflow run(s) %s; this run holds the whole curve", earlier
            )

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._drop_if_empty()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._drop_if_empty()  # refused before any node ran (e.g. an input that cannot load)

    def _drop_if_empty(self) -> None:
        import mlflow

        if self._nodes_run:
            return
        # Nothing was executed (e.g. --only-missing-outputs after a finished run): leave no run.
        # kedro-mlflow may already have ended the run it opened for this pipeline run.
        run = self._run() or mlflow.last_active_run()
        if run is None or run.info.run_id == self._reused:
            return  # a run opened before this session belongs to someone else
        if run.info.start_time is not None and run.info.start_time < self._started_ms - 1000:
            return
        log.info("No node ran; removing the empty MLflow run %s", run.info.run_id)
        if self._run() is not None:
            mlflow.end_run()
        mlflow.delete_run(run.info.run_id)
