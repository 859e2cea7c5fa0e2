"""The annealing bridge from a learned first level to the true target, on exact Gaussian mixtures.

The model is wrong twice over against the 2:1 target: 1:1 mode weights *and* components 1.6 times too
wide (a local error, like a learned molecular energy's bonds). Only correct bridge weights bring the
heavy mode's mass back to 2/3 and log Ẑ to the target's log Z = 0.
"""
import pytest
import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.bridge import BridgedPath, BridgeKernels
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import GaussianMixture, two_modes

VP = VariancePreserving()
TARGET = two_modes(3)
WRONG = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), TARGET.means, 1.6 * TARGET.variances)


def _bridged(n_bridge: int):
    model = MixtureMarginalEnergy(WRONG, VP, log_snr_grid(VP, 1e-3, 0.9999, 32))
    path = LearnedPath(model, times=log_snr_grid(VP, 1e-3, 0.9999, 32))
    kernels = DiffusionKernels(VP, path.times, model, 1.0, "ddpm", "isotropic")
    return BridgedPath(path, TARGET, n_bridge), BridgeKernels(kernels, n_bridge), model


def test_bridge_levels_run_from_the_model_to_the_target():
    path, _, model = _bridged(4)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert path.n_levels == 32 + 4
    logp0, score0 = path.log_density(0, x)
    assert torch.allclose(logp0, TARGET.log_prob(x)) and torch.allclose(score0, TARGET.score(x))
    logp4, _ = path.log_density(4, x)
    t_min = torch.full((5,), float(model.levels[0]), dtype=torch.float64)
    assert torch.allclose(logp4, model.log_prob_unnormalised(t_min, x))
    logp2, _ = path.log_density(2, x)
    assert torch.allclose(logp2, 0.5 * (logp0 + logp4))


@pytest.mark.parametrize("moves", [0, 2])
def test_bridged_smc_corrects_weights_and_widths(moves, generator):
    path, kernels, _ = _bridged(16)
    settings = SMCSettings(4096, 16, mcmc_steps=moves, mcmc_last=16, mcmc_step_size=0.05)
    result = smc(path, kernels, settings, generator, dtype=torch.float64)
    labels = TARGET.responsibilities(result.samples).argmax(1)
    heavy = weighted_fractions(labels, 2, result.log_weights, result.ancestors)
    assert abs(float(heavy.value[0]) - 2 / 3) <= 3 * float(heavy.se[0])
    assert abs(result.log_z) <= 3 * result.log_z_se
    # the width too: the weighted second moment about the modes is the target's
    w = torch.exp(result.log_weights)
    centred = result.samples - TARGET.means[labels]
    variance = float((w[:, None] * centred ** 2).sum() / 3)
    assert variance == pytest.approx(float(TARGET.variances[0, 0]), rel=0.1)
    assert result.n_target_evals >= 4096 * 16
    if moves:
        assert torch.isnan(result.acceptance[:-16]).all() and not torch.isnan(result.acceptance[-16:]).any()
        assert 0.2 < float(result.acceptance[-16:].mean()) < 0.95


def test_bridge_refuses_a_path_that_already_ends_in_the_target():
    model = MixtureMarginalEnergy(WRONG, VP, log_snr_grid(VP, 1e-3, 0.9999, 8))
    with pytest.raises(ValueError, match="without final_target"):
        BridgedPath(LearnedPath(model, final_target=TARGET), TARGET, 4)
    with pytest.raises(ValueError, match="n_bridge >= 1"):
        BridgedPath(LearnedPath(model), TARGET, 0)
