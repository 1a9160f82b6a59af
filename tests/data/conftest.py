"""Shared fixtures for the data tests: tiny images written to tmp folders."""

import io

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline.data import generate_demo_data


def image_bytes(w: int, h: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """Encoded random RGB image of size (w, h)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo set (10 classes x 4 train / 2 val, 16 px), generated once per session."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo_data(root, n_per_class=4, image_size=16, seed=0)
    return root
