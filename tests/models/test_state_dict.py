"""State-dict names/order/shapes (docs/reference.md §2), parameter counts (§2.4), checkpoint round trip."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from uvit_pipeline.models import OFFICIAL_CONFIGS, PRESETS, UViT, build_uvit, count_params

# §2.4 table, verified against the official modules.
EXPECTED_PARAMS = {
    "cifar10_uvit_small": 44_255_328,
    "celeba64_uvit_small": 44_292_228,
    "imagenet64_uvit_mid": 130_940_292,
    "imagenet64_uvit_large": 286_827_652,
    "imagenet256_uvit_large": 286_763_172,
    "imagenet256_uvit_huge": 500_832_016,
    "imagenet512_uvit_large": 286_861_524,
    "imagenet512_uvit_huge": 500_942_656,
    "mscoco_uvit_small": 44_692_644,
    "mscoco_uvit_small_deep": 58_345_636,
}
# §2.3 key counts.
EXPECTED_KEYS = {
    "cifar10_uvit_small": 164,
    "celeba64_uvit_small": 164,
    "imagenet64_uvit_mid": 213,
    "imagenet64_uvit_large": 261,
    "imagenet256_uvit_large": 261,
    "imagenet256_uvit_huge": 355,
    "imagenet512_uvit_large": 261,
    "imagenet512_uvit_huge": 355,
    "mscoco_uvit_small": 166,
    "mscoco_uvit_small_deep": 214,
}


def official_keys(
    img_size,
    patch_size,
    in_chans,
    embed_dim,
    depth,
    num_classes=-1,
    clip_dim=None,
    num_clip_token=None,
    conv=True,
    qkv_bias=False,
    mlp_time_embed=False,
    **_,
):
    """Expected (name, shape) list written from the generating rule of §2.1, independent of the model."""
    D, p, C = embed_dim, patch_size, in_chans
    extras = 1 + (1 if num_classes > 0 else 0) + (num_clip_token if clip_dim else 0)
    L = extras + (img_size // p) ** 2
    keys = [
        ("pos_embed", (1, L, D)),
        ("patch_embed.proj.weight", (D, C, p, p)),
        ("patch_embed.proj.bias", (D,)),
    ]
    if mlp_time_embed:
        keys += [
            ("time_embed.0.weight", (4 * D, D)),
            ("time_embed.0.bias", (4 * D,)),
            ("time_embed.2.weight", (D, 4 * D)),
            ("time_embed.2.bias", (D,)),
        ]
    if num_classes > 0:
        keys.append(("label_emb.weight", (num_classes, D)))
    if clip_dim:
        keys += [("context_embed.weight", (D, clip_dim)), ("context_embed.bias", (D,))]

    def block(prefix, skip):
        b = [("norm1.weight", (D,)), ("norm1.bias", (D,)), ("attn.qkv.weight", (3 * D, D))]
        if qkv_bias:
            b.append(("attn.qkv.bias", (3 * D,)))
        b += [
            ("attn.proj.weight", (D, D)),
            ("attn.proj.bias", (D,)),
            ("norm2.weight", (D,)),
            ("norm2.bias", (D,)),
            ("mlp.fc1.weight", (4 * D, D)),
            ("mlp.fc1.bias", (4 * D,)),
            ("mlp.fc2.weight", (D, 4 * D)),
            ("mlp.fc2.bias", (D,)),
        ]
        if skip:
            b += [("skip_linear.weight", (D, 2 * D)), ("skip_linear.bias", (D,))]
        return [(prefix + n, s) for n, s in b]

    for i in range(depth // 2):
        keys += block(f"in_blocks.{i}.", False)
    keys += block("mid_block.", False)
    for i in range(depth // 2):
        keys += block(f"out_blocks.{i}.", True)
    keys += [
        ("norm.weight", (D,)),
        ("norm.bias", (D,)),
        ("decoder_pred.weight", (p * p * C, D)),
        ("decoder_pred.bias", (p * p * C,)),
    ]
    if conv:
        keys += [("final_layer.weight", (C, C, 3, 3)), ("final_layer.bias", (C,))]
    return keys


def meta_model(kwargs):
    with torch.device("meta"):  # full-size models without allocating memory
        return UViT(**kwargs)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_official_config_param_count_and_keys(name):
    kwargs = OFFICIAL_CONFIGS[name]
    model = meta_model(kwargs)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    assert count_params(kwargs) == EXPECTED_PARAMS[name]
    sd = model.state_dict()
    assert len(sd) == EXPECTED_KEYS[name]
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == official_keys(**kwargs)
    assert not list(model.buffers())


def test_official_configs_cover_reference_table():
    assert set(OFFICIAL_CONFIGS) == set(EXPECTED_PARAMS)
    assert OFFICIAL_CONFIGS["imagenet256_uvit_huge"]["conv"] is False
    assert (
        OFFICIAL_CONFIGS["imagenet64_uvit_mid"]["num_classes"] == 1000
    )  # no null class (§8 trap 3)
    assert OFFICIAL_CONFIGS["imagenet512_uvit_large"]["num_classes"] == 1001
    assert OFFICIAL_CONFIGS["cifar10_uvit_small"]["use_checkpoint"] is False
    assert OFFICIAL_CONFIGS["imagenet256_uvit_large"]["use_checkpoint"] is True


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_with_matching_count(name):
    kwargs = dict(PRESETS[name], img_size=32, in_chans=4, num_classes=11)
    assert sum(p.numel() for p in meta_model(kwargs).parameters()) == count_params(kwargs)


def test_demo_preset_builds_on_cpu_and_runs():
    model = build_uvit("U-ViT-demo", img_size=32, in_chans=3)
    assert model.embed_dim == 64 and len(model.in_blocks) == 2
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([1, 500]))
    assert out.shape == (2, 3, 32, 32)


def test_build_uvit_errors():
    with pytest.raises(ValueError, match="known presets: U-ViT-S/2"):
        build_uvit("U-ViT-XXL/1", img_size=32, in_chans=3)
    with pytest.raises(ValueError, match="img_size"):
        build_uvit("U-ViT-S/2", in_chans=3)
    with pytest.raises(ValueError, match="bogus is not a UViT argument"):
        build_uvit("cifar10_uvit_small", bogus=1)


TINY = dict(img_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=2)
TINY_VARIANTS = {
    "uncond": dict(TINY),
    "class": dict(TINY, num_classes=11),
    "text": dict(TINY, in_chans=4, clip_dim=24, num_clip_token=5),
    "uncond_noconv_bias_mlp_time": dict(TINY, conv=False, qkv_bias=True, mlp_time_embed=True),
}


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_strict_load_of_official_named_state_dict(variant):
    kwargs = TINY_VARIANTS[variant]
    expected = official_keys(**kwargs)
    model = UViT(**kwargs)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == count_params(kwargs)
    # A state dict assembled purely from the §2 rule (as an official .pth would be) loads strictly.
    g = torch.Generator().manual_seed(0)
    foreign = {k: torch.randn(s, generator=g) for k, s in expected}
    result = model.load_state_dict(foreign, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, foreign[k])


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    kwargs = TINY_VARIANTS["class"]
    model = UViT(**kwargs).eval()
    path = tmp_path / "nnet.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(1)
    clone = UViT(**kwargs).eval()
    clone.load_state_dict(load_file(str(path)), strict=True)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 700.5]), torch.tensor([0, 10])
    with torch.no_grad():
        assert torch.equal(model(x, t, y), clone(x, t, y))


def test_torch_save_weights_only_round_trip(tmp_path):
    model = UViT(**TINY_VARIANTS["text"])
    path = tmp_path / "nnet.pth"
    torch.save(model.state_dict(), path)
    clone = UViT(**TINY_VARIANTS["text"])
    clone.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpointing_and_backend_do_not_change_state_dict():
    a = UViT(**TINY)
    b = UViT(**TINY, use_checkpoint=True, checkpoint_every=2, attention="math")
    assert list(a.state_dict()) == list(b.state_dict())
    b.set_attention("sdpa")
    assert list(a.state_dict()) == list(b.state_dict())
