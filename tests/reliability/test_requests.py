"""Nothing silently ignored (docs/reliability.md, case 26): prompts for a class-conditional model, or
classes for a text model, are refused before any node runs, saying what the checkpoint accepts."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, MemoryDataset

from tests.pipelines.conftest import write_checkpoint
from uvit_pipeline.hooks import CheckGenerateRequest
from uvit_pipeline.models.checkpoint import CheckpointInfo
from uvit_pipeline.pipeline_registry import without_inputs
from uvit_pipeline.pipelines.generate import create_pipeline
from uvit_pipeline.sampling.requests import check_requested_conditions

SMALL = {"img_size": 8, "patch_size": 2, "in_chans": 3, "embed_dim": 32, "depth": 2, "num_heads": 2}
CLASS = CheckpointInfo.from_config(
    {"model_kwargs": {**SMALL, "num_classes": 11}, "p_uncond": 0.1, "schedule": "discrete"}, "ckpt"
)
TEXT = CheckpointInfo.from_config(
    {"model_kwargs": {**SMALL, "num_classes": -1, "clip_dim": 16, "num_clip_token": 4},
     "schedule": "discrete"}, "ckpt"
)  # fmt: skip
UNCONDITIONAL = CheckpointInfo.from_config(
    {"model_kwargs": {**SMALL, "num_classes": -1}, "schedule": "discrete"}, "ckpt"
)


def test_prompts_for_a_class_model_are_refused_saying_what_it_accepts():
    with pytest.raises(ValueError, match=r"1 prompt\(s\) given .* class-conditional") as err:
        check_requested_conditions(CLASS, ["a red car"], [])
    assert "indices in [0, 10) or class names" in str(err.value)
    check_requested_conditions(CLASS, [], [3, "dog"])


def test_classes_for_a_text_model_are_refused_saying_what_it_accepts():
    with pytest.raises(ValueError, match=r"generate.classes \[3\] given, .* text-to-image") as err:
        check_requested_conditions(TEXT, ["a red car"], [3])
    assert "prompt_file" in str(err.value)
    check_requested_conditions(TEXT, ["a red car"], [])
    with pytest.raises(ValueError, match="unconditional"):
        check_requested_conditions(UNCONDITIONAL, ["x"], [])


@pytest.mark.parametrize("fitted", [False, True])
def test_refused_before_any_node_runs(tmp_path, fitted):
    pipeline = create_pipeline()
    if fitted:  # as the registry builds it for a class model: its generate node wraps the function
        pipeline = without_inputs(pipeline, {"text_encoder": None, "decoder": None})
    ckpt = write_checkpoint(tmp_path / "class", {**SMALL, "num_classes": 11}, p_uncond=0.1)
    catalog = DataCatalog(
        {
            "uvit_checkpoint": MemoryDataset(ckpt),
            "prompt_file": MemoryDataset(["a photo of a cat"]),
            "params:generate": MemoryDataset({"prompts": [], "classes": []}),
        }
    )
    with pytest.raises(ValueError, match="class-conditional model that would ignore them"):
        CheckGenerateRequest().before_pipeline_run(pipeline=pipeline, catalog=catalog)
    catalog["prompt_file"] = MemoryDataset(None)
    CheckGenerateRequest().before_pipeline_run(pipeline=pipeline, catalog=catalog)


@pytest.mark.parametrize("damage", [b"garbage", b"\x80\x04\x95 not a pickle"])
def test_a_damaged_text_encoder_folder_is_named_by_its_catalog_entry(tmp_path, damage):
    from tests.conftest import save_tiny_clip
    from uvit_pipeline.encoders.text import load_text_encoder

    folder = tmp_path / "clip"
    save_tiny_clip(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(damage)  # a torn download of the pickle format
    with pytest.raises(RuntimeError, match=r"catalog entry `text_encoder`: cannot load") as err:
        load_text_encoder(folder)
    assert str(folder) in str(err.value)
