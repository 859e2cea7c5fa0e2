"""Energy model: score = −∇U, Gaussian limits of the preconditioning, free-energy gauge, particles."""
import math

import pytest
import torch

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving, karras_grid, uniform_grid
from boltzclf.models import EnergyModel, TimeConditionedMLP


def _model(process=None, levels=None, dim=3, sigma_data=0.7, randomise=True, dtype=torch.float64):
    process = process or VariancePreserving()
    levels = uniform_grid(1e-3, 0.999, 8) if levels is None else levels
    model = EnergyModel(TimeConditionedMLP(dim, hidden=16, n_layers=2, time_dim=8), process, levels,
                        sigma_data, (dim,)).to(dtype)
    if randomise:  # leave the zero-initialised output layer so the correction is non-trivial
        torch.manual_seed(0)
        torch.nn.init.normal_(model.network.output.weight, std=0.3)
    return model


def _gaussian_log_density(x, var):
    d = x.shape[-1]
    return -0.5 * (x**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)


@pytest.mark.parametrize("particles", [False, True], ids=["flat", "particles"])
def test_score_matches_finite_differences_of_the_energy(particles):
    """score(t, x) = −∇ₓU, checked against central differences of ``energy`` (not against autograd)."""
    if particles:
        n_atoms = 3
        model = EnergyModel(TimeConditionedMLP(n_atoms * 3, hidden=16, n_layers=2, time_dim=8), VariancePreserving(),
                            uniform_grid(1e-3, 0.999, 4), 0.5, (n_atoms, 3), particles=True).double()
        torch.manual_seed(1)
        torch.nn.init.normal_(model.network.output.weight, std=0.3)
        x = torch.randn(3, n_atoms, 3, dtype=torch.float64)
    else:
        model = _model()
        x = torch.randn(3, 3, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    h = 1e-5
    fd = torch.zeros_like(x).flatten(1)
    with torch.no_grad():
        for i in range(fd.shape[1]):
            step = torch.zeros_like(fd)
            step[:, i] = h
            step = step.reshape(x.shape)
            fd[:, i] = (model.energy(t, x + step) - model.energy(t, x - step)) / (2 * h)
    score = model.score(t, x)
    assert score.abs().max() > 0.1  # a non-trivial field
    assert torch.allclose(score, -fd.reshape(x.shape), rtol=1e-6, atol=1e-8)


def test_time_derivative_matches_finite_difference():
    model = _model()
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    h = 1e-6
    fd = (model.energy(t + h, x) - model.energy(t - h, x)) / (2 * h)
    assert torch.allclose(model.time_derivative(t, x), fd, rtol=1e-5, atol=1e-7)


def test_initial_model_is_the_normalised_gaussian_at_every_level():
    for process, levels in ((VariancePreserving(), uniform_grid(1e-3, 0.999, 8)),
                            (EDM(), karras_grid(2e-3, 80.0, 8)),
                            (StochasticInterpolant(), uniform_grid(1e-3, 0.999, 8))):
        model = _model(process, levels, randomise=False)
        x = torch.randn(5, 3, dtype=torch.float64)
        for t in levels:
            tt = torch.full((5,), float(t), dtype=torch.float64)
            var = process.input_variance(tt, model.sigma_data)
            assert torch.allclose(model.log_prob_unnormalised(tt, x), _gaussian_log_density(x, var))


def test_trained_model_tends_to_prior_at_large_noise():
    """With a non-zero network, the EDM weight σ_d/σ(t) → 0, so the model → N(0, α_in²) as σ grows."""
    levels = karras_grid(2e-3, 1e4, 8)
    model = _model(EDM(), levels)
    x = torch.randn(64, 3, dtype=torch.float64) * 1e4
    gaps = []
    for sigma in (1e1, 1e2, 1e3, 1e4):
        tt = torch.full((64,), sigma, dtype=torch.float64)
        gauss = _gaussian_log_density(x * sigma / 1e4, EDM().input_variance(tt, model.sigma_data))
        gap = (model.log_prob_unnormalised(tt, x * sigma / 1e4) - gauss).abs().max()
        gaps.append(float(gap.detach()))
    assert gaps[0] > 1e-3  # the correction is really there
    assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-2 * gaps[0]


def test_free_energy_gauge_pins_last_level():
    model = _model()
    with torch.no_grad():
        model.free_energies.copy_(torch.arange(8, dtype=torch.float64) + 3.0)
    before = model.free_energies.detach().clone()
    model.gauge_fix_()
    assert model.free_energies[-1] == 0
    assert torch.allclose(model.free_energies[1:] - model.free_energies[:-1], before[1:] - before[:-1])
    x = torch.randn(2, 3, dtype=torch.float64)
    level = torch.tensor([2, 5])
    expected = model.log_prob_unnormalised(model.levels[level].double(), x) - model.free_energies[level]
    assert torch.allclose(model.log_prob(level, x), expected)


def test_particles_are_translation_invariant():
    n_atoms = 5
    model = EnergyModel(TimeConditionedMLP(n_atoms * 3, hidden=16, n_layers=2, time_dim=8), VariancePreserving(),
                        uniform_grid(1e-3, 0.999, 4), 0.5, (n_atoms, 3), particles=True).double()
    torch.nn.init.normal_(model.network.output.weight, std=0.3)
    assert model.dim == 3 * (n_atoms - 1)
    x = torch.randn(4, n_atoms, 3, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    shifted = x + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(model.energy(t, x), model.energy(t, shifted))
    score = model.score(t, x)
    assert torch.allclose(score.sum(1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-10)
    z = model.noise_like(x)
    assert torch.allclose(z.mean(1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)


def test_fixed_time_energy_satisfies_target_protocol():
    from boltzclf.targets import EnergyTarget

    model = _model()
    target = model.at_time(0.3)
    assert isinstance(target, EnergyTarget)
    x = torch.randn(6, 3, dtype=torch.float64)
    assert target.energy(x).shape == (6,)
    assert torch.allclose(target.force(x), model.score(torch.full((6,), 0.3, dtype=torch.float64), x))


def test_time_path_shared_over_repeated_times_equals_the_per_row_network():
    """Batches with few distinct times compute the time path once per time and spread it to the rows;
    the result equals the per-row computation (taken when c needs gradients)."""
    torch.manual_seed(2)
    net = TimeConditionedMLP(3, hidden=16, n_layers=2, time_dim=8).double()
    torch.nn.init.normal_(net.output.weight, std=0.3)
    c = torch.tensor([0.1, -0.4, 0.7], dtype=torch.float64).repeat(16)[torch.randperm(48)]
    x = torch.randn(48, 3, dtype=torch.float64)
    assert torch.allclose(net(c, x), net(c.clone().requires_grad_(True), x), rtol=1e-12, atol=1e-12)
