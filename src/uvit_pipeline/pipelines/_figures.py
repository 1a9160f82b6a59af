"""Matplotlib figures as PIL images (catalog entries of type pillow.ImageDataset, logged to MLflow)."""

from __future__ import annotations

from PIL import Image


def new_figure(width: float, height: float):
    """A figure on the non-interactive backend (nodes run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def figure_image(fig) -> Image.Image:
    """Render and close `fig`; returns an RGB image."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    image = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba())
    plt.close(fig)
    return image.convert("RGB")
