"""Noise-prediction loss (§4.1, §4.2): timestep conventions, exact ᾱ, per-sample reduction."""

from __future__ import annotations

import pytest
import torch

from uvit_pipeline.diffusion import VPSDE, DiscreteSchedule, noise_prediction_loss


class Recorder(torch.nn.Module):
    """Tiny conv ε-net that records what it was called with."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.calls = []

    def forward(self, x, timesteps, cond=None):
        self.calls.append((timesteps, cond))
        return self.conv(x) + 1e-3 * timesteps.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize("schedule", [VPSDE(), DiscreteSchedule()], ids=["vp", "discrete"])
def test_loss_equals_manual_computation(schedule):
    torch.manual_seed(0)
    net, x0 = Recorder(), torch.rand(4, 3, 8, 8) * 2 - 1
    loss = noise_prediction_loss(net, x0, schedule, generator=torch.Generator().manual_seed(3))
    assert loss.shape == (4,)

    g = torch.Generator().manual_seed(3)
    t, ts = schedule.sample_train_t(4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    if isinstance(schedule, DiscreteSchedule):
        abar = schedule.alphas_cumprod[ts].float().view(-1, 1, 1, 1)  # exact table (§4.2)
        assert ts.dtype == torch.long
    else:
        abar = torch.exp(-(0.1 * t + 19.9 * t**2 / 2)).view(-1, 1, 1, 1)  # exp(−B(t)) (§4.1)
        torch.testing.assert_close(ts, 999 * t)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    expected = ((noise - net.conv(x_t) - 1e-3 * ts.float().view(-1, 1, 1, 1)) ** 2).mean(
        dim=(1, 2, 3)
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(net.calls[0][0], ts)


@pytest.mark.parametrize("schedule", [VPSDE(), DiscreteSchedule()], ids=["vp", "discrete"])
def test_oracle_predictor_has_zero_loss(schedule):
    x0 = torch.rand(6, 2, 4, 4, dtype=torch.float64) * 2 - 1

    def oracle(x_t, ts, cond):
        # Recover ε from x_t using the timestep the net is given (n or 999·t).
        if ts.dtype == torch.long:
            abar = schedule.alphas_cumprod[ts]
        else:
            abar = schedule.alpha(ts.double() / 999.0) ** 2
        a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
        return (x_t - a * x0) / s

    loss = noise_prediction_loss(oracle, x0, schedule, generator=torch.Generator().manual_seed(0))
    assert loss.max().item() < 1e-9


@pytest.mark.parametrize("cond", [None, torch.tensor([3, 1000]), torch.randn(2, 77, 8)])
def test_cond_is_forwarded_and_grads_flow(cond):
    net = Recorder()
    loss = noise_prediction_loss(net, torch.randn(2, 3, 8, 8), DiscreteSchedule(), cond=cond)
    assert net.calls[0][1] is cond
    loss.mean().backward()
    assert net.conv.weight.grad is not None and torch.isfinite(net.conv.weight.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="x0"):
        noise_prediction_loss(Recorder(), torch.zeros(2, 3, 8, 8, dtype=torch.long), VPSDE())
    with pytest.raises(ValueError, match="nnet returned shape"):
        noise_prediction_loss(lambda x, t, c: x[:, :1], torch.zeros(2, 3, 8, 8), VPSDE())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("schedule", [VPSDE(), DiscreteSchedule()], ids=["vp", "discrete"])
def test_loss_on_cuda(schedule):
    net = Recorder().cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    loss = noise_prediction_loss(
        net, torch.randn(2, 3, 8, 8, device="cuda"), schedule, generator=gen
    )
    assert loss.is_cuda and loss.shape == (2,)
