"""Sample generation from a trained or imported U-ViT: noise -> sampler -> (VAE decode) -> uint8 images."""

from .generate import collect, generate_samples, generate_to_dir, image_grid, quantize

__all__ = ["collect", "generate_samples", "generate_to_dir", "image_grid", "quantize"]
