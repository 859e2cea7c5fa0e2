"""Probability-flow ODE likelihoods against closed-form marginals (Gaussian mixtures, Gaussians, particles).

Exact models give exact scores, so with exact divergence the only error is the ODE solver's; each check
compares log q with the exact marginal log-density, which a wrong sign or factor in the drift or the
divergence (or the wrong number of degrees of freedom for particles) breaks by far more than the bound.
"""
import math

import pytest
import torch

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving, karras_grid, log_snr_grid, \
    uniform_grid
from boltzclf.models import EnergyModel, TimeConditionedMLP
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.models.energy import TimeDependentEnergy
from boltzclf.sampling.ode import FlowSolver, probability_flow, probability_flow_log_prob, \
    probability_flow_sample
from boltzclf.sampling.priors import GaussianPrior
from boltzclf.targets.gmm import GaussianMixture, interpolant_marginal, marginal_velocity, mog40, two_modes

TIGHT = FlowSolver("dopri5", rtol=1e-7, atol=1e-7)


def _process(kind):
    if kind == "vp":
        vp = VariancePreserving()
        return vp, log_snr_grid(vp, 1e-3, 0.999, 40)
    return EDM(), karras_grid(2e-3, 80.0, 40)


def _ends(model):
    return float(model.levels[-1]), float(model.levels[0])


@pytest.mark.parametrize("kind, target", [("vp", two_modes(4)), ("edm", two_modes(3)),
                                          ("vp", mog40(2, seed=1)), ("edm", mog40(2, seed=2))],
                         ids=["vp-two_modes4", "edm-two_modes3", "vp-mog40_2", "edm-mog40_2"])
def test_flow_from_exact_top_marginal_gives_exact_log_density(kind, target):
    process, levels = _process(kind)
    model = MixtureMarginalEnergy(target, process, levels)
    t_max, t_min = _ends(model)
    result = probability_flow_sample(model, 48, torch.Generator().manual_seed(0),
                                     prior=target.noised(process, t_max), solver=TIGHT)
    exact = target.noised(process, t_min).log_prob(result.samples)
    assert result.samples.shape == (48, target.dim) and result.log_prob.dtype == torch.float64
    assert float(result.times[0]) == t_max and float(result.times[-1]) == t_min
    assert (result.times[1:] < result.times[:-1]).all() and result.n_function_evaluations > len(result.times)
    assert (result.log_prob - exact).abs().max() <= 1e-3
    # the flow moved the points by far more than the tolerance: the check is not vacuous
    assert (result.log_prob - result.latent_log_prob).abs().max() > 1.0


@pytest.mark.parametrize("kind, target", [("vp", mog40(2, seed=3)), ("edm", two_modes(4))], ids=["vp", "edm"])
def test_log_prob_of_exact_samples_is_exact(kind, target):
    process, levels = _process(kind)
    model = MixtureMarginalEnergy(target, process, levels)
    t_max, t_min = _ends(model)
    data_marginal = target.noised(process, t_min)
    x = data_marginal.sample(48, torch.Generator().manual_seed(1))
    result = probability_flow_log_prob(model, x, prior=target.noised(process, t_max), solver=TIGHT)
    assert float(result.times[0]) == t_min and float(result.times[-1]) == t_max  # integration order
    assert (result.log_prob - data_marginal.log_prob(x)).abs().max() <= 1e-3
    assert torch.equal(result.samples, x)
    assert torch.allclose(result.latent_log_prob, target.noised(process, t_max).log_prob(result.latents))


def test_hutchinson_log_density_is_unbiased_and_exact_one_is_not_noisy():
    target, (process, levels) = two_modes(4), _process("vp")
    model = MixtureMarginalEnergy(target, process, levels)
    t_max, t_min = _ends(model)
    prior, exact = target.noised(process, t_max), target.noised(process, t_min)
    for probe, n_probes in (("rademacher", 1), ("gaussian", 2)):
        solver = FlowSolver("dopri5", rtol=1e-6, atol=1e-6, divergence="hutchinson", probe=probe, n_probes=n_probes)
        result = probability_flow_sample(model, 256, torch.Generator().manual_seed(2), prior=prior, solver=solver)
        error = result.log_prob - exact.log_prob(result.samples)
        se = error.std() / math.sqrt(len(error))
        assert error.std() > 1e-2  # the estimator is genuinely random here...
        assert abs(float(error.mean())) <= 4 * float(se)  # ...and unbiased
        spread = (result.log_prob - result.latent_log_prob).std()
        assert float(se) < 0.2 * float(spread)  # the bound is tight compared with the log-density change


