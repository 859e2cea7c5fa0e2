"""Replica exchange over diffusion levels: exact swap ratios on Gaussian data, and mode weights recovered
at level 0 where local moves alone cannot cross the barrier.

Statistical checks follow the openmmtools recipe: the level-0 chains of the W columns are independent,
their statistical inefficiency g comes from the pooled autocorrelation of the observable
(pymbar.timeseries.statistical_inefficiency_multiple, one time series per walker chain), and the
estimate must lie within 6 standard errors sqrt(var · g / N) of the exact value.
"""
import math

import numpy as np
import pytest
import torch
from pymbar import timeseries

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving, log_snr_grid
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.kernels import DiffusionKernels, InterpolantKernels
from boltzclf.sampling.paths import LearnedPath, TargetStart
from boltzclf.sampling.replica import (ReplicaSettings, init_replica_state, ladder_times, propose_swap,
                                       replica_exchange, replica_step)
from boltzclf.targets.gmm import GaussianMixture, marginal_velocity, two_modes

VP = VariancePreserving()
TARGET = two_modes(2)  # heavy mode (weight 2/3) is component 0
N_LEVELS = 8
TIMES = log_snr_grid(VP, 1e-3, 0.999, N_LEVELS)


def _mean_and_se(series: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``series`` (n_steps, W), its standard error and the statistical inefficiency g."""
    g = timeseries.statistical_inefficiency_multiple([series[:, w] for w in range(series.shape[1])])
    return float(series.mean()), math.sqrt(float(series.var()) * g / series.size), float(g)


def _heavy_fraction(samples: torch.Tensor) -> np.ndarray:
    """Indicator of the heavy mode per sample, ``(n_kept, W)``."""
    flat = samples.reshape(-1, TARGET.dim)
    return (TARGET.responsibilities(flat)[:, 0] > 0.5).double().reshape(samples.shape[:2]).numpy()


def _mixture_path(data: GaussianMixture):
    model = MixtureMarginalEnergy(data, VP, TIMES)
    path = LearnedPath(model, final_target=TARGET, times=TIMES)
    return path, DiffusionKernels(VP, path.times, model, 1.0, "ddpm", "hessian")


def _light_mode_start(walkers: int, generator) -> torch.Tensor:
    """All walkers of every level in the light mode, noised to the level's time: ``(L, W, 2)``."""
    light = GaussianMixture(torch.ones(1, dtype=torch.float64), TARGET.means[1:], TARGET.variances[1:])
    return torch.stack([light.noised(VP, float(t)).sample(walkers, generator) for t in TIMES])


def _settings(swap_every: int = 1) -> ReplicaSettings:
    # initial MALA steps at the local length scale of each level (component variance of p_t); warm-up tunes them
    scale = VP.alpha(TIMES) ** 2 * float(TARGET.variances[0, 0]) + VP.gamma(TIMES) ** 2
    return ReplicaSettings(n_walkers=256, n_steps=250, warmup=75, swap_every=swap_every,
                           step_size=tuple(scale.tolist()))


def _gaussian_setup(kind: str):
    data = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[1.5, -0.5, 0.3]], dtype=torch.float64),
                           torch.ones(1, 3, dtype=torch.float64))  # isotropic, variance σ_d² = 1
    times = log_snr_grid(VP, 1e-3, 0.999, 6)
    model = MixtureMarginalEnergy(data, VP, times)
    path = LearnedPath(model)
    return path, DiffusionKernels(VP, path.times, model, 1.0, kind, "isotropic")


