"""SMC, diffusion AIS and importance reweighting towards a true target, on exact Gaussian-mixture models.

Truths come from the mixtures themselves (weights, closed-form normalisers), not from the samplers.
The mis-weighted model has the exact components with 1:1 weights against the 2:1 target: only correct
weights (target at level 0, kernel ratios, resampling bookkeeping) bring the heavy-mode mass back to 2/3.
"""
import math

import pytest
import torch

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.kernels import DiffusionKernels, InterpolantKernels
from boltzclf.sampling.ode import FlowSolver, probability_flow_sample
from boltzclf.sampling.paths import LearnedPath, TargetStart
from boltzclf.sampling.resampling import systematic_indices
from boltzclf.sampling.smc import SMCSettings, diffusion_ais, smc
from boltzclf.targets.gmm import GaussianMixture, marginal_velocity, two_modes

VP = VariancePreserving()
TARGET = two_modes(3)
MISWEIGHTED = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), TARGET.means, TARGET.variances)


def _model(mixture, n_levels=32):
    return MixtureMarginalEnergy(mixture, VP, log_snr_grid(VP, 1e-3, 0.9999, n_levels))


class _UnnormalisedModel(MixtureMarginalEnergy):
    """Exact marginals times e^{10 t}: intermediate targets with unknown normalisers, as a learned model has."""

    def log_prob_unnormalised(self, t, x):
        return super().log_prob_unnormalised(t, x) + 10.0 * t.to(x.dtype)


def _run_smc(model, generator, n_levels=64, settings=None, kind="ddpm", posterior_variance="hessian",
             score_only=False):
    path = LearnedPath(model, final_target=TARGET, times=log_snr_grid(VP, 1e-3, 0.9999, n_levels),
                       score_only=score_only)
    kernels = DiffusionKernels(VP, path.times, model, 1.0, kind, posterior_variance)
    if score_only:
        return diffusion_ais(path, kernels, 4096, generator, n_groups=16, dtype=torch.float64)
    settings = settings or SMCSettings(n_particles=4096, n_groups=16)
    return smc(path, kernels, settings, generator, dtype=torch.float64)


def _heavy_fraction(result):
    labels = TARGET.responsibilities(result.samples).argmax(1)
    estimate = weighted_fractions(labels, 2, result.log_weights, result.ancestors)
    return float(estimate.value[0]), float(estimate.se[0])


def test_smc_with_the_exact_model_keeps_its_particles_and_finds_log_z(generator):
    result = _run_smc(_model(TARGET), generator)
    assert result.ess_final >= 0.95
    assert abs(result.log_z) <= 3 * result.log_z_se  # TARGET is normalised: log Z = 0
    heavy, se = _heavy_fraction(result)
    assert abs(heavy - 2 / 3) <= 3 * se
    assert result.n_model_evals == 4096 * 63 and result.n_target_evals == 4096
    assert result.ess.shape == (63,) and result.resampled.shape == (63,)


@pytest.mark.parametrize("sampler", ["smc", "smc_mala", "ais"])
def test_misweighted_model_is_corrected_to_the_true_weights(sampler, generator):
    model = _model(MISWEIGHTED)
    if sampler == "ais":
        result = _run_smc(model, generator, score_only=True)
    else:
        moves = 2 if sampler == "smc_mala" else 0
        result = _run_smc(model, generator, settings=SMCSettings(4096, 16, mcmc_steps=moves, mcmc_step_size=1e-4))
    heavy, se = _heavy_fraction(result)
    assert abs(heavy - 2 / 3) <= 3 * se, (heavy, se)
    assert abs(result.log_z) <= 3 * result.log_z_se
    if sampler == "smc_mala":
        assert 0.2 < float(result.acceptance.mean()) < 0.95
    # without the target at level 0 the model's own 1:1 weights come back: the correction is real
    unweighted = float((TARGET.responsibilities(result.samples).argmax(1) == 0).double().mean())
    assert abs(unweighted - 0.5) < 0.1


