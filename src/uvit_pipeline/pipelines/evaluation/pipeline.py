"""`evaluation`: checkpoint -> samples -> metric (FID, or demo FD) -> labelled grid -> run report."""

from kedro.pipeline import Pipeline, node

from .nodes import render_sample_grid, sample_for_evaluation, score_samples
from .report import write_run_report


def create_pipeline(**kwargs) -> Pipeline:
    models = ["uvit_checkpoint", "image_features", "text_features", "autoencoder", "decoder"]
    return Pipeline(
        [
            node(
                sample_for_evaluation,
                inputs=[*models, "params:evaluation", "params:launcher", "params:paths"],
                outputs="generated_samples",
                name="sample_for_evaluation",
                tags=["launches_child"],
            ),
            node(
                score_samples,
                inputs=[
                    "generated_samples",
                    "reference_stats",
                    "feature_network",
                    "clip_model",
                    "text_features",
                    "params:evaluation",
                    "params:launcher",
                    "params:paths",
                ],
                outputs="evaluation_metrics",
                name="score_samples",
            ),
            node(
                render_sample_grid,
                inputs=[*models, "params:evaluation"],
                outputs="sample_grid",
                name="render_sample_grid",
            ),
            node(
                write_run_report,
                inputs=[
                    "uvit_checkpoint",
                    "image_features",
                    "evaluation_metrics",
                    "sample_grid",
                    "run_overrides",
                    "params:evaluation",
                ],
                outputs="run_report",
                name="write_run_report",
            ),
        ],
        tags=["evaluation"],
    )
