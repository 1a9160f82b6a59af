"""Matplotlib figures as PIL images (catalog entries of type pillow.ImageDataset, logged to MLflow).

Figures are drawn on their own Agg canvas (no pyplot), so nodes need no display and leave no global
figure state behind."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(width: float, height: float):
    """(figure, axes) of one subplot, like `pyplot.subplots`, on a non-interactive canvas."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def figure_image(fig) -> Image.Image:
    """Render `fig`; returns an RGB image."""
    fig.tight_layout()
    fig.canvas.draw()
    image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba())
    return image.convert("RGB")
