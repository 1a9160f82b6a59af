"""Project hooks."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from uvit_pipeline.pipelines.validation import validate_sections


class ValidateParameters:
    """Reject invalid parameters before the first node of a run starts."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        sections = {
            name.split(":", 1)[1].split(".", 1)[0]
            for name in pipeline.inputs() | pipeline.all_inputs()
            if name.startswith("params:")
        }
        if not sections:
            return
        params = catalog.load("parameters") if "parameters" in catalog else {}
        validate_sections(params, sections)


class LogArtifacts:
    """Log a saved dataset's file to the active MLflow run when its catalog entry has
    ``metadata: {mlflow_artifact_path: <folder>}``. Unlike kedro-mlflow's MlflowArtifactDataset wrapper,
    this keeps the entry an ordinary versioned dataset (the wrapper's own save version clashes with the
    session's in Kedro 1.7)."""

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        import mlflow

        if self._catalog is None or mlflow.active_run() is None:
            return
        dataset = self._catalog.get(dataset_name)
        folder = (getattr(dataset, "metadata", None) or {}).get("mlflow_artifact_path")
        if folder is None:
            return
        path = dataset._get_load_path() if hasattr(dataset, "_get_load_path") else dataset._filepath
        mlflow.log_artifact(str(path), artifact_path=folder)
