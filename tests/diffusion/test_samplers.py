"""Samplers: argument checks, NFE budget, equality with float64 re-derivations of §5, Gaussian sanity."""

from __future__ import annotations

import math

import pytest
import torch

from uvit_pipeline.diffusion import SAMPLERS, VPSDE, DiscreteSchedule, sample
from uvit_pipeline.diffusion.samplers import fast_orders

from .reference import RefDiscrete, RefVP, ref_dpm_solver, ref_dpm_solver_pp, ref_euler_maruyama
from .toy import CountingEps, gaussian_eps_fn, perturbed_eps_fn

F64 = torch.float64


def _x_T(batch=8, seed=0, dtype=F64):
    return torch.randn(batch, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _zero_eps(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "ddim"}, "sampler"),
        ({"sampler": "dpm_solver", "steps": 0}, "steps"),
        ({"sampler": "dpm_solver", "steps": 2.5}, "steps"),
        ({"sampler": "dpm_solver", "steps": True}, "steps"),
        ({"sampler": "euler_maruyama", "steps": 1}, "steps"),
        ({"sampler": "dpm_solver_pp", "t_end": 0.0}, "t_end"),
        ({"sampler": "dpm_solver_pp", "t_end": 1.0}, "t_end"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(_zero_eps, _x_T(), VPSDE(), **kwargs)


def test_bad_x_T_and_eps_shape():
    with pytest.raises(ValueError, match="x_T"):
        sample(_zero_eps, torch.zeros(2, 3, dtype=torch.long), VPSDE(), "dpm_solver", 3)
    with pytest.raises(ValueError, match="eps_fn"):
        sample(lambda x, t: x[:, :0], _x_T(), VPSDE(), "dpm_solver", 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [2, 3, 4, 5, 7, 50])
def test_nfe_equals_steps(sampler, steps):
    counter = CountingEps(_zero_eps)
    sample(counter, _x_T(2), DiscreteSchedule(), sampler, steps, generator=torch.Generator())
    assert len(counter.times) == steps
    assert counter.times[0] == pytest.approx(1.0)


def test_fast_orders():
    assert fast_orders(50) == [3] * 16 + [2]  # §5.1: K = 17, NFE 48 + 2
    assert fast_orders(48) == [3] * 15 + [2, 1]
    assert fast_orders(49) == [3] * 16 + [1]
    for steps in range(1, 60):
        assert sum(fast_orders(steps)) == steps and len(fast_orders(steps)) == steps // 3 + 1


def test_default_steps():
    counter = CountingEps(_zero_eps)
    sample(counter, _x_T(1), VPSDE(), "dpm_solver")
    assert len(counter.times) == 50


def test_dpm_solver_pp_evaluates_on_time_uniform_grid():
    counter = CountingEps(_zero_eps)
    sample(counter, _x_T(1), DiscreteSchedule(), "dpm_solver_pp", 50)
    grid = torch.linspace(1.0, 1e-3, 51, dtype=F64)[:-1]
    torch.testing.assert_close(torch.tensor(counter.times, dtype=F64), grid, rtol=0, atol=1e-6)


def test_dpm_solver_first_outer_times_lambda_uniform():
    vp = VPSDE()
    counter = CountingEps(_zero_eps)
    sample(counter, _x_T(1), vp, "dpm_solver", 50)
    lam = vp.lambda_(torch.tensor(counter.times, dtype=F64))
    outer = lam[0:48:3]  # starts of the 16 order-3 steps
    assert torch.allclose(outer.diff(), outer.diff()[0].expand(15), atol=1e-9)
    # λ-span of one outer step = (λ(1e-4) − λ(1)) / 17, intermediate points at 1/3 and 2/3 of it.
    h = (vp.lambda_(torch.tensor(1e-4, dtype=F64)) - vp.lambda_(torch.tensor(1.0, dtype=F64))) / 17
    torch.testing.assert_close(lam[1] - lam[0], h / 3)
    torch.testing.assert_close(lam[2] - lam[0], 2 * h / 3)


# ----- equality with the independent float64 re-derivations in reference.py --------------------


@pytest.mark.parametrize("steps", [50, 20, 10, 4])
def test_dpm_solver_pp_matches_reference_discrete(steps):
    d = DiscreteSchedule()
    eps = perturbed_eps_fn(d)
    ours = sample(eps, _x_T(), d, "dpm_solver_pp", steps)
    ref = ref_dpm_solver_pp(eps, _x_T(), RefDiscrete(), steps=steps)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_dpm_solver_pp_matches_reference_vp():
    vp = VPSDE()
    eps = perturbed_eps_fn(vp)
    ours = sample(eps, _x_T(), vp, "dpm_solver_pp", 50)
    torch.testing.assert_close(ours, ref_dpm_solver_pp(eps, _x_T(), RefVP()), rtol=0, atol=1e-10)


@pytest.mark.parametrize("steps", [50, 21, 10, 3])
def test_dpm_solver_matches_reference_vp(steps):
    vp = VPSDE()
    eps = perturbed_eps_fn(vp)
    ours = sample(eps, _x_T(), vp, "dpm_solver", steps)
    ref = ref_dpm_solver(eps, _x_T(), RefVP(), steps=steps)
    # 3 steps take λ-steps of ~5 where expm1/inverse-λ round-off reaches ~3e-11.
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("schedule", "ref_schedule"), [(VPSDE(), RefVP()), (DiscreteSchedule(), RefDiscrete())]
)
def test_euler_maruyama_matches_hand_rolled_loop(schedule, ref_schedule):
    # 99 steps: no interior grid time sits on a knot of the discrete table, where the piecewise-constant
    # β(t) jumps and the last bit of rounding would pick the segment.
    steps = 99
    eps = perturbed_eps_fn(schedule)
    ours = sample(
        eps, _x_T(), schedule, "euler_maruyama", steps, generator=torch.Generator().manual_seed(7)
    )
    g = torch.Generator().manual_seed(7)
    noises = [torch.randn(_x_T().shape, generator=g, dtype=F64) for _ in range(steps - 1)]
    ref = ref_euler_maruyama(eps, _x_T(), ref_schedule, noises, steps=steps)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)


