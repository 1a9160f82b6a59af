"""`serving`: the experiment's checkpoint logged as an MLflow model (`mlflow models serve`)."""

from kedro.pipeline import Pipeline, node

from uvit_pipeline.pipelines.generate.pipeline import MODEL_ENTRIES

from .nodes import generator_spec


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generator_spec,
                inputs=[*MODEL_ENTRIES, "params:generate"],
                outputs="generator_model",
                name="log_generator_model",
            ),
        ],
        tags=["serving"],
    )
