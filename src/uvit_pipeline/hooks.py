"""Project hooks."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from uvit_pipeline.pipelines.validation import validate_sections


class ValidateParameters:
    """Reject invalid parameters before the first node of a run starts."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        sections = {name.split(":", 1)[1].split(".", 1)[0]
                    for name in pipeline.inputs() | pipeline.all_inputs() if name.startswith("params:")}
        if not sections:
            return
        params = catalog.load("parameters") if "parameters" in catalog else {}
        validate_sections(params, sections)
