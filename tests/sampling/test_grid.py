"""Labelled grids: layout, nearest-neighbour upscaling, row labels drawn (and wrapped) under each row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvit_pipeline.models import UViT
from uvit_pipeline.sampling import (
    SamplingSpec,
    build_sampler,
    labelled_grid,
    sample_grid,
    store_prompt_conditions,
)
from uvit_pipeline.sampling.grid import GUTTER
from uvit_pipeline.training.checkpoint import export_final

from ..text_fixtures import PROMPTS, write_text_store


def _images(n=6, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def test_layout_and_nearest_neighbour_upscaling():
    images = _images()
    grid = np.asarray(labelled_grid(images, rows=2, scale=4))
    cell = 8 * 4
    assert grid.shape == (2 * (cell + GUTTER) + GUTTER, 3 * (cell + GUTTER) + GUTTER, 3)
    # image 4 = row 1, column 1, each source pixel a 4x4 block
    top, left = GUTTER + (cell + GUTTER), GUTTER + (cell + GUTTER)
    block = grid[top : top + cell, left : left + cell]
    np.testing.assert_array_equal(block[::4, ::4], images[4].transpose(1, 2, 0))
    np.testing.assert_array_equal(block[3::4, 3::4], images[4].transpose(1, 2, 0))
    assert np.all(grid[:GUTTER] == 255)  # white background


def test_labels_are_drawn_under_each_row_and_long_prompts_wrap():
    images = np.full((4, 3, 8, 8), 128, dtype=np.uint8)  # grey: text is the only black
    plain = np.asarray(labelled_grid(images, rows=2, scale=4))
    short = np.asarray(labelled_grid(images, rows=2, row_labels=["cat", "dog"], scale=4))
    long_prompt = "a group of elephants walking in muddy water near a river at dusk " * 2
    wrapped = np.asarray(labelled_grid(images, rows=2, row_labels=["cat", long_prompt], scale=4))
    cell = 32
    assert short.shape[1] == plain.shape[1] and short.shape[0] > plain.shape[0]
    assert wrapped.shape[0] > short.shape[0]  # the long prompt takes several lines
    # dark text pixels in the band below row 0, none inside the images' grey cells
    band = short[GUTTER + cell + GUTTER : GUTTER + cell + GUTTER + 14]
    assert (band.min(axis=-1) < 80).sum() > 10
    assert (short.min(axis=-1) < 80).sum() > 20
    assert not (plain.min(axis=-1) < 80).any()
    # every wrapped line fits the grid's width: the rightmost column stays white
    assert np.all(wrapped[:, -1] == 255)


def test_bad_arguments():
    with pytest.raises(ValueError, match="equal rows"):
        labelled_grid(_images(5), rows=2)
    with pytest.raises(ValueError, match="row labels"):
        labelled_grid(_images(4), rows=2, row_labels=["a"])
    with pytest.raises(ValueError, match="uint8"):
        labelled_grid(_images(4).astype(np.float32), rows=2)


def test_prompt_grid_from_a_text_checkpoint(tmp_path):
    kwargs = dict(
        img_size=8,
        patch_size=2,
        in_chans=3,
        embed_dim=32,
        depth=2,
        num_heads=2,
        clip_dim=32,
        num_clip_token=77,
    )
    torch.manual_seed(0)
    model = UViT(**kwargs)
    config = {"model_kwargs": kwargs, "schedule": "discrete", "data": {"kind": "pixels"}}
    ckpt = export_final(tmp_path / "ckpt", model, model, config, {})
    text = store_prompt_conditions(write_text_store(tmp_path / "text"))
    grid = sample_grid(
        build_sampler(SamplingSpec(checkpoint=str(ckpt))),
        columns=3,
        sampler="dpm_solver_pp",
        steps=2,
        cfg_scale=1.0,
        text=text,
    )
    assert len(PROMPTS) == 2
    assert grid.width == 3 * (8 * 16 + GUTTER) + GUTTER  # 8 px samples shown at 16x
    assert grid.height > 2 * (8 * 16 + GUTTER)  # plus the prompt lines
