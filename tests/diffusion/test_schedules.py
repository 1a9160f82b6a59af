"""Schedules pinned to the numbers of docs/reference.md §4.1, §4.2 and §5.1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uvit_pipeline.diffusion import VPSDE, DiscreteSchedule, get_schedule

F64 = torch.float64


def _t(*values):
    return torch.tensor(values, dtype=F64)


def test_vp_spec_numbers():
    vp = VPSDE()
    assert vp.alpha(_t(1.0)).item() ** 2 == pytest.approx(4.32e-5, rel=2e-3)  # ᾱ(1)
    assert vp.lambda_(_t(1.0)).item() == pytest.approx(-5.025, abs=1e-3)
    assert vp.lambda_(_t(1e-4)).item() == pytest.approx(5.752, abs=1e-3)
    t = _t(0.0, 0.3, 1.0)
    expected = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    torch.testing.assert_close(vp.log_alpha(t), expected)
    torch.testing.assert_close(vp.beta(t), 0.1 + t * 19.9)


def test_vp_closed_form_inverse_lambda():
    vp = VPSDE()
    t = torch.linspace(1e-4, 1.0, 101, dtype=F64)
    torch.testing.assert_close(vp.inverse_lambda(vp.lambda_(t)), t, rtol=1e-10, atol=1e-12)
    # §5.1 formula written out literally for one value.
    lam = -1.3
    big_l = math.log(1 + math.exp(-2 * lam))
    t_ref = 2 * 19.9 * big_l / (math.sqrt(0.1**2 + 2 * 19.9 * big_l) + 0.1) / 19.9
    assert vp.inverse_lambda(_t(lam)).item() == pytest.approx(t_ref, rel=1e-12)


def test_alpha_sigma_lambda_consistent():
    for sch in (VPSDE(), DiscreteSchedule()):
        t = torch.linspace(1e-3, 1.0, 37, dtype=F64)
        a, s = sch.alpha(t), sch.sigma(t)
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(t))
        torch.testing.assert_close(sch.lambda_(t), torch.log(a) - torch.log(s))
        torch.testing.assert_close(sch.log_alpha(t), torch.log(a))


def test_discrete_spec_numbers():
    d = DiscreteSchedule()
    abar = d.alphas_cumprod
    assert d.betas[0].item() == 0.0 and d.betas.dtype == F64
    assert d.betas[1].item() == pytest.approx(0.00085, rel=1e-12)
    assert d.betas[1000].item() == pytest.approx(0.012, rel=1e-12)
    assert abar[1].item() == pytest.approx(0.99915, rel=1e-9)
    assert abar[500].item() == pytest.approx(0.27767, rel=2e-5)
    assert abar[1000].item() == pytest.approx(0.0046601, rel=2e-5)
    assert d.lambda_(_t(1.0)).item() == pytest.approx(-2.682, abs=1e-3)
    assert d.lambda_(_t(1e-3)).item() == pytest.approx(3.535, abs=1e-3)


def test_discrete_knots_interpolation_and_extrapolation():
    d = DiscreteSchedule()
    n = torch.tensor([1, 2, 250, 999, 1000])
    # Knots t_n = n/1000 reproduce ᾱ_n.
    torch.testing.assert_close(
        d.alpha(n.to(F64) / 1000) ** 2, d.alphas_cumprod[n], rtol=1e-12, atol=0
    )
    # Between knots: linear in log α (numpy reference).
    t = torch.tensor([0.0015, 0.4567, 0.9995], dtype=F64)
    la = 0.5 * np.log(d.alphas_cumprod[1:].numpy())
    ref = np.interp(t.numpy(), np.arange(1, 1001) / 1000, la)
    np.testing.assert_allclose(d.log_alpha(t).numpy(), ref, rtol=1e-12)
    # Outside [1/1000, 1]: extension of the first/last segment.
    slope = (la[-1] - la[-2]) * 1000
    assert d.log_alpha(_t(1.01)).item() == pytest.approx(la[-1] + 0.01 * slope, rel=1e-12)
    slope0 = (la[1] - la[0]) * 1000
    assert d.log_alpha(_t(5e-4)).item() == pytest.approx(la[0] - 5e-4 * slope0, rel=1e-10)


def test_discrete_inverse_lambda_roundtrip():
    d = DiscreteSchedule()
    t = torch.linspace(1e-3, 1.0, 211, dtype=F64)
    torch.testing.assert_close(d.inverse_lambda(d.lambda_(t)), t, rtol=1e-9, atol=1e-12)


def test_dtype_follows_input():
    for sch in (VPSDE(), DiscreteSchedule()):
        assert sch.alpha(torch.tensor([0.5])).dtype == torch.float32
        assert sch.sigma(torch.tensor([0.5], dtype=F64)).dtype == F64


def test_net_time_conventions():
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(VPSDE().net_time(t), 999.0 * t)
    torch.testing.assert_close(DiscreteSchedule().net_time(t), 1000.0 * t)


def test_sample_train_t_continuous():
    vp = VPSDE()
    g = torch.Generator().manual_seed(0)
    t, ts = vp.sample_train_t(4096, generator=g)
    assert t.shape == (4096,) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() < 1.0
    assert abs(t.mean().item() - 0.5) < 0.03
    torch.testing.assert_close(ts, 999.0 * t)
    g2 = torch.Generator().manual_seed(0)
    torch.testing.assert_close(vp.sample_train_t(4096, generator=g2)[0], t)


def test_sample_train_t_discrete_exact_table():
    d = DiscreteSchedule()
    t, n = d.sample_train_t(5000, generator=torch.Generator().manual_seed(1))
    assert n.dtype == torch.long and int(n.min()) >= 1 and int(n.max()) <= 1000
    assert len(torch.unique(n)) > 900  # covers the whole range
    torch.testing.assert_close(t, n.float() / 1000)
    a, s = d.train_alpha_sigma(t, n)
    abar = d.alphas_cumprod[n]
    torch.testing.assert_close(a, abar.sqrt().float(), rtol=0, atol=0)
    torch.testing.assert_close(s, (1 - abar).sqrt().float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="net_timesteps"):
        d.train_alpha_sigma(t[:1], torch.tensor([1001]))


def test_marginal():
    d = DiscreteSchedule()
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    n = torch.tensor([1, 500, 1000])
    xt = d.marginal(x0, n.float() / 1000, noise, net_timesteps=n)
    abar = d.alphas_cumprod[n].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


def test_get_schedule():
    assert isinstance(get_schedule("vp_continuous"), VPSDE)
    assert isinstance(get_schedule("discrete"), DiscreteSchedule)
    with pytest.raises(ValueError, match="discrete.*vp_continuous"):
        get_schedule("cosine")
