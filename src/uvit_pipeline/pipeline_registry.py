"""Project pipelines: one per folder in `pipelines/`.

`__default__` is the experiment of the active environment: the stages listed under `pipelines` in its
`globals.yml` (for the demo: the generator, then ingestion to evaluation; for a paper experiment:
ingestion to evaluation, never the demo generator). `hooks.ExperimentPipelines` passes that list in
when the Kedro context is created; without it (e.g. `kedro viz` without hooks) the demo's list applies.
"""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# conf/demo/globals.yml `pipelines` (tests/pipelines/test_project.py keeps the two equal)
DEMO_STAGES = (
    "demo_data", "ingestion", "demo_autoencoder", "features", "fid_reference", "training", "evaluation",
)  # fmt: skip
_default_stages: tuple[str, ...] = DEMO_STAGES


def set_default_stages(stages) -> None:
    """Choose the stages `__default__` runs (called once per Kedro context by the project hook)."""
    global _default_stages
    stages = tuple(stages or DEMO_STAGES)
    if not stages or not all(isinstance(s, str) for s in stages):
        raise ValueError(f"globals.pipelines must be a list of pipeline names, got {stages!r}")
    _default_stages = stages


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    # Kedro 1.7 imports only the pipelines a run asks for; `__default__` exists when its stages are loaded.
    if all(name in pipelines for name in _default_stages):
        pipelines["__default__"] = sum((pipelines[n] for n in _default_stages), Pipeline([]))
    return pipelines
