"""`evaluation`: checkpoint -> samples -> metric (FID, or demo FD) -> labelled grid -> run report."""

from kedro.pipeline import Node, Pipeline

from .nodes import render_sample_grid, sample_for_evaluation, score_samples
from .report import write_run_report

_MODEL = ["uvit_checkpoint", "image_features", "text_features", "autoencoder", "decoder"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=sample_for_evaluation,
                inputs=[*_MODEL, "params:evaluation", "params:paths"],
                outputs="generated_samples",
                name="sample_for_evaluation",
                tags=["launches_child"],
            ),
            Node(
                func=score_samples,
                inputs=[
                    "generated_samples",
                    "reference_stats",
                    "feature_network",
                    "clip_model",
                    "text_features",
                    "params:evaluation",
                ],
                outputs="evaluation_metrics",
                name="score_samples",
            ),
            Node(
                func=render_sample_grid,
                inputs=[*_MODEL, "params:evaluation"],
                outputs="sample_grid",
                name="render_sample_grid",
            ),
            Node(
                func=write_run_report,
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
