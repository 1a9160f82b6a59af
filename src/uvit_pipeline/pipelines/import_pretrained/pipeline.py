"""`import_pretrained`: an official U-ViT `.pth` and `fid_stats` `.npz` become versioned catalog entries.

Its outputs are those of `training` and `fid_reference`: run it instead of them (never together), then
`evaluation` reproduces the paper's number from the published weights.
"""

from .._nodes import node, stage
from .nodes import import_official_files


def create_pipeline(**kwargs):
    outputs = ["uvit_checkpoint", "reference_stats", "feature_network"]
    return stage(
        "import_pretrained", node(import_official_files, outputs, name="import_pretrained")
    )
