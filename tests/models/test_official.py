"""Recognising official U-ViT state dicts: config inference and key-by-key differences (docs/reference.md §2)."""

from __future__ import annotations

import pytest
import torch

from uvit_pipeline.models import OFFICIAL_CONFIGS
from uvit_pipeline.models.official import (
    OFFICIAL_DIFFUSION,
    check_is_uvit_state_dict,
    expected_shapes,
    infer_official_config,
    state_dict_problems,
)


def official_shapes(kwargs: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape written out from the §2.1 generating rule (independent of our UViT module)."""
    c, p, d, depth = kwargs["in_chans"], kwargs["patch_size"], kwargs["embed_dim"], kwargs["depth"]
    n_tokens = (kwargs["img_size"] // p) ** 2
    num_classes = kwargs.get("num_classes", -1)
    clip_dim = kwargs.get("clip_dim")
    extras = 1 + (1 if num_classes > 0 else 0) + (kwargs["num_clip_token"] if clip_dim else 0)
    hidden = int(d * kwargs.get("mlp_ratio", 4.0))
    out = {
        "pos_embed": (1, extras + n_tokens, d),
        "patch_embed.proj.weight": (d, c, p, p),
        "patch_embed.proj.bias": (d,),
    }
    if kwargs.get("mlp_time_embed", False):
        out.update(
            {
                "time_embed.0.weight": (4 * d, d),
                "time_embed.0.bias": (4 * d,),
                "time_embed.2.weight": (d, 4 * d),
                "time_embed.2.bias": (d,),
            }
        )
    if num_classes > 0:
        out["label_emb.weight"] = (num_classes, d)
    if clip_dim:
        out.update({"context_embed.weight": (d, clip_dim), "context_embed.bias": (d,)})

    def block(prefix: str, skip: bool) -> None:
        out.update(
            {
                f"{prefix}norm1.weight": (d,),
                f"{prefix}norm1.bias": (d,),
                f"{prefix}attn.qkv.weight": (3 * d, d),
            }
        )
        if kwargs.get("qkv_bias", False):
            out[f"{prefix}attn.qkv.bias"] = (3 * d,)
        out.update(
            {
                f"{prefix}attn.proj.weight": (d, d),
                f"{prefix}attn.proj.bias": (d,),
                f"{prefix}norm2.weight": (d,),
                f"{prefix}norm2.bias": (d,),
                f"{prefix}mlp.fc1.weight": (hidden, d),
                f"{prefix}mlp.fc1.bias": (hidden,),
                f"{prefix}mlp.fc2.weight": (d, hidden),
                f"{prefix}mlp.fc2.bias": (d,),
            }
        )
        if skip:
            out.update(
                {f"{prefix}skip_linear.weight": (d, 2 * d), f"{prefix}skip_linear.bias": (d,)}
            )

    for i in range(depth // 2):
        block(f"in_blocks.{i}.", skip=False)
    block("mid_block.", skip=False)
    for i in range(depth // 2):
        block(f"out_blocks.{i}.", skip=True)
    out.update(
        {
            "norm.weight": (d,),
            "norm.bias": (d,),
            "decoder_pred.weight": (p * p * c, d),
            "decoder_pred.bias": (p * p * c,),
        }
    )
    if kwargs.get("conv", True):
        out.update({"final_layer.weight": (c, c, 3, 3), "final_layer.bias": (c,)})
    return out


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A state dict of meta tensors: right names and shapes, no memory."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_expected_shapes_follow_the_official_rule_in_order(name):
    got = expected_shapes(OFFICIAL_CONFIGS[name])
    want = official_shapes(OFFICIAL_CONFIGS[name])
    assert list(got) == list(want)  # same names in the state_dict() order of §2.1
    assert got == want


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_infer_official_config_finds_every_config(name):
    state = meta_state(official_shapes(OFFICIAL_CONFIGS[name]))
    assert infer_official_config(state) == name
    assert name in OFFICIAL_DIFFUSION  # every config can be imported with its schedule and p_uncond


def test_cifar_and_celeba_differ_only_in_patch_shapes():
    # Both have 164 keys and the same pos_embed (§2.3): inference must look at shapes, not just names.
    cifar = expected_shapes(OFFICIAL_CONFIGS["cifar10_uvit_small"])
    celeba = expected_shapes(OFFICIAL_CONFIGS["celeba64_uvit_small"])
    assert cifar.keys() == celeba.keys()
    assert {k for k in cifar if cifar[k] != celeba[k]} == {
        "patch_embed.proj.weight",
        "decoder_pred.weight",
        "decoder_pred.bias",
    }


def test_state_dict_problems_lists_missing_unexpected_and_mismatched_keys():
    kwargs = OFFICIAL_CONFIGS["imagenet256_uvit_huge"]
    state = meta_state(expected_shapes(kwargs))
    assert state_dict_problems(state, kwargs) == []
    del state["mid_block.attn.qkv.weight"]
    state["final_layer.weight"] = torch.empty(4, 4, 3, 3, device="meta")  # H has conv=False (§1.4)
    state["label_emb.weight"] = torch.empty(1000, 1152, device="meta")  # should be 1001 (§1.1)
    problems = state_dict_problems(state, kwargs)
    assert len(problems) == 3
    assert "missing key mid_block.attn.qkv.weight (expected shape [3456, 1152])" in problems
    assert "unexpected key final_layer.weight (shape [4, 4, 3, 3])" in problems
    assert (
        "shape mismatch for label_emb.weight: file has [1000, 1152], config expects [1001, 1152]"
        in problems
    )


def test_infer_reports_the_closest_config_key_by_key():
    state = meta_state(official_shapes(OFFICIAL_CONFIGS["mscoco_uvit_small"]))
    del state["out_blocks.3.skip_linear.bias"]
    with pytest.raises(ValueError, match="matches no official U-ViT config") as err:
        infer_official_config(state, "x.pth")
    msg = str(err.value)
    assert msg.startswith("x.pth")
    assert "closest is mscoco_uvit_small" in msg
    assert "missing key out_blocks.3.skip_linear.bias (expected shape [512])" in msg


def test_check_is_uvit_state_dict_accepts_plain_and_module_prefixed():
    state = {"pos_embed": torch.zeros(1, 5, 8), "patch_embed.proj.weight": torch.zeros(8, 3, 2, 2)}
    assert check_is_uvit_state_dict(state, "a.pth").keys() == state.keys()
    prefixed = {f"module.{k}": v for k, v in state.items()}  # a DDP-wrapped save
    assert check_is_uvit_state_dict(prefixed, "a.pth").keys() == state.keys()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (torch.zeros(3), "it holds a Tensor"),
        ([torch.zeros(3)], "it holds a list"),
        ({"lr": 0.1, "step": 3}, r"entries \['lr', 'step'\] are not tensors"),
        ({"model": {"pos_embed": torch.zeros(1)}}, "wrapper dict with keys \\['model'\\]"),
        ({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, "no pos_embed"),
    ],
)
def test_check_is_uvit_state_dict_refuses_other_objects(obj, match):
    with pytest.raises(ValueError, match=match) as err:
        check_is_uvit_state_dict(obj, "b.pth")
    assert str(err.value).startswith("b.pth")
