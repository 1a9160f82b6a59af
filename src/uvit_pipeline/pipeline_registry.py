"""Project pipelines: one per folder in `pipelines/`.

`__default__` is the experiment of the active environment: the stages listed under `pipelines` in its
`globals.yml` (for the demo: the generator, then ingestion to evaluation; for a paper experiment:
ingestion to evaluation, never the demo generator). Kedro builds the registry before it knows the
environment, so `hooks.ExperimentPipelines` calls `use_default_stages` with the environment's list when
the Kedro context is created; until then (e.g. `kedro viz` without hooks) the demo's list applies.
"""

import difflib
from pathlib import Path

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# conf/demo/globals.yml `pipelines` (tests/pipelines/test_project.py keeps the two equal)
DEMO_STAGES = (
    "demo_data", "ingestion", "demo_autoencoder", "features", "fid_reference", "train_uvit", "evaluation",
    "serving",
)  # fmt: skip


class DefaultStages:
    """The stages `__default__` runs; changed only through `use_default_stages`."""

    stages: tuple[str, ...] = DEMO_STAGES


def use_default_stages(stages) -> bool:
    """Make `stages` (a globals.yml `pipelines` list; None = the demo's) the stages of `__default__`.

    Returns True when they differ from the current ones: the caller then rebuilds the registry."""
    stages = tuple(stages or DEMO_STAGES)
    if not all(isinstance(s, str) for s in stages):
        raise ValueError(f"globals.pipelines must be a list of pipeline names, got {stages!r}")
    changed = stages != DefaultStages.stages
    DefaultStages.stages = stages
    return changed


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    stages = DefaultStages.stages
    # Kedro 1.7 imports only the pipelines a run asks for; `__default__` exists when its stages are loaded.
    if all(name in pipelines for name in stages):
        pipelines["__default__"] = sum((pipelines[n] for n in stages), Pipeline([]))
    return pipelines


def known_pipelines() -> list[str]:
    """The registered pipeline names: one per folder of `pipelines/` with a `pipeline.py`."""
    root = Path(__file__).parent / "pipelines"
    return sorted(p.name for p in root.iterdir() if (p / "pipeline.py").is_file())


def unknown_pipeline_message(names) -> str | None:
    """None when every name is a pipeline (or `__default__`), else one sentence naming the unknown
    ones, the closest known name and the list (Kedro 1.7 reports a bare ImportError)."""
    known = known_pipelines()
    unknown = [n for n in names or [] if n not in known and n != "__default__"]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        parts.append(
            f"unknown pipeline {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    return "; ".join(parts) + f". Pipelines: {', '.join(known)} (docs/architecture.md)."
