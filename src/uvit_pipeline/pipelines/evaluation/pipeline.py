"""`evaluation`: checkpoint -> samples -> metric (FID, or demo FD) -> labelled grid -> run report."""

from .._nodes import node, stage
from .nodes import render_sample_grid, sample_for_evaluation, score_samples
from .report import write_run_report


def create_pipeline(**kwargs):
    return stage(
        "evaluation",
        node(sample_for_evaluation, "generated_samples", tags=["launches_child"]),
        node(score_samples, "evaluation_metrics"),
        node(render_sample_grid, "sample_grid"),
        node(write_run_report, "run_report"),
    )
