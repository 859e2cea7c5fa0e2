"""Closed-form marginals and transitions of the noising processes against Monte Carlo."""
import math

import pytest
import torch

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving, karras_grid, log_snr_grid, uniform_grid

N = 200_000


def _mc_check(sample: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, k: float = 4.0) -> None:
    """Assert sample mean and variance match (per dimension) within k standard errors."""
    n = sample.shape[0]
    se_mean = (var / n).sqrt()
    assert ((sample.mean(0) - mean).abs() <= k * se_mean).all()
    se_var = var * math.sqrt(2.0 / (n - 1))  # Gaussian-like fourth moment
    assert ((sample.var(0) - var).abs() <= k * se_var).all()


@pytest.mark.parametrize("process", [VariancePreserving(), EDM()], ids=["vp", "edm"])
@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_marginal_moments_match_monte_carlo(process, t, generator):
    # data x0 ~ N(m, s²) per dimension; then x_t ~ N(α m, α² s² + γ²)
    m, s = torch.tensor([1.5, -0.5], dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    x0 = m + s * torch.randn(N, 2, generator=generator, dtype=torch.float64)
    tt = torch.full((N,), t, dtype=torch.float64)
    x_t = process.corrupt((x0,), tt, torch.randn(N, 2, generator=generator, dtype=torch.float64))
    a, g = process.alpha(torch.tensor(t, dtype=torch.float64)), process.gamma(torch.tensor(t, dtype=torch.float64))
    _mc_check(x_t, a * m, a**2 * s**2 + g**2)


@pytest.mark.parametrize("process", [VariancePreserving(), EDM()], ids=["vp", "edm"])
def test_transition_composes_to_marginal(process, generator):
    # x_s from the marginal, then x_t from the transition kernel, must have the x_t marginal.
    s, t = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    x0 = torch.full((N, 1), 2.0, dtype=torch.float64)
    x_s = process.alpha(s) * x0 + process.gamma(s) * torch.randn(N, 1, generator=generator, dtype=torch.float64)
    a_st, g_st = process.transition(s, t)
    x_t = a_st * x_s + g_st * torch.randn(N, 1, generator=generator, dtype=torch.float64)
    _mc_check(x_t, process.alpha(t) * x0[0], process.gamma(t) ** 2 * torch.ones(1, dtype=torch.float64))


def test_vp_closed_forms():
    vp = VariancePreserving(0.1, 20.0)
    t = torch.linspace(1e-4, 1.0, 50, dtype=torch.float64)
    integral = 0.1 * t + 0.5 * 19.9 * t**2
    assert torch.allclose(vp.alpha(t), torch.exp(-0.5 * integral))
    assert torch.allclose(vp.alpha(t) ** 2 + vp.gamma(t) ** 2, torch.ones_like(t))
    assert torch.allclose(vp.t_from_sigma(vp.sigma(t)), t)
    assert torch.allclose(vp.t_from_log_snr(vp.log_snr(t)), t)
    assert torch.allclose(vp.log_snr(t), 2 * torch.log(vp.alpha(t)) - 2 * torch.log(vp.gamma(t)))


@pytest.mark.parametrize("process", [VariancePreserving(), EDM(), StochasticInterpolant(0.7)],
                         ids=["vp", "edm", "interpolant"])
def test_derivatives_match_finite_differences(process):
    t = torch.tensor([0.1, 0.3, 0.6, 0.8], dtype=torch.float64)
    h = 1e-6
    fd_gamma = (process.gamma(t + h) - process.gamma(t - h)) / (2 * h)
    assert torch.allclose(process.gamma_dot(t), fd_gamma, rtol=1e-6)
    if hasattr(process, "alpha"):
        fd_alpha = (process.alpha(t + h) - process.alpha(t - h)) / (2 * h)
        assert torch.allclose(process.alpha_dot(t), fd_alpha, rtol=1e-6, atol=1e-12)


def test_interpolant_moments(generator):
    si = StochasticInterpolant(gamma_factor=0.5)
    x0 = torch.randn(N, 1, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    x1 = torch.randn(N, 1, generator=generator, dtype=torch.float64) * 0.5 + 3.0
    t = 0.3
    x_t = si.corrupt((x0, x1), torch.full((N,), t, dtype=torch.float64),
                     torch.randn(N, 1, generator=generator, dtype=torch.float64))
    gamma2 = 0.25 * t * (1 - t)
    mean = torch.tensor([(1 - t) * -1.0 + t * 3.0], dtype=torch.float64)
    var = torch.tensor([(1 - t) ** 2 * 4.0 + t**2 * 0.25 + gamma2], dtype=torch.float64)
    _mc_check(x_t, mean, var)


def test_conditional_time_score_sign_and_value():
    """The CtSM target is ∂_t log N(x_t; α_t x0, γ_t² I) at fixed x_t (corrected + sign, METHOD §9.8)."""
    vp = VariancePreserving()
    x0 = torch.tensor([[0.7, -1.2, 0.3]], dtype=torch.float64)
    z = torch.tensor([[0.5, 0.1, -2.0]], dtype=torch.float64)
    t0 = torch.tensor([0.35], dtype=torch.float64)
    x_t = vp.corrupt((x0,), t0, z)
    t = t0.clone().requires_grad_(True)
    a, g = vp.alpha(t), vp.gamma(t)
    log_density = -((x_t - a * x0) ** 2).sum() / (2 * g**2) - 3 * torch.log(g)
    (expected,) = torch.autograd.grad(log_density.sum(), t)
    assert torch.allclose(vp.conditional_time_score((x0,), t0, z, 3), expected)


def test_grids_are_ascending_and_bounded():
    vp = VariancePreserving()
    for grid in (uniform_grid(1e-3, 0.999, 17), log_snr_grid(vp, 1e-3, 0.999, 17), karras_grid(2e-3, 80.0, 17)):
        assert (grid[1:] > grid[:-1]).all()
        assert grid.dtype == torch.float64 and len(grid) == 17
    lam = vp.log_snr(log_snr_grid(vp, 1e-3, 0.999, 9))
    assert torch.allclose(lam[1:] - lam[:-1], (lam[1] - lam[0]).expand(8), rtol=1e-8)
    k = karras_grid(2e-3, 80.0, 5, rho=7.0)
    assert torch.isclose(k[0], torch.tensor(2e-3, dtype=torch.float64))
    assert torch.isclose(k[-1], torch.tensor(80.0, dtype=torch.float64))
    with pytest.raises(ValueError):
        uniform_grid(0.5, 0.1, 10)
