"""Classifier-free guidance (§4.3) and conditioning helpers."""

from __future__ import annotations

import pytest
import torch

from uvit_pipeline.diffusion import (
    VPSDE,
    DiscreteSchedule,
    make_eps_fn,
    null_class_labels,
    null_context,
)


class TinyCondNet(torch.nn.Module):
    """ε-net whose output depends on x, the timestep and a class label or a context tensor."""

    def __init__(self, num_classes: int = 11, dim: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(num_classes, 4)
        self.ctx = torch.nn.Linear(dim, 4)
        self.calls = []

    def forward(self, x, timesteps, cond=None):
        self.calls.append((x.shape[0], timesteps.clone(), cond))
        if cond is None:
            c = torch.zeros(x.shape[0], 4)
        elif cond.dtype == torch.long:
            c = self.emb(cond)
        else:
            c = self.ctx(cond).mean(dim=1)
        return torch.tanh(x + c.view(-1, 4, 1, 1) + 1e-3 * timesteps.view(-1, 1, 1, 1))


def test_no_guidance_calls_net_once_with_net_time():
    net, x = TinyCondNet(), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0.5, 0.25, 1.0])
    for schedule, scale in ((VPSDE(), 999.0), (DiscreteSchedule(), 1000.0)):
        net.calls.clear()
        out = make_eps_fn(net, schedule)(x, t)
        assert len(net.calls) == 1
        torch.testing.assert_close(net.calls[0][1], scale * t)
        torch.testing.assert_close(out, net(x, scale * t))


def test_cfg_formula_class_labels():
    torch.manual_seed(0)
    net, x, t = TinyCondNet(), torch.randn(3, 4, 2, 2), torch.full((3,), 0.3)
    y = torch.tensor([0, 4, 9])
    null = null_class_labels(3, num_real_classes=10)
    assert null.tolist() == [10, 10, 10] and null.dtype == torch.long
    s = 0.4
    eps = make_eps_fn(net, VPSDE(), cond=y, null_cond=null, cfg_scale=s)(x, t)
    ts = 999 * t
    expected = (1 + s) * net(x, ts, y) - s * net(x, ts, null)  # w = 1 + s (§4.3)
    torch.testing.assert_close(eps, expected)


def test_cfg_two_calls_vs_batched_equal():
    torch.manual_seed(1)
    net, x, t = TinyCondNet(), torch.randn(2, 4, 2, 2), torch.full((2,), 0.7)
    ctx = torch.randn(2, 5, 8)
    empty = torch.randn(5, 8)  # stands for the CLIP encoding of '' (not zeros)
    kwargs = dict(cond=ctx, null_cond=null_context(empty, 2), cfg_scale=1.0)
    net.calls.clear()
    sep = make_eps_fn(net, DiscreteSchedule(), **kwargs)(x, t)
    assert [c[0] for c in net.calls] == [2, 2]  # two separate forward passes
    net.calls.clear()
    bat = make_eps_fn(net, DiscreteSchedule(), batched=True, **kwargs)(x, t)
    assert [c[0] for c in net.calls] == [4]
    torch.testing.assert_close(sep, bat)


def test_null_context_broadcast_and_batch1_cond():
    empty = torch.randn(1, 5, 8)
    assert null_context(empty, 3).shape == (3, 5, 8)
    assert null_context(empty[0], 3).shape == (3, 5, 8)
    with pytest.raises(ValueError, match="empty_context"):
        null_context(torch.randn(2, 5, 8), 3)
    net, x, t = TinyCondNet(), torch.randn(3, 4, 2, 2), torch.full((3,), 0.5)
    eps_fn = make_eps_fn(net, VPSDE(), cond=torch.randn(1, 5, 8), null_cond=empty, cfg_scale=0.5)
    assert eps_fn(x, t).shape == x.shape
    bad = make_eps_fn(net, VPSDE(), cond=torch.randn(2, 5, 8), null_cond=empty, cfg_scale=0.5)
    with pytest.raises(ValueError, match="cond has batch size 2"):
        bad(x, t)


def test_cfg_argument_errors():
    net = TinyCondNet()
    with pytest.raises(ValueError, match="cfg_scale"):
        make_eps_fn(net, VPSDE(), cfg_scale=-0.1)
    with pytest.raises(ValueError, match="null_cond"):
        make_eps_fn(net, VPSDE(), cond=torch.tensor([1]), cfg_scale=0.4)
