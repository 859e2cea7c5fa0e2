"""Reverse and forward kernels: densities checked against Bayes' rule on Gaussian data, where they are exact.

For Gaussian data the true reverse transition satisfies p_s(x_s) L(x_t | x_s) = p_t(x_t) M(x_s | x_t)
for every pair (x_s, x_t). The closed-form marginals p_s, p_t are computed independently of the
kernels, so a wrong mean, variance, normaliser or dimension count breaks the identity.
"""
import math
from types import SimpleNamespace

import pytest
import torch

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving, karras_grid, log_snr_grid
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.kernels import DiffusionKernels, InterpolantKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.targets.gmm import GaussianMixture

VP = VariancePreserving()


def _gaussian(mean, variances):
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([mean], dtype=torch.float64),
                           torch.tensor([variances], dtype=torch.float64))


def _bayes_residual(data, process, times, kind, posterior_variance, generator, n=256):
    """max |log p_s + log L − log p_t − log M| over random pairs and all levels."""
    model = MixtureMarginalEnergy(data, process, times)
    path = LearnedPath(model)
    kernels = DiffusionKernels(process, path.times, model, 1.0, kind, posterior_variance)
    worst = 0.0
    for k in range(len(times) - 1):
        p_s = data.noised(process, float(path.times[k]))
        p_t = data.noised(process, float(path.times[k + 1]))
        x_t = p_t.sample(n, generator)
        _, score = path.log_density(k + 1, x_t)
        hessian = path.hessian(k + 1, x_t) if kernels.needs_hessian else None
        x_s, log_m = kernels.reverse(k, x_t, score, generator, hessian)
        log_l = kernels.forward_log_prob(k, x_s, x_t)
        residual = p_s.log_prob(x_s) + log_l - p_t.log_prob(x_t) - log_m
        assert torch.allclose(log_m, kernels.reverse_log_prob(k, x_s, x_t, score, hessian), atol=1e-9)
        worst = max(worst, float(residual.abs().max()))
    return worst


@pytest.mark.parametrize("process, times", [
    (VP, log_snr_grid(VP, 1e-3, 0.999, 6)),
    (EDM(), karras_grid(2e-3, 80.0, 6)),
])
def test_ddpm_kernel_is_the_exact_reverse_transition_for_gaussian_data(process, times, generator):
    isotropic = _gaussian([1.5, -0.5, 0.3], [1.0, 1.0, 1.0])  # variance σ_d² = 1: the isotropic kernel is exact
    assert _bayes_residual(isotropic, process, times, "ddpm", "isotropic", generator) < 1e-9
    anisotropic = _gaussian([1.5, -0.5, 0.3], [0.01, 3.0, 0.5])
    assert _bayes_residual(anisotropic, process, times, "ddpm", "hessian", generator) < 1e-8
    # the same identity detects an approximate kernel: isotropic V on anisotropic data, and EI
    assert _bayes_residual(anisotropic, process, times, "ddpm", "isotropic", generator) > 0.1
    assert _bayes_residual(isotropic, process, times, "ei", "isotropic", generator) > 0.01


def test_forward_kernel_draws_match_its_density(generator):
    times = log_snr_grid(VP, 1e-3, 0.999, 4)
    kernels = DiffusionKernels(VP, times, SimpleNamespace(centre=lambda x: x, dim=2))
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(200_000, 2)
    x_next = kernels.forward(1, x, generator)
    a, g = VP.transition(times[1], times[2])
    assert torch.allclose(x_next.mean(0), a * x[0], atol=5 * float(g) / math.sqrt(len(x)))
    assert torch.allclose(x_next.var(0), (g**2).expand(2), rtol=0.02)
    log_l = kernels.forward_log_prob(1, x[:3], x_next[:3])
    closed = (-0.5 * ((x_next[:3] - a * x[:3]) ** 2).sum(1) / g**2 - math.log(2 * math.pi * g**2))
    assert torch.allclose(log_l, closed)


def test_particle_kernels_live_on_the_centred_subspace(generator):
    """Isotropic centred 'molecule' (3 atoms): Bayes' identity holds with d = 3(n − 1) = 6 dimensions."""
    n_atoms, var_data = 3, 1.0
    space = SimpleNamespace(centre=lambda x: x - x.mean(-2, keepdim=True), dim=3 * (n_atoms - 1), particles=True)
    times = log_snr_grid(VP, 1e-3, 0.999, 5)
    kernels = DiffusionKernels(VP, times, space, sigma_data=1.0)

    def marginal(t):  # N(0, v P) on the subspace: log-density and score
        v = float(VP.alpha(t) ** 2 * var_data + VP.gamma(t) ** 2)
        return (lambda x: -0.5 * space.centre(x).pow(2).sum((1, 2)) / v - 0.5 * space.dim * math.log(2 * math.pi * v),
                lambda x: -space.centre(x) / v, v)

    for k in range(4):
        logp_s, _, _ = marginal(times[k])
        logp_t, score_t, v_t = marginal(times[k + 1])
        x_t = space.centre(torch.randn(128, n_atoms, 3, generator=generator, dtype=torch.float64)) * math.sqrt(v_t)
        x_s, log_m = kernels.reverse(k, x_t, score_t(x_t), generator)
        assert torch.allclose(x_s.mean(1), torch.zeros(128, 3, dtype=torch.float64), atol=1e-12)
        residual = logp_s(x_s) + kernels.forward_log_prob(k, x_s, x_t) - logp_t(x_t) - log_m
        assert float(residual.abs().max()) < 1e-9


def test_interpolant_kernels_are_consistent_gaussians(generator):
    """Draws of the reverse and forward kernels have the means and variances their densities state."""
    times = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    velocity = lambda t, x: torch.ones_like(x)  # noqa: E731 - constant velocity field
    kernels = InterpolantKernels(StochasticInterpolant(1.0), times, SimpleNamespace(centre=lambda x: x, dim=1),
                                 velocity, epsilon=0.05)
    x = torch.full((100_000, 1), 0.5, dtype=torch.float64)
    score = -x  # standard normal score
    h, gg = 0.2, float(StochasticInterpolant(1.0).gamma(times[2]) * StochasticInterpolant(1.0).gamma_dot(times[2]))
    x_prev, log_m = kernels.reverse(1, x, score, generator)  # from t_2 to t_1
    expected = 0.5 - h * (1.0 - gg * -0.5 - 0.05 * -0.5)
    assert abs(float(x_prev.mean()) - expected) < 5 * math.sqrt(2 * 0.05 * h / len(x))
    assert abs(float(x_prev.var()) - 2 * 0.05 * h) < 0.02 * 2 * 0.05 * h
    var = 2 * 0.05 * h
    assert torch.allclose(log_m[:5], -0.5 * (x_prev[:5, 0] - expected) ** 2 / var - 0.5 * math.log(2 * math.pi * var))


def test_kernel_options_are_validated():
    times = log_snr_grid(VP, 1e-3, 0.999, 4)
    space = SimpleNamespace(centre=lambda x: x, dim=2)
    with pytest.raises(ValueError, match="unknown reverse kernel"):
        DiffusionKernels(VP, times, space, kind="ddim")
    with pytest.raises(ValueError, match="posterior_variance"):
        DiffusionKernels(VP, times, space, posterior_variance="full")
    with pytest.raises(ValueError, match="interpolant"):
        DiffusionKernels(StochasticInterpolant(), times, space)
    with pytest.raises(ValueError, match="epsilon"):
        InterpolantKernels(StochasticInterpolant(), times, space, lambda t, x: x, epsilon=0.0)
