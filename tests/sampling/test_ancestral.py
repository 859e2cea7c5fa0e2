"""Ancestral sampling with exact scores: exact on Gaussian data at any grid; on mixtures its bias shrinks
with the number of levels (the level-512 check is slow; ``benchmarks/sampler_bias.py`` reports 32/128/512)."""
import math

import pytest
import torch

from boltzclf.diffusion import EDM, VariancePreserving, karras_grid, log_snr_grid
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.targets.gmm import GaussianMixture, two_modes

VP = VariancePreserving()
N = 40_000


def _check_moments(samples, reference, n_se=4.0):
    mean, var = reference.moments()
    assert ((samples.mean(0) - mean).abs() <= n_se * (var / len(samples)).sqrt()).all()
    assert ((samples.var(0) / var - 1).abs() <= n_se * math.sqrt(2 / len(samples))).all()


@pytest.mark.parametrize("process, times", [
    (VP, log_snr_grid(VP, 1e-3, 0.999, 3)),
    (VP, log_snr_grid(VP, 1e-3, 0.999, 16)),
    (EDM(), karras_grid(2e-3, 80.0, 5)),
])
def test_ddpm_kernel_is_exact_on_gaussian_data_at_any_grid(process, times, generator):
    data = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.tensor([[1.5, -0.5]], dtype=torch.float64),
                           torch.ones(1, 2, dtype=torch.float64))
    model = MixtureMarginalEnergy(data, process, times)
    top = data.noised(process, float(model.levels[-1])).sample(N, generator)
    result = ancestral_sample(model, N, generator, start=top)
    assert result.n_score_evaluations == N * (len(times) - 1)
    assert result.time == pytest.approx(float(model.levels[0]))
    _check_moments(result.samples, data.noised(process, result.time))


def test_ancestral_bias_on_a_mixture_is_visible_at_32_levels(generator):
    """The isotropic kernel over-disperses narrow modes on a coarse grid: the bias a weighted sampler removes."""
    target = two_modes(2)
    model = MixtureMarginalEnergy(target, VP, log_snr_grid(VP, 1e-3, 0.9999, 32))
    samples = ancestral_sample(model, 8000, generator, dtype=torch.float64).samples
    reference = target.noised(VP, float(model.levels[0]))
    heavy = reference.responsibilities(samples).argmax(1) == 0
    ratio = float(samples[heavy].var(0).mean() / reference.variances[0].mean())
    assert ratio > 1 + 6 * math.sqrt(2 / int(heavy.sum()))


@pytest.mark.slow
def test_ancestral_bias_within_three_standard_errors_at_512_levels(generator):
    target = two_modes(2)
    model = MixtureMarginalEnergy(target, VP, log_snr_grid(VP, 1e-3, 0.9999, 32))
    times = log_snr_grid(VP, 1e-3, 0.9999, 512)
    samples = ancestral_sample(model, 20_000, generator, times=times, dtype=torch.float64).samples
    reference = target.noised(VP, float(times[0]))
    labels = reference.responsibilities(samples).argmax(1)
    heavy = float((labels == 0).double().mean())
    assert abs(heavy - 2 / 3) <= 3 * math.sqrt(2 / 9 / len(samples))
    for k in range(2):
        ratio = samples[labels == k].var(0) / reference.variances[k]
        assert ((ratio - 1).abs() <= 3 * math.sqrt(2 / int((labels == k).sum()))).all()