def test_float32_close_to_float64():
    d = DiscreteSchedule()
    eps = perturbed_eps_fn(d)
    x64 = sample(eps, _x_T(), d, "dpm_solver_pp", 20)
    x32 = sample(eps, _x_T().float(), d, "dpm_solver_pp", 20)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), x64, rtol=0, atol=1e-4)


# ----- Gaussian data: the exact ε-predictor is known, so samples must have the data law -----------

MEAN, STD = 0.5, 0.4


def _exact_ode_map(schedule, x_T, t_end):
    """Probability-flow ODE for Gaussian data keeps (x_t − α_t m)/sqrt(α_t²s² + σ_t²) constant."""

    def stats(t):
        tt = torch.tensor(t, dtype=F64)
        a, s = schedule.alpha(tt).item(), schedule.sigma(tt).item()
        return a, math.sqrt(a * a * STD * STD + s * s)

    a_T, v_T = stats(1.0)
    a_e, v_e = stats(t_end)
    return a_e * MEAN + v_e * (x_T - a_T * MEAN) / v_T


# Max |error| against the exact flow at 50 steps (measured: 6.0e-4, 1.8e-4, 1.7e-2, 2.6e-2); the
# time-uniform grid of DPM-Solver++ spends few steps near t_end where λ moves fastest, hence larger errors.
@pytest.mark.parametrize(
    ("schedule", "sampler", "t_end", "tol"),
    [
        (VPSDE(), "dpm_solver", 1e-4, 2e-3),
        (DiscreteSchedule(), "dpm_solver", 1e-4, 1e-3),
        (VPSDE(), "dpm_solver_pp", 1e-3, 4e-2),
        (DiscreteSchedule(), "dpm_solver_pp", 1e-3, 5e-2),
    ],
    ids=["dpm_solver-vp", "dpm_solver-discrete", "dpm_solver_pp-vp", "dpm_solver_pp-discrete"],
)
def test_ode_samplers_follow_exact_flow(schedule, sampler, t_end, tol):
    eps = gaussian_eps_fn(schedule, MEAN, STD)
    x_T = _x_T(64)
    exact = _exact_ode_map(schedule, x_T, t_end)
    err_50 = (sample(eps, x_T, schedule, sampler, 50, t_end=t_end) - exact).abs().max().item()
    err_200 = (sample(eps, x_T, schedule, sampler, 200, t_end=t_end) - exact).abs().max().item()
    assert err_50 < tol
    assert err_200 < err_50 / 4  # converges as steps grow
    # A large batch has the law of the data (up to the tiny prior mismatch at t = 1).
    big = sample(eps, _x_T(2048), schedule, sampler, 50, t_end=t_end)
    expected_mean = _exact_ode_map(schedule, torch.zeros(1, dtype=F64), t_end).item()
    assert big.mean().item() == pytest.approx(expected_mean, abs=0.02)
    assert big.std().item() == pytest.approx(STD, rel=0.05)


def test_euler_maruyama_recovers_gaussian():
    vp = VPSDE()  # ᾱ(1) ≈ 4e-5, so N(0, I) is the exact prior up to 1e-3
    out = sample(
        gaussian_eps_fn(vp, MEAN, STD),
        _x_T(2048, dtype=torch.float32),
        vp,
        "euler_maruyama",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.mean().item() == pytest.approx(MEAN, abs=0.02)
    assert out.std().item() == pytest.approx(STD, rel=0.05)


# ----- clip_x0 --------------------------------------------------------------------------------------


def test_clip_x0_is_identity_for_in_range_predictions():
    d = DiscreteSchedule()
    eps = gaussian_eps_fn(d, 0.0, 0.1)  # implied x̂0 stays well inside [-1, 1]
    plain = sample(eps, _x_T(), d, "dpm_solver_pp", 10)
    clipped = sample(eps, _x_T(), d, "dpm_solver_pp", 10, clip_x0=True)
    torch.testing.assert_close(plain, clipped, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_clip_x0_bounds_samples(sampler):
    vp = VPSDE()
    eps = gaussian_eps_fn(vp, 0.0, 3.0)  # data far outside [-1, 1]
    gen = torch.Generator().manual_seed(0)
    steps = 200 if sampler == "euler_maruyama" else 20
    free = sample(eps, _x_T(64), vp, sampler, steps, generator=gen)
    assert free.abs().max().item() > 3.0
    clipped = sample(eps, _x_T(64), vp, sampler, steps, clip_x0=True, generator=gen)
    assert clipped.abs().max().item() < 1.05


def test_progress_bar_runs(capsys):
    out = sample(_zero_eps, _x_T(1), VPSDE(), "dpm_solver", 4, progress=True)
    assert out.shape == (1, 1, 4, 4)
    assert "dpm_solver" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_matches_cpu():
    d = DiscreteSchedule()
    eps = gaussian_eps_fn(d, MEAN, STD)
    cpu = sample(eps, _x_T(dtype=torch.float32), d, "dpm_solver_pp", 10)
    gpu = sample(eps, _x_T(dtype=torch.float32).cuda(), d, "dpm_solver_pp", 10)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
    gen = torch.Generator(device="cuda").manual_seed(0)
    em = sample(eps, _x_T(dtype=torch.float32).cuda(), VPSDE(), "euler_maruyama", 20, generator=gen)
    assert em.is_cuda and torch.isfinite(em).all()