def test_gaussian_target_closed_form_flow_map_and_density():
    """N(μ, diag v) under VP: the flow is the per-dimension affine map between the marginals."""
    mu = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
    var = torch.tensor([[0.2, 1.5, 0.05]], dtype=torch.float64)
    target = GaussianMixture(torch.ones(1, dtype=torch.float64), mu, var)
    process, levels = _process("vp")
    model = MixtureMarginalEnergy(target, process, levels)
    t_max, t_min = _ends(model)
    top, bottom = target.noised(process, t_max), target.noised(process, t_min)

    def affine(z):  # exact flow map from t_max to t_min
        return bottom.means + (bottom.variances / top.variances).sqrt() * (z - top.means)

    log_det = 0.5 * torch.log(bottom.variances / top.variances).sum()
    result = probability_flow_sample(model, 32, torch.Generator().manual_seed(3), prior=top, solver=TIGHT)
    assert torch.allclose(result.samples, affine(result.latents), atol=1e-5, rtol=0)
    assert torch.allclose(result.log_prob, result.latent_log_prob - log_det, atol=1e-5, rtol=0)
    assert torch.allclose(result.log_prob, bottom.log_prob(result.samples), atol=1e-5, rtol=0)

    # fixed-step solvers on a uniform grid converge at their order (euler 1, rk4 4); on the model's grid
    # (49 steps, dense where the flow is fast) rk4 is accurate
    def error(method, steps):
        r = probability_flow_sample(model, 32, torch.Generator().manual_seed(3), prior=top,
                                    solver=FlowSolver(method, steps=steps))
        assert len(r.times) == (steps or len(levels) - 1) + 1
        return float((r.log_prob - bottom.log_prob(r.samples)).abs().max())

    e_euler = [error("euler", n) for n in (100, 200)]
    e_rk4 = [error("rk4", n) for n in (50, 100)]
    assert 1.6 < e_euler[0] / e_euler[1] < 2.4
    assert 10.0 < e_rk4[0] / e_rk4[1] < 22.0
    assert error("rk4", None) < 1e-3


def test_default_prior_is_exact_for_standard_normal_data():
    """Data N(0, I) under EDM: p_t = N(0, (1 + t²) I) is the model's Gaussian prior at every t (σ_d = 1)."""
    target = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                             torch.ones(1, 2, dtype=torch.float64))
    process, levels = _process("edm")
    model = MixtureMarginalEnergy(target, process, levels)
    t_max, t_min = _ends(model)
    result = probability_flow_sample(model, 32, torch.Generator().manual_seed(4), solver=TIGHT)
    assert torch.allclose(result.latent_log_prob, target.noised(process, t_max).log_prob(result.latents))
    assert (result.log_prob - target.noised(process, t_min).log_prob(result.samples)).abs().max() <= 1e-5
    assert torch.allclose(result.samples, result.latents * math.sqrt((1 + t_min**2) / (1 + t_max**2)), atol=1e-5)


def test_interpolant_flow_with_exact_velocity_gives_exact_log_density():
    si = StochasticInterpolant(0.8)
    start, end = two_modes(2, separation=1.0), mog40(2, seed=4)
    model = MixtureMarginalEnergy(start, si, uniform_grid(1e-3, 1 - 1e-3, 40), end=end)
    t_max, t_min = _ends(model)
    top, bottom = interpolant_marginal(start, end, si, t_max), interpolant_marginal(start, end, si, t_min)

    def velocity(t, x):
        return marginal_velocity(start, end, si, t, x)

    result = probability_flow_sample(model, 48, torch.Generator().manual_seed(5), prior=top, velocity=velocity,
                                     solver=TIGHT)
    assert (result.log_prob - bottom.log_prob(result.samples)).abs().max() <= 1e-3
    assert (result.log_prob - result.latent_log_prob).abs().max() > 1.0
    # the samples are start-distributed: mass of start's heavy mode (component 0, weight 2/3) near the data end
    assert (start.responsibilities(result.samples).argmax(1) == 0).double().mean() > 0.4
    with pytest.raises(ValueError, match="velocity"):
        probability_flow_sample(model, 4, torch.Generator().manual_seed(5), prior=top)
    with pytest.raises(ValueError, match="prior"):
        probability_flow_sample(model, 4, torch.Generator().manual_seed(5), velocity=velocity)


class CentredGaussianMolecule(TimeDependentEnergy):
    """Atoms (n, 3) with x0 ~ N(0, s² I) on the centred subspace; p_t = N(0, α_t²s² + γ_t²) there."""

    def __init__(self, process, levels, n_atoms, variance):
        super().__init__()
        self._init_geometry(process, levels, math.sqrt(variance), (n_atoms, 3), particles=True)
        self.variance = variance
        self.register_buffer("free_energies", torch.zeros(len(levels)))

    def marginal_variance(self, t):
        return self.process.input_variance(t, math.sqrt(self.variance))

    def log_prob_unnormalised(self, t, x):
        v = self.marginal_variance(t.to(x.dtype))
        sq = self.centre(x).flatten(1).pow(2).sum(1)
        return -0.5 * sq / v - 0.5 * self.dim * torch.log(2 * math.pi * v)


