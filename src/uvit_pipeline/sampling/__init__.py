"""Sample generation from a trained or imported U-ViT: noise -> sampler -> (VAE decode) -> uint8 images."""

from .conditions import (
    TextConditions,
    conditions_from_prompts,
    conditions_from_text_store,
    draw_caption_rows,
    encode_prompt_conditions,
    store_prompt_conditions,
)
from .generate import (
    SamplerSetup,
    build_sampler,
    collect,
    collect_caption_rows,
    generate_samples,
    generate_to_dir,
    quantize,
)
from .grid import image_grid, labelled_grid, sample_grid
from .pipeline import UViTGenerator, class_names
from .spec import SamplingSpec

__all__ = [
    "SamplerSetup",
    "SamplingSpec",
    "TextConditions",
    "UViTGenerator",
    "build_sampler",
    "class_names",
    "collect",
    "collect_caption_rows",
    "conditions_from_prompts",
    "conditions_from_text_store",
    "draw_caption_rows",
    "encode_prompt_conditions",
    "generate_samples",
    "generate_to_dir",
    "image_grid",
    "labelled_grid",
    "quantize",
    "sample_grid",
    "store_prompt_conditions",
]
