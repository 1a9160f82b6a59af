"""uvit_pipeline: the U-ViT diffusion system as a Kedro project."""

__version__ = "0.1.0"
