"""`guidance_sweep`: sample and score a checkpoint at each CFG scale of `evaluation.cfg_sweep`."""

from kedro.pipeline import Pipeline, node

from .nodes import sweep_guidance


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                sweep_guidance,
                inputs=[
                    "uvit_checkpoint",
                    "text_features",
                    "autoencoder",
                    "decoder",
                    "reference_stats",
                    "feature_network",
                    "params:evaluation",
                    "params:launcher",
                    "params:paths",
                ],
                outputs=["guidance_sweep", "guidance_curve"],
                name="sweep_guidance",
            ),
        ],
        tags=["guidance_sweep"],
    )
