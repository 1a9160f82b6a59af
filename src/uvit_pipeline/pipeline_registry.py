"""Project pipelines: one per folder in `pipelines/`; `__default__` is the demo DAG end to end."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The stages of one experiment, raw images to an FID number (architecture §2).
DEFAULT_STAGES = ("demo_data", "ingestion", "features", "fid_reference", "training", "evaluation")


def register_pipelines() -> dict[str, Pipeline]:
    # Kedro 1.7 imports only the pipelines a run asks for; `__default__` exists when all stages are loaded.
    pipelines = find_pipelines(raise_errors=True)
    if all(name in pipelines for name in DEFAULT_STAGES):
        pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT_STAGES), Pipeline([]))
    return pipelines
