"""`guidance_sweep`: sample and score a checkpoint at each CFG scale of `evaluation.cfg_sweep`."""

from .._nodes import node, stage
from .nodes import sweep_guidance


def create_pipeline(**kwargs):
    return stage("guidance_sweep", node(sweep_guidance, ["guidance_sweep", "guidance_curve"]))
