"""Diffusion processes, training loss, samplers and guidance for U-ViT (docs/reference.md §4–§5)."""

from .guidance import make_eps_fn, null_class_labels, null_context
from .losses import noise_prediction_loss
from .samplers import SAMPLERS, sample
from .schedules import SCHEDULES, VPSDE, DiscreteSchedule, NoiseSchedule, get_schedule

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "DiscreteSchedule",
    "NoiseSchedule",
    "VPSDE",
    "get_schedule",
    "make_eps_fn",
    "noise_prediction_loss",
    "null_class_labels",
    "null_context",
    "sample",
]
