"""Gaussian mixtures: exact densities, scores, samples and noised marginals."""
import math

import torch

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving
from boltzclf.targets.gmm import GaussianMixture, interpolant_marginal, marginal_log_prob, marginal_score, \
    marginal_velocity, mog40, two_modes


def test_log_prob_is_normalised_in_1d():
    mix = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                          torch.tensor([[-2.0], [1.0]], dtype=torch.float64),
                          torch.tensor([[0.5], [0.2]], dtype=torch.float64))
    x = torch.linspace(-12, 12, 200_001, dtype=torch.float64)[:, None]
    integral = torch.trapezoid(mix.log_prob(x).exp(), x[:, 0])
    assert abs(float(integral) - 1.0) < 1e-8


def test_score_is_gradient_of_log_prob():
    mix = mog40(3)
    x = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    assert torch.allclose(mix.score(x.detach()), grad)


def test_standardisation_and_presets():
    for mix in (two_modes(5), mog40(7)):
        mean, var = mix.moments()
        assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-12)
        assert torch.allclose(var, torch.ones_like(var))
    tm = two_modes(2)
    assert torch.allclose(tm.weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert mog40(4).n_components == 40


def test_noised_marginal_matches_monte_carlo(generator):
    vp = VariancePreserving()
    mix = two_modes(2)
    n, t = 200_000, 0.25
    x0 = mix.sample(n, generator)
    x_t = vp.corrupt((x0,), torch.full((n,), t, dtype=torch.float64),
                     torch.randn(n, 2, generator=generator, dtype=torch.float64))
    exact = mix.noised(vp, t)
    mean, var = exact.moments()
    assert ((x_t.mean(0) - mean).abs() <= 4 * (var / n).sqrt()).all()
    # heavy-mode fraction along the mode axis: P(x·1 < 0) is known in closed form
    frac = float((x_t.sum(1) < 0).double().mean())
    sums, sum_vars = exact.means.sum(1), exact.variances.sum(1)  # per component: S = x·1 ~ N(Σμ, Σv)
    p_heavy_side = sum(float(w) * 0.5 * (1 + math.erf(float(-m / (2 * v).sqrt())))
                       for w, m, v in zip(exact.weights, sums, sum_vars))
    assert abs(frac - p_heavy_side) <= 4 * math.sqrt(p_heavy_side * (1 - p_heavy_side) / n)


def test_interpolant_marginal_matches_monte_carlo(generator):
    si = StochasticInterpolant(1.0)
    start, end = two_modes(2, separation=1.0), mog40(2)
    n, t = 200_000, 0.6
    x_t = si.corrupt((start.sample(n, generator), end.sample(n, generator)),
                     torch.full((n,), t, dtype=torch.float64),
                     torch.randn(n, 2, generator=generator, dtype=torch.float64))
    exact = interpolant_marginal(start, end, si, t)
    mean, var = exact.moments()
    assert exact.n_components == 80
    assert ((x_t.mean(0) - mean).abs() <= 4 * (var / n).sqrt()).all()
    assert ((x_t.var(0) - var).abs() <= 4 * var * math.sqrt(2 / n) * 2).all()


def test_batched_marginal_equals_scalar_marginal():
    vp = VariancePreserving()
    mix = mog40(3)
    x = torch.randn(6, 3, dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 0.2, 0.5, 0.7, 0.99], dtype=torch.float64)
    batched = marginal_log_prob(mix, vp, t, x)
    single = torch.stack([mix.noised(vp, float(ti)).log_prob(xi[None])[0] for ti, xi in zip(t, x)])
    assert torch.allclose(batched, single)


def test_batched_marginal_score_is_gradient_of_marginal_log_prob():
    si, vp = StochasticInterpolant(0.8), VariancePreserving()
    start, end = two_modes(2), mog40(2)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    for process, other in ((vp, None), (si, end)):
        x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(marginal_log_prob(start, process, t, x, other).sum(), x)
        assert torch.allclose(marginal_score(start, process, t, x.detach(), other), grad)


def test_marginal_velocity_satisfies_continuity_equation():
    """∂_t log p_t + ∇·b + b·∇log p_t = 0 with b = v − γγ̇ ∇log p_t, at points in 1-D and 2-D (where b is
    unique in 1-D); a wrong gain, mean shift or pair ordering in v leaves a residual of order one."""
    si = StochasticInterpolant(0.8)
    gen = torch.Generator().manual_seed(3)
    for dim in (1, 2):
        start, end = two_modes(dim, separation=1.0), mog40(dim, seed=1)
        t = torch.tensor([0.15, 0.4, 0.6, 0.85], dtype=torch.float64).repeat_interleave(3)
        x = 1.5 * torch.randn(len(t), dim, generator=gen, dtype=torch.float64)
        t_req, x_req = t.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (dlogp_dt,) = torch.autograd.grad(marginal_log_prob(start, si, t_req, x, end).sum(), t_req)
        score = marginal_score(start, si, t, x_req, end)
        drift = marginal_velocity(start, end, si, t, x_req) - (si.gamma(t) * si.gamma_dot(t))[:, None] * score
        div = sum(torch.autograd.grad(drift[:, i].sum(), x_req, retain_graph=True)[0][:, i] for i in range(dim))
        residual = dlogp_dt + div + (drift * score).sum(1)
        scale = dlogp_dt.abs() + div.abs() + (drift * score).sum(1).abs()
        assert scale.min() > 1e-2  # the check is not vacuous
        assert (residual.abs() <= 1e-9 * (1 + scale)).all(), residual
