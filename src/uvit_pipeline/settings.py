"""Kedro project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

import os

from kedro.config import OmegaConfigLoader

# Telemetry never prompts or phones home for this project (the `.telemetry` file says the same).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An experiment environment lists only what differs from base: nested keys are deep-merged, so an
    # override of `training.lr` keeps `training.batch_size` (kedro-conventions §2.1).
    "merge_strategy": {"parameters": "soft", "mlflow": "soft", "globals": "soft"},
}

from uvit_pipeline.hooks import LogArtifacts, ValidateParameters  # noqa: E402

HOOKS = (ValidateParameters(), LogArtifacts())
