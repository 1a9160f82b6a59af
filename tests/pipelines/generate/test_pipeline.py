"""`generate`: PNGs and a labelled grid from a checkpoint, for classes given by name or index, or of
an unconditional model; a class the model does not know is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uvit_pipeline.data.demo import CLASS_NAMES
from uvit_pipeline.pipelines.generate import create_pipeline
from uvit_pipeline.sampling.grid import labelled_grid

from ..conftest import run, with_section, write_checkpoint

NAMES = sorted(CLASS_NAMES)  # labels of the demo store: sorted class folders


def generate(chain: dict, params: dict, **inputs) -> tuple[Path, Image.Image]:
    catalog = {
        "uvit_checkpoint": chain["uvit_checkpoint"],
        "image_features": chain["image_features"],
        "autoencoder": None,
        "decoder": None,
        "text_encoder": None,
        "prompt_file": None,
        **inputs,
    }
    out = run(create_pipeline(), catalog, params)
    return Path(out["generated_images"]), out["generated_grid"]


def grid_size(rows: list[str], per_row: int, scale: int) -> tuple[int, int]:
    blank = np.zeros((len(rows) * per_row, 3, 32, 32), np.uint8)
    return labelled_grid(blank, len(rows), rows, scale=scale).size


def test_classes_by_name_and_index(demo_chain, demo_params):
    params = with_section(demo_params, "generate", classes=[NAMES[2], 5])
    folder, grid = generate(demo_chain, params)
    k, scale = params["generate"]["n_per_condition"], params["generate"]["grid_scale"]
    slugs = [NAMES[2].lower(), NAMES[5].lower()]
    expected = [f"{r:03d}-{slugs[r]}-{i:02d}.png" for r in range(2) for i in range(k)]
    assert sorted(p.name for p in folder.glob("*.png")) == expected
    first = np.asarray(Image.open(folder / expected[0]))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8 and first.std() > 0
    # one row per class, its name written under it; the cells are the written images, upscaled
    assert grid.size == grid_size([NAMES[2], NAMES[5]], k, scale)
    cell = np.asarray(grid)[2 : 2 + 32 * scale : scale, 2 : 2 + 32 * scale : scale]
    assert np.array_equal(cell, first)


def test_no_classes_means_the_first_ten(demo_chain, demo_params):
    params = with_section(demo_params, "generate", classes=[], n_per_condition=1)
    folder, grid = generate(demo_chain, params)
    assert len(list(folder.glob("*.png"))) == 10
    assert grid.size == grid_size(NAMES, 1, params["generate"]["grid_scale"])


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (["unicorn"], r"generate.classes: unknown class 'unicorn'"),
        ([10], r"generate.classes: 10 is not a class index in \[0, 10\)"),
    ],
)
def test_unknown_class_is_refused_by_name(demo_chain, demo_params, tmp_path, classes, match):
    params = with_section(demo_params, "generate", classes=classes)
    params = with_section(params, "paths", staging=str(tmp_path / "staging"))
    with pytest.raises(ValueError, match=match):
        generate(demo_chain, params)
    assert not (tmp_path / "staging").exists()  # nothing sampled, nothing written


def test_unconditional_model(demo_chain, demo_params, tmp_path):
    kwargs = {
        "img_size": 32,
        "patch_size": 4,
        "in_chans": 3,
        "embed_dim": 32,
        "depth": 2,
        "num_heads": 2,
        "num_classes": -1,
    }
    ckpt = write_checkpoint(tmp_path / "unconditional", kwargs)
    params = with_section(demo_params, "generate", cfg_scale=0.0)
    folder, grid = generate(demo_chain, params, uvit_checkpoint=ckpt)
    k = params["generate"]["n_per_condition"]
    assert sorted(p.name for p in folder.glob("*.png")) == [
        f"000-unconditional-{i:02d}.png" for i in range(k)
    ]
    assert grid.size == grid_size(["unconditional"], k, params["generate"]["grid_scale"])
    with pytest.raises(ValueError, match=r"generate.classes \[1\] given.*unconditional"):
        generate(demo_chain, with_section(params, "generate", classes=[1]), uvit_checkpoint=ckpt)
    with pytest.raises(ValueError, match=r"generate.cfg_scale: .*an unconditional model"):
        generate(demo_chain, demo_params, uvit_checkpoint=ckpt)  # no null class to guide with
