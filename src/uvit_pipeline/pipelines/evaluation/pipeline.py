"""`evaluation`: checkpoint + reference statistics -> FID (or demo FD), sample grid, report."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate,
                [
                    "uvit_checkpoint",
                    "reference_stats",
                    "feature_network",
                    "params:evaluation",
                    "params:features",
                ],
                ["evaluation_metrics", "evaluation_report", "sample_grid", "generated_samples"],
                name="evaluate",
            ),
        ]
    )
