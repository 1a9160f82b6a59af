"""`UViTGenerator`: a checkpoint (or a saved bundle) called with classes or prompts gives PIL images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from uvit_pipeline.models import UViT
from uvit_pipeline.sampling.pipeline import UViTGenerator
from uvit_pipeline.training.checkpoint import export_final

CLASS_KWARGS = dict(
    img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=2, num_heads=2, num_classes=5
)
TEXT_KWARGS = dict(
    img_size=4, patch_size=2, in_chans=4, embed_dim=32, depth=2, num_heads=2, clip_dim=32,
    num_clip_token=77,
)  # fmt: skip


def _export(path, kwargs, **config):
    torch.manual_seed(0)
    model = UViT(**kwargs)
    config = {"model_kwargs": kwargs, "schedule": "vp_continuous", "p_uncond": 0.1, **config}
    return export_final(path, model, model, config, {"steps": 0})


@pytest.fixture(scope="module")
def class_checkpoint(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("gen") / "class", CLASS_KWARGS, data={"kind": "pixels"})


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory, clip_dir):
    from uvit_pipeline.encoders.text import load_text_encoder, text_encoder_identity

    identity = text_encoder_identity(load_text_encoder(clip_dir), 77)
    data = {"kind": "latent_moments", "scale_factor": 0.2301}
    path = tmp_path_factory.mktemp("gen") / "t2i"
    return _export(path, TEXT_KWARGS, data=data, text_encoder=identity, schedule="discrete")


def test_class_generator_returns_reproducible_pil_images(class_checkpoint):
    gen = UViTGenerator.from_pretrained(
        class_checkpoint, class_names=["red", "green", "blue", "cyan"], device="cpu"
    )
    assert gen.kind == "class" and gen.device == torch.device("cpu")
    images = gen(["green", 3], steps=3, guidance=1.0, seed=5, n_per_condition=2)
    assert len(images) == 4 and all(isinstance(im, Image.Image) for im in images)
    assert images[0].size == (8, 8) and images[0].mode == "RGB"
    again = gen(["green", 3], steps=3, guidance=1.0, seed=5, n_per_condition=2)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True)
    )
    other = gen(["green"], steps=3, guidance=1.0, seed=6)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(images[0]))
    with pytest.raises(ValueError, match="unknown class 'purple'"):
        gen(["purple"])
    with pytest.raises(ValueError, match=r"class 7 is not a class index in \[0, 4\)"):
        gen([7])
    with pytest.raises(ValueError, match="sampler: unknown"):
        gen([0], sampler="ddim")


def test_text_generator_saves_and_reloads_a_self_contained_bundle(
    text_checkpoint, clip_dir, vae_dir, tmp_path
):
    gen = UViTGenerator.from_pretrained(
        text_checkpoint, autoencoder=str(vae_dir), text_encoder=str(clip_dir), device="cpu",
        defaults={"steps": 2, "guidance": 1.5},
    )  # fmt: skip
    assert gen.kind == "text"
    images = gen(["the cat", "a cat."], seed=1)
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    with pytest.raises(ValueError, match="give a list of prompts"):
        gen([0])
    bundle = gen.save_pretrained(tmp_path / "bundle")
    assert {p.name for p in bundle.iterdir()} == {
        "uvit", "autoencoder", "text_encoder", "generator.json"
    }  # fmt: skip
    with pytest.raises(FileExistsError):
        gen.save_pretrained(bundle)
    reloaded = UViTGenerator.from_pretrained(bundle, device="cpu")
    assert reloaded.defaults == gen.defaults
    again = reloaded(["the cat", "a cat."], seed=1)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True)
    )


def test_a_missing_path_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        UViTGenerator.from_pretrained(tmp_path / "nowhere")