def test_particle_flow_lives_on_centred_subspace_with_its_density():
    process, levels = _process("vp")  # f = α̇/α ≠ 0: the linear drift's divergence counts d = 6, not 9
    model = CentredGaussianMolecule(process, levels, n_atoms=3, variance=0.3)
    t_max, t_min = _ends(model)
    v_top = float(model.marginal_variance(torch.tensor(t_max, dtype=torch.float64)))
    v_bottom = float(model.marginal_variance(torch.tensor(t_min, dtype=torch.float64)))
    bottom = GaussianPrior(v_bottom, (3, 3), particles=True)
    assert model.dim == 6 and bottom.dim == 6
    for solver, bound in ((TIGHT, 1e-5), (FlowSolver("dopri5", rtol=1e-7, atol=1e-7, divergence="hutchinson"), None)):
        result = probability_flow_sample(model, 64, torch.Generator().manual_seed(6), solver=solver)
        assert result.samples.shape == (64, 3, 3)
        assert result.samples.mean(1).abs().max() < 1e-12  # centred
        assert torch.allclose(result.samples, result.latents * math.sqrt(v_bottom / v_top), atol=1e-6)
        error = result.log_prob - bottom.log_prob(result.samples)
        if bound is not None:  # d = 6, not 9: a full-space divergence would be off by 1.5·log(v_top/v_bottom)
            assert error.abs().max() <= bound
        else:
            assert abs(float(error.mean())) <= 4 * float(error.std()) / 8
    back = probability_flow_log_prob(model, result.samples, solver=TIGHT)
    assert (back.log_prob - bottom.log_prob(result.samples)).abs().max() <= 1e-5


def test_learned_float32_model_round_trip_and_determinism():
    """A float32 EnergyModel (perturbed from its Gaussian initialisation): log_prob inverts sample."""
    process, levels = _process("vp")
    torch.manual_seed(0)
    model = EnergyModel(TimeConditionedMLP(6, hidden=16, n_layers=1, time_dim=8), process, levels, 1.0, (2, 3),
                        particles=True)
    torch.nn.init.normal_(model.network.output.weight, std=0.3)
    with pytest.raises(ValueError, match="shape"):
        probability_flow_sample(model, 3, torch.Generator(), prior=GaussianPrior(1.0, (6,)))
    on_grid = FlowSolver("rk4")  # float32 evaluations: a fixed grid rather than tight adaptive tolerances
    forward = probability_flow_sample(model, 16, torch.Generator().manual_seed(7), solver=on_grid)
    backward = probability_flow_log_prob(model, forward.samples, solver=on_grid)
    assert forward.log_prob.dtype == torch.float64
    assert (forward.log_prob - forward.latent_log_prob).abs().max() > 0.5
    assert (backward.log_prob - forward.log_prob).abs().max() < 1e-3
    assert torch.allclose(backward.latents, forward.latents, atol=1e-3)
    solver = FlowSolver("rk4", steps=10, divergence="hutchinson", n_probes=2)
    runs = [probability_flow_sample(model, 8, torch.Generator().manual_seed(8), solver=solver) for _ in range(2)]
    assert torch.equal(runs[0].log_prob, runs[1].log_prob) and torch.equal(runs[0].samples, runs[1].samples)


def test_bad_arguments_are_rejected():
    target, (process, levels) = two_modes(2), _process("vp")
    model = MixtureMarginalEnergy(target, process, levels)
    x = torch.zeros(3, 2, dtype=torch.float64)
    for kwargs in ({"method": "rk45"}, {"method": "dopri5", "steps": 10}, {"divergence": "trace"},
                   {"n_probes": 0}, {"probe": "sphere"}, {"rtol": 0.0}):
        with pytest.raises(ValueError):
            FlowSolver(**kwargs)
    with pytest.raises(ValueError, match="Generator"):
        probability_flow(model, x, 0.5, 0.1, solver=FlowSolver(divergence="hutchinson"))
    with pytest.raises(ValueError, match="velocity"):
        probability_flow(model, x, 0.5, 0.1, velocity=lambda t, y: y)
    with pytest.raises(ValueError, match="non-finite"):
        probability_flow(model, x.fill_(float("nan")), 0.5, 0.1)
    with pytest.raises(ValueError, match="t_end < t_start"):
        probability_flow_sample(model, 3, torch.Generator(), t_start=0.1, t_end=0.5)
