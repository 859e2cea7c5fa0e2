"""Metrics against exact marginals: a perfect model scores perfectly; a wrong one is measured correctly."""
import math

import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.importance import effective_sample_size
from boltzclf.estimators.mmd import mmd
from boltzclf.evaluation.gmm_metrics import evaluate
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import GaussianMixture, two_modes

LEVELS = log_snr_grid(VariancePreserving(), 1e-3, 0.999, 12)


def test_exact_model_scores_perfectly():
    target = two_modes(3)
    results = evaluate(MixtureMarginalEnergy(target, VariancePreserving(), LEVELS), target, None, 2048, 6, seed=0)
    # models are evaluated in float32, so "perfect" means float32 round-off
    assert results["fisher_mean"] < 1e-8
    assert abs(results["ess_mean"] - 1.0) < 1e-8 and abs(results["r2_mean"] - 1.0) < 1e-8
    assert abs(results["clf_loss"] - results["clf_loss_exact"]) < 1e-5
    assert results["mode_weight_error"] < 1e-5


def test_mode_weight_error_measures_the_wrong_weights():
    target = two_modes(3)
    wrong = GaussianMixture(torch.tensor([0.4, 0.6], dtype=torch.float64), target.means, target.variances)
    results = evaluate(MixtureMarginalEnergy(wrong, VariancePreserving(), LEVELS), target, None, 4096, 6, seed=0)
    assert abs(results["mode_weights"][0] - 0.4) < 0.03  # self-normalised IS estimate, N = 4096
    assert abs(results["mode_weight_error"] - (2 / 3 - 0.4)) < 0.03
    assert results["ess"][0] < 0.95 and results["clf_loss"] > results["clf_loss_exact"]


def test_ess_matches_closed_form_for_shifted_gaussians(generator):
    # proposal N(0, 1), target N(μ, 1): E[w²]/E[w]² = exp(μ²), so ESS/N → exp(−μ²)
    mu, n = 0.5, 400_000
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    log_w = -0.5 * (x - mu) ** 2 + 0.5 * x**2
    assert abs(float(effective_sample_size(log_w)) - math.exp(-mu**2)) < 0.01
    assert abs(float(effective_sample_size(log_w + 123.0)) - float(effective_sample_size(log_w))) < 1e-12


def test_mmd_separates_distributions(generator):
    a = torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    b = torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    c = torch.randn(1000, 2, generator=generator, dtype=torch.float64) + 1.0
    assert abs(mmd(a, b)) < 0.01 < mmd(a, c)