def test_swap_ratio_is_exactly_one_with_the_exact_reverse_kernel(generator):
    """Gaussian data + exact DDPM kernel: p_i(x) L(x'|x) = p_j(x') M(x|x') makes every term cancel."""
    path, kernels = _gaussian_setup("ddpm")
    settings = ReplicaSettings(n_walkers=128, n_steps=4, warmup=0, step_size=0.05)
    state = init_replica_state(path, kernels, settings, generator, dtype=torch.float64)
    worst = 0.0
    for i in range(path.n_levels - 1):
        proposal = propose_swap(path, kernels, i, state.x[i], state.logp[i], state.score[i],
                                state.x[i + 1], state.logp[i + 1], state.score[i + 1], generator)
        worst = max(worst, float(proposal.log_ratio.abs().max()))
    assert worst < 1e-9
    for _ in range(2):  # both parities: every proposed swap is accepted
        state, info = replica_step(path, kernels, state, settings, generator)
    assert bool(info.swap_attempted.any())
    assert bool(info.swap_accepted[info.swap_attempted].all())
    # the same ratio is far from 0 with an approximate kernel, so the check above has teeth
    path, kernels = _gaussian_setup("ei")
    state = init_replica_state(path, kernels, settings, generator, dtype=torch.float64)
    proposal = propose_swap(path, kernels, 2, state.x[2], state.logp[2], state.score[2], state.x[3],
                            state.logp[3], state.score[3], generator)
    assert float(proposal.log_ratio.abs().max()) > 0.01


def test_swaps_recover_the_mode_weights_from_a_light_mode_start(generator):
    """Exact model, true target at level 0, every walker started in the light mode: the heavy-mode
    fraction at level 0 is 2/3; the same run without swaps stays in the light mode."""
    path, kernels = _mixture_path(TARGET)
    start = _light_mode_start(256, generator)
    result = replica_exchange(path, kernels, _settings(), generator, x0=start, dtype=torch.float64)
    estimate, se, g = _mean_and_se(_heavy_fraction(result.samples))
    assert abs(estimate - 2.0 / 3.0) <= 6 * se, (estimate, se, g)
    assert bool((result.swap_acceptance > 0.5).all()), result.swap_acceptance  # exact model, adjacent levels
    assert bool(((result.mala_acceptance > 0.4) & (result.mala_acceptance < 0.75)).all()), result.mala_acceptance
    assert result.round_trips > 0
    assert result.n_target_evals > 0 and result.n_model_evals > 0
    assert result.samples.shape == (250, 256, 2)

    local_only = replica_exchange(path, kernels, _settings(swap_every=0), generator, x0=start, dtype=torch.float64)
    stuck = float(_heavy_fraction(local_only.samples).mean())
    assert stuck < 0.01, stuck  # MALA alone never crosses the barrier
    assert bool(torch.isnan(local_only.swap_acceptance).all()) and local_only.round_trips == 0


def test_misweighted_model_still_gives_the_true_weights_at_level_0(generator):
    """Model with exact components but weights 1:1 at every interior level, true 2:1 target at level 0:
    the swaps' Metropolis ratio uses the true density at level 0, so level 0 still samples 2:1."""
    wrong = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), TARGET.means, TARGET.variances)
    path, kernels = _mixture_path(wrong)
    result = replica_exchange(path, kernels, _settings(), generator, x0=_light_mode_start(256, generator),
                              dtype=torch.float64)
    estimate, se, g = _mean_and_se(_heavy_fraction(result.samples))
    assert abs(estimate - 2.0 / 3.0) <= 6 * se, (estimate, se, g)
    # level 1 samples the 1:1 model, and level 0 differs from it by 2/3 vs 1/2: a real test of the ratio
    level1 = float(_heavy_fraction(result.state.x[1:2]).mean())
    assert abs(level1 - 0.5) < 0.15, level1
    print(f"mis-weighted model: heavy fraction {estimate:.4f} ± {se:.4f} (g = {g:.1f}), "
          f"swap acceptance per pair {result.swap_acceptance.numpy().round(3)}")


