"""Project hooks."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from uvit_pipeline.pipelines.params import ALL_SECTIONS, validate_sections


class ValidateParameters:
    """Reject invalid parameters when the catalog is built: before any node runs and before an MLflow run
    is opened. Every section is checked, whichever pipeline runs: an experiment's configuration is valid
    as a whole or not at all."""

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        if "parameters" in catalog:
            validate_sections(catalog.load("parameters"), ALL_SECTIONS)


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
