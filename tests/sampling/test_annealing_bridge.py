"""The annealing bridge from a learned first level to the true target, on exact Gaussian mixtures.

The model is wrong twice over against the 2:1 target: 1:1 mode weights *and* components 1.6 times too
wide (a local error, like a learned molecular energy's bonds). Only correct bridge weights bring the
heavy mode's mass back to 2/3 and log Ẑ to the target's log Z = 0.
"""
from types import SimpleNamespace

import pytest
import torch

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.bridge import BridgedPath, BridgeKernels
from boltzclf.sampling.kernels import IDENTITY, DiffusionKernels, InterpolantKernels
from boltzclf.sampling.paths import GroupedFrames, LearnedPath
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import GaussianMixture, marginal_velocity, two_modes

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


def _two_sided(generator):
    """The interpolant walk of the two-sided tests: (inner path, bridged path, model, its velocity)."""
    interpolant = StochasticInterpolant(0.5)
    end = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64),
                          torch.tensor([[0.0, 1.5, 0.0], [0.0, -1.5, 0.0]], dtype=torch.float64),
                          torch.full((2, 3), 0.2, dtype=torch.float64))
    wrong_end = GaussianMixture(end.weights, end.means, 1.6 * end.variances)
    times = torch.linspace(1e-3, 1 - 1e-3, 64, dtype=torch.float64)
    model = MixtureMarginalEnergy(WRONG, interpolant, times, end=wrong_end)
    vacuum = SimpleNamespace(energy=lambda x: end.energy(x) + 2.0)
    solvated = SimpleNamespace(energy=lambda x: TARGET.energy(x) - 1.0)
    inner = LearnedPath(model, start=GroupedFrames(end.sample(1024, generator), vacuum.energy, 16), times=times)

    def velocity(t, x):  # the model's own interpolant velocity (between its wrong ends)
        return marginal_velocity(WRONG, wrong_end, interpolant, t.to(torch.float64), x)

    return inner, BridgedPath(inner, solvated, 16, top_target=vacuum, n_top=16), interpolant, velocity


def _check_two_sided(result):
    assert abs(result.log_z - 3.0) <= 3 * result.log_z_se and result.log_z_se < 0.1
    labels = TARGET.responsibilities(result.samples).argmax(1)
    heavy = weighted_fractions(labels, 2, result.log_weights, result.ancestors)
    assert abs(float(heavy.value[0]) - 2 / 3) <= 3 * float(heavy.se[0])


def test_two_sided_bridge_with_transport_between_its_bridges(generator):
    """The same walk with the interpolant SDE as the kernel between the bridges (identity on both bridges)."""
    inner, path, interpolant, velocity = _two_sided(generator)
    transport = InterpolantKernels(interpolant, inner.times, inner.model, velocity, epsilon=0.05)
    kernels = BridgeKernels(transport, 16, n_inner_levels=inner.n_levels)
    settings = SMCSettings(4096, 16, resample_threshold=0.5, mcmc_steps=2, mcmc_step_size=0.05)
    _check_two_sided(smc(path, kernels, settings, generator, dtype=torch.float64))
    with pytest.raises(IndexError):  # without the inner path's extent the top bridge would use the SDE
        smc(path, BridgeKernels(transport, 16), settings, generator, dtype=torch.float64)


def test_two_sided_bridge_estimates_the_ratio_of_the_true_ends_normalisers(generator):
    """An interpolant walk from exact t = 1 frames to the t = 0 target, with identity kernels (MALA moves
    only) and a model wrong at both ends: bridges at both ends give log Ẑ = ln Z_0 − ln Z_1 and the
    target's 2:1 mode masses. The true ends carry known offsets (Z_0 = e, Z_1 = e⁻²), so a bridge that
    ignored either end, or a reversed top bridge, would miss log Z_0/Z_1 = 3."""
    _, path, _, _ = _two_sided(generator)
    assert path.n_levels == 64 + 32
    settings = SMCSettings(4096, 16, resample_threshold=0.5, mcmc_steps=2, mcmc_step_size=0.05)
    _check_two_sided(smc(path, IDENTITY, settings, generator, dtype=torch.float64))


def test_grouped_frames_give_each_group_its_own_frames(generator):
    frames = torch.arange(10, dtype=torch.float64)[:, None]
    start = GroupedFrames(frames, lambda x: x[:, 0], 3)
    drawn = start.sample(12, generator)[:, 0].reshape(3, 4)
    blocks = [set(row.tolist()) for row in drawn]
    assert all(len(b) == 3 for b in blocks) and not (blocks[0] & blocks[1] or blocks[0] & blocks[2] or blocks[1] & blocks[2])
    assert torch.equal(start.log_prob(frames), -frames[:, 0])
    with pytest.raises(ValueError, match="multiple"):
        start.sample(10, generator)


def test_bridged_levels_carry_the_learned_time_they_sit_at():
    path, _, _ = _bridged(4)
    inner = log_snr_grid(VP, 1e-3, 0.9999, 32).to(torch.float64)
    assert path.times.shape == (path.n_levels,) == (36,)
    assert torch.equal(path.times[:4], inner[:1].expand(4)) and torch.equal(path.times[4:], inner)
    topped = BridgedPath(path.path, TARGET, 2, top_target=TARGET, n_top=3)
    assert torch.equal(topped.times[-3:], inner[-1:].expand(3)) and topped.times.shape == (37,)