def test_inputs_are_validated(generator):
    path, kernels = _gaussian_setup("ddpm")
    with pytest.raises(ValueError, match="x0 has shape"):
        replica_exchange(path, kernels, ReplicaSettings(n_walkers=4, n_steps=1, warmup=0), generator,
                         x0=torch.zeros(3, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="step_size has"):
        init_replica_state(path, kernels, ReplicaSettings(n_walkers=4, step_size=(0.1, 0.2)), generator)
    with pytest.raises(ValueError, match="positive"):
        ReplicaSettings(step_size=0.0)
    with pytest.raises(ValueError, match="same times"):
        other = DiffusionKernels(VP, log_snr_grid(VP, 1e-3, 0.999, 5), path.model)
        replica_exchange(path, other, ReplicaSettings(n_walkers=4, n_steps=1, warmup=0), generator)


def test_same_seed_same_chains():
    path, kernels = _gaussian_setup("ei")
    settings = ReplicaSettings(n_walkers=8, n_steps=5, warmup=3, step_size=0.1)
    runs = [replica_exchange(path, kernels, settings, torch.Generator().manual_seed(7), dtype=torch.float64)
            for _ in range(2)]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert torch.equal(runs[0].state.labels, runs[1].state.labels)


def test_round_trips_follow_the_labels(generator):
    """With every swap accepted (exact kernel on Gaussian data) the labels move deterministically; the
    round trips counted by the sampler match a count from each label's level history."""
    path, kernels = _gaussian_setup("ddpm")
    n_levels, steps = path.n_levels, 40
    settings = ReplicaSettings(n_walkers=3, n_steps=steps, warmup=0, swap_every=1, step_size=0.05)
    result = replica_exchange(path, kernels, settings, generator, dtype=torch.float64)
    assert bool((result.swap_acceptance == 1.0).all())
    order, history = list(range(n_levels)), {label: [label] for label in range(n_levels)}
    for phase in range(steps):  # alternating even / odd transpositions, all accepted
        for i in range(phase % 2, n_levels - 1, 2):
            order[i], order[i + 1] = order[i + 1], order[i]
        for level, label in enumerate(order):
            history[label].append(level)
    expected = 0
    for levels in history.values():
        ends = [lv for lv in levels if lv in (0, n_levels - 1)]
        ends = [e for n, e in enumerate(ends) if n == 0 or e != ends[n - 1]]  # alternating visits of the ends
        first_top = ends.index(n_levels - 1) if n_levels - 1 in ends else len(ends)
        expected += sum(1 for e in ends[first_top + 1:] if e == n_levels - 1)  # each return to the top
    assert expected > 0
    assert result.round_trips == 3 * expected
    assert torch.equal(result.state.labels[:, 0], torch.tensor(order))


def test_ladder_times_keep_both_ends():
    times = log_snr_grid(VP, 1e-3, 0.999, 10)
    assert torch.equal(ladder_times(times, 3), times[[0, 3, 6, 9]])
    assert torch.equal(ladder_times(times, 4), times[[0, 4, 8, 9]])
    assert torch.equal(ladder_times(times, 1), times)


def test_interpolant_path_runs_with_score_dependent_forward_kernels(generator):
    """Interpolant kernels need the score in the forward kernel: the swap machinery passes it."""
    interpolant = StochasticInterpolant(1.0)
    end = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                          torch.ones(1, 2, dtype=torch.float64))
    times = torch.linspace(0.02, 0.98, 8, dtype=torch.float64)
    model = MixtureMarginalEnergy(TARGET, interpolant, times, end=end)
    path = LearnedPath(model, start=TargetStart(end), times=times)
    kernels = InterpolantKernels(interpolant, path.times, model,
                                 lambda t, x: marginal_velocity(TARGET, end, interpolant, t, x), epsilon=0.1)
    settings = ReplicaSettings(n_walkers=32, n_steps=10, warmup=5, step_size=0.01)
    result = replica_exchange(path, kernels, settings, generator, dtype=torch.float64)
    assert result.samples.shape == (10, 32, 2) and bool(torch.isfinite(result.samples).all())
    assert bool((result.swap_acceptance > 0).all()) and result.n_nonfinite == 0, result.swap_acceptance
    assert result.n_target_evals > 0  # level K-1 is the exactly sampled t = 1 density