def test_misweighted_log_z_is_unbiased_over_seeds():
    """z-scores of log Ẑ over independent seeds: mean within 3/√n of 0 and none far out.

    The isotropic kernel on 32 levels is poor for these narrow modes, so groups resample several
    times, and the intermediate targets carry normalisers e^{10 t}: the bookkeeping of Ẑ across
    resampling events is exercised.
    """
    model = _UnnormalisedModel(MISWEIGHTED, VP, log_snr_grid(VP, 1e-3, 0.9999, 32))
    z = []
    for seed in range(8):
        result = _run_smc(model, torch.Generator().manual_seed(seed), n_levels=32, posterior_variance="isotropic",
                          settings=SMCSettings(n_particles=2048, n_groups=16, resample_threshold=0.5))
        assert float(result.resampled.sum()) >= 1
        z.append(result.log_z / result.log_z_se)
    z = torch.tensor(z)
    assert abs(float(z.mean())) <= 3 / math.sqrt(len(z)) + 0.3, z
    assert float(z.abs().max()) < 4, z


def test_importance_reweighting_of_probability_flow_samples(generator):
    """Flow samples of the 1:1 model, log-weights −u(x) − log q(x), recover 2:1 and log Z = 0."""
    model = _model(MISWEIGHTED)
    flow = probability_flow_sample(model, 1024, generator, solver=FlowSolver(method="rk4", steps=64))
    log_w = (-TARGET.energy(flow.samples) - flow.log_prob)
    labels = TARGET.responsibilities(flow.samples).argmax(1)
    estimate = weighted_fractions(labels, 2, log_w)
    assert abs(float(estimate.value[0]) - 2 / 3) <= 3 * float(estimate.se[0])
    assert abs(float((labels == 0).double().mean()) - 0.5) < 0.1


def test_smc_along_an_interpolant_reaches_the_start_density(generator):
    """From exact samples of a t = 1 mixture to the t = 0 target along the SI-SDE with the exact velocity."""
    interpolant = StochasticInterpolant(1.0)
    end = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64),
                          torch.tensor([[0.0, 1.5, 0.0], [0.0, -1.5, 0.0]], dtype=torch.float64),
                          torch.full((2, 3), 0.2, dtype=torch.float64))
    model = MixtureMarginalEnergy(TARGET, interpolant, torch.linspace(1e-3, 1 - 1e-3, 16), end=end)
    path = LearnedPath(model, final_target=TARGET, start=TargetStart(end),
                       times=torch.linspace(1e-3, 1 - 1e-3, 200, dtype=torch.float64))

    def velocity(t, x):
        return marginal_velocity(TARGET, end, interpolant, t.to(torch.float64), x)

    kernels = InterpolantKernels(interpolant, path.times, model, velocity, epsilon=0.05)
    result = smc(path, kernels, SMCSettings(n_particles=4096, n_groups=16), generator, dtype=torch.float64)
    heavy, se = _heavy_fraction(result)
    assert abs(heavy - 2 / 3) <= 3 * se
    assert abs(result.log_z) <= 3 * result.log_z_se


def test_systematic_resampling_keeps_each_particle_its_expected_number_of_copies(generator):
    log_w = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64) + 1e-300)
    idx = systematic_indices(log_w, generator)
    counts = torch.stack([torch.bincount(row, minlength=4) for row in idx])
    expected = 4 * torch.softmax(log_w, 1)
    assert ((counts - expected).abs() < 1).all()


def test_smc_settings_are_validated():
    with pytest.raises(ValueError, match="multiple of n_groups"):
        SMCSettings(n_particles=100, n_groups=8)
    with pytest.raises(ValueError, match="resample_threshold"):
        SMCSettings(resample_threshold=1.5)
    with pytest.raises(ValueError, match="score_only"):
        diffusion_ais(LearnedPath(_model(TARGET)), None, 64, torch.Generator())


class _HoleModel(MixtureMarginalEnergy):
    """Exact marginals, but NaN wherever x_0 > 1.5 (a model that breaks in part of space)."""

    def log_prob_unnormalised(self, t, x):
        logp = super().log_prob_unnormalised(t, x)
        return torch.where(x[:, 0] > 1.5, torch.full_like(logp, math.nan), logp)


def test_non_finite_energies_are_counted_and_get_zero_weight(generator):
    result = _run_smc(_HoleModel(TARGET, VP, log_snr_grid(VP, 1e-3, 0.9999, 16)), generator, n_levels=16,
                      posterior_variance="isotropic")
    assert result.n_nonfinite > 0
    assert not torch.isnan(result.log_weights).any()
    assert bool((result.log_weights == -math.inf).any())  # broken paths keep weight 0, they are not dropped
    assert len(result.samples) == 4096 and math.isfinite(result.log_z)
