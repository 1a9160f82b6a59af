"""Smoke test against the real backbone: loss, guided sampling, class and text conditioning."""

from __future__ import annotations

import pytest
import torch

from uvit_pipeline.diffusion import (
    VPSDE,
    DiscreteSchedule,
    make_eps_fn,
    noise_prediction_loss,
    null_class_labels,
    null_context,
    sample,
)

models = pytest.importorskip("uvit_pipeline.models")

TINY = dict(img_size=8, patch_size=2, in_chans=2, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("text", [False, True], ids=["class", "text"])
def test_loss_and_guided_sampling_with_uvit(text):
    torch.manual_seed(0)
    if text:
        net = models.UViT(**TINY, clip_dim=16, num_clip_token=5).eval()
        cond, null = torch.randn(2, 5, 16), null_context(torch.randn(5, 16), 2)
        schedule = DiscreteSchedule()
    else:
        net = models.UViT(**TINY, num_classes=11).eval()  # 10 real classes + null class 10
        cond, null = torch.tensor([3, 7]), null_class_labels(2, 10)
        schedule = VPSDE()
    x0 = torch.rand(2, 2, 8, 8) * 2 - 1
    loss = noise_prediction_loss(
        net, x0, schedule, cond=cond, generator=torch.Generator().manual_seed(1)
    )
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()

    x_T = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    sampler = "dpm_solver_pp" if text else "dpm_solver"
    outs = []
    for batched in (False, True):
        eps_fn = make_eps_fn(
            net, schedule, cond=cond, null_cond=null, cfg_scale=0.4, batched=batched
        )
        outs.append(sample(eps_fn, x_T, schedule, sampler, 4, clip_x0=True))
    assert outs[0].shape == x_T.shape and torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
