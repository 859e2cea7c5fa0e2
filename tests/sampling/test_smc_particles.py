"""SMC at molecular size: a 22-particle Gaussian mixture on the centred subspace (d = 3·(22 − 1) = 63).

The target is an exact mixture of three well-separated, unit-variance components with unequal weights,
normalised on the subspace, so log Z = 0 and the component masses are known. The exact marginal model
drives SMC from the centred prior along 512 VP levels with the isotropic DDPM kernel, which is exact
within each component (σ_d = 1) and errs only where the components split; on 64 levels that costs ESS/N
≈ 0.73, on 512 levels about 0.03. No group resamples (ESS stays far above the threshold), so the final
ESS measures every kernel's error.

A final target that counts all 66 coordinates (a flat Gaussian density of the centred configuration,
the mistake of forgetting the centring) has log Z = −(3/2) log 2π: the same check must reject it.
"""
import math

import pytest
import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets import EnergyTarget
from boltzclf.targets.gmm import GaussianMixture

VP = VariancePreserving()
N_ATOMS = 22
WEIGHTS = (0.5, 0.3, 0.2)
N_PARTICLES, N_GROUPS = 2048, 16


def _target() -> GaussianMixture:
    """Three centred modes at distance 8 from the origin (10–13 apart), unit variance per degree of freedom."""
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(3, N_ATOMS, 3, generator=generator, dtype=torch.float64)
    means = means - means.mean(1, keepdim=True)
    means = 8.0 * means / means.flatten(1).norm(dim=1)[:, None, None]
    return GaussianMixture.on_centred_subspace(torch.tensor(WEIGHTS, dtype=torch.float64), means,
                                               torch.ones(3, dtype=torch.float64))


TARGET = _target()


class _UncentredDensity:
    """The same modes as a flat 66-dimensional Gaussian mixture of vec(x): log-density off by −(3/2) log 2π."""

    def __init__(self, mixture: GaussianMixture):
        self.flat = GaussianMixture(mixture.weights, mixture.means.flatten(1), mixture.variances.flatten(1))
        self.event_shape = mixture.event_shape

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat.energy(x.flatten(1))

    def force(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat.force(x.flatten(1)).reshape(x.shape)


def _run(final_target, n_levels: int, n_particles: int, seed: int):
    times = log_snr_grid(VP, 1e-3, 0.9999, n_levels)
    model = MixtureMarginalEnergy(TARGET, VP, times)
    path = LearnedPath(model, final_target=final_target, times=times)
    kernels = DiffusionKernels(VP, path.times, model, 1.0, "ddpm", "isotropic")
    settings = SMCSettings(n_particles=n_particles, n_groups=N_GROUPS)
    return smc(path, kernels, settings, torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def result():
    return _run(TARGET, n_levels=512, n_particles=N_PARTICLES, seed=12345)


def test_the_target_is_a_normalised_energy_on_the_centred_subspace():
    assert isinstance(TARGET, EnergyTarget)
    assert TARGET.event_shape == (N_ATOMS, 3) and TARGET.dim == 63
    distances = torch.cdist(TARGET.means.flatten(1), TARGET.means.flatten(1))
    assert float(distances[~torch.eye(3, dtype=torch.bool)].min()) > 10.0  # > 10 standard deviations apart


def test_smc_keeps_its_particles_and_finds_log_z(result):
    assert result.ess_final >= 0.95, result.ess_final
    assert abs(result.log_z) <= 3 * result.log_z_se, (result.log_z, result.log_z_se)  # log Z = 0
    assert float(result.resampled.sum()) == 0 and result.n_nonfinite == 0
    assert result.n_model_evals == N_PARTICLES * 511 and result.n_target_evals == N_PARTICLES


def test_smc_recovers_the_component_masses(result):
    labels = TARGET.responsibilities(result.samples).argmax(1)
    estimate = weighted_fractions(labels, 3, result.log_weights, result.ancestors)
    truth = torch.tensor(WEIGHTS, dtype=torch.float64)
    assert ((estimate.value - truth).abs() <= 3 * estimate.se).all(), (estimate.value, estimate.se)


def test_every_sample_is_centred(result):
    assert result.samples.shape == (N_PARTICLES, N_ATOMS, 3)
    assert float(result.samples.mean(1).abs().max()) < 1e-10


def test_a_target_counting_the_centre_of_geometry_is_rejected():
    """Same walk (coarser, for speed), final density normalised over 66 instead of 63 dimensions."""
    wrong = _run(_UncentredDensity(TARGET), n_levels=64, n_particles=1024, seed=7)
    shift = -1.5 * math.log(2.0 * math.pi)
    assert abs(wrong.log_z) > 3 * wrong.log_z_se, (wrong.log_z, wrong.log_z_se)
    assert abs(wrong.log_z - shift) <= 3 * wrong.log_z_se, (wrong.log_z, shift, wrong.log_z_se)
