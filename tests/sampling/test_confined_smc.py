"""SMC confined to one side of a divide (ConfinedPath): the side's normaliser and the free-energy
difference of the two sides, on a Gaussian mixture whose light mode holds 2 % of the mass.

The truth is the closed form Z_R = Σ_k w_k Φ(μ_k0 / √v_k0) of the half-space R = {x_0 ≥ 0}. The model
has the exact components with 9:1 weights, so only the true target at level 0 and correct weights give
the 2 % back, and without the tilt towards R its walk to the light side thins out to a few per cent
of effective particles before the last level.
"""
import math

import pytest
import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import ConfinedPath, LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import GaussianMixture

VP = VariancePreserving()
TIMES = log_snr_grid(VP, 1e-3, 0.9999, 64)
MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
VARIANCES = torch.full((2, 2), 0.09, dtype=torch.float64)
TARGET = GaussianMixture(torch.tensor([0.98, 0.02], dtype=torch.float64), MEANS, VARIANCES)
MODEL = MixtureMarginalEnergy(GaussianMixture(torch.tensor([0.9, 0.1], dtype=torch.float64), MEANS, VARIANCES),
                              VP, TIMES)
SETTINGS = SMCSettings(n_particles=2048, n_groups=16)


#: The tilt's width at each level: the noise level σ(t_k) = γ_k/α_k in units of x_0.
NOISE_WIDTHS = VP.sigma(TIMES)


class HalfSpace:
    """R = {side · x_0 ≥ 0}, coordinate side · x_0."""

    def __init__(self, side: int):
        self.side = side

    def contains(self, x):
        return self.coordinate(x) >= 0

    def coordinate(self, x):
        return self.side * x[:, 0]


class ConfinedEverywhere(ConfinedPath):
    """The wrong construction: the indicator at every level (the upper levels lose their support)."""

    def log_density(self, k, x):
        logp, score = self.path.log_density(k, x)
        return torch.where(self.region.contains(x), logp, torch.full_like(logp, -math.inf)), score


def _exact_log_z(side: int) -> float:
    z = torch.special.ndtr(side * MEANS[:, 0] / VARIANCES[:, 0].sqrt())
    return float(torch.log((TARGET.weights * z).sum()))


def _confined_smc(side: int, generator, path_class=ConfinedPath, widths=NOISE_WIDTHS, settings=SETTINGS):
    path = path_class(LearnedPath(MODEL, final_target=TARGET), HalfSpace(side), widths)
    kernels = DiffusionKernels(VP, TIMES, MODEL, 1.0, "ddpm", "isotropic")
    return smc(path, kernels, settings, generator, dtype=torch.float64)


@pytest.mark.parametrize("moves", [0, 2])
def test_each_side_gives_its_exact_normaliser_and_their_free_energy_difference(moves, generator):
    settings = SMCSettings(n_particles=2048, n_groups=16, mcmc_steps=moves, mcmc_step_size=1e-3)
    light, heavy = _confined_smc(+1, generator, settings=settings), _confined_smc(-1, generator, settings=settings)
    for side, result in ((+1, light), (-1, heavy)):
        assert abs(result.log_z - _exact_log_z(side)) <= 3 * result.log_z_se, (side, result.log_z, result.log_z_se)
        outside = side * result.samples[:, 0] < 0
        assert bool((result.log_weights[outside] == -math.inf).all())  # level 0 is confined exactly
        assert result.ess_final > 0.3 and result.n_nonfinite == 0, (result.ess_final, result.n_nonfinite)
        assert float(result.ess.min()) > 0.2  # the tilt keeps the walk on its side (untilted: 0.08 on the light one)
    delta_f = -(light.log_z - heavy.log_z)
    se = math.hypot(light.log_z_se, heavy.log_z_se)
    exact = _exact_log_z(-1) - _exact_log_z(+1)  # ln 49 = 3.89 kT
    assert abs(delta_f - exact) <= 3 * se and se < 0.1, (delta_f, exact, se)
    if moves:  # MALA under the tilted levels: exact estimates above, a sane acceptance here
        assert 0.3 < float(light.acceptance.nanmean()) < 0.95


def test_a_tilt_sharper_than_the_noise_loses_the_mass_the_noising_kernel_carries_out(generator):
    everywhere = _confined_smc(+1, generator, ConfinedEverywhere)
    fixed = _confined_smc(+1, generator, widths=torch.full_like(NOISE_WIDTHS, 0.05))
    for result in (everywhere, fixed):
        assert _exact_log_z(+1) - result.log_z > 10 * result.log_z_se, (result.log_z, result.log_z_se)


def test_groups_left_without_weight_drop_out_of_the_pooled_weights(generator):
    path = ConfinedPath(LearnedPath(MODEL, final_target=TARGET), HalfSpace(+1), torch.full_like(NOISE_WIDTHS, 1e3))
    kernels = DiffusionKernels(VP, TIMES, MODEL, 1.0, "ddpm", "isotropic")
    result = smc(path, kernels, SMCSettings(n_particles=64, n_groups=32), generator, dtype=torch.float64)
    dead = result.log_z_groups == -math.inf  # both particles of the group ended outside R
    assert 0 < int(dead.sum()) < 32
    weights = torch.exp(result.log_weights).reshape(32, 2)
    assert not bool(torch.isnan(result.log_weights).any()) and abs(float(weights.sum()) - 1.0) < 1e-12
    assert bool((weights[dead] == 0).all()) and 0 < result.ess_final <= 1 and not bool(torch.isnan(result.ess).any())
