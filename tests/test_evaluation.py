"""Metrics against exact marginals: a perfect model scores perfectly; a wrong one is measured correctly."""
import math

import pytest
import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.importance import effective_sample_size
from boltzclf.estimators.mmd import mmd
from boltzclf.evaluation.gmm_metrics import evaluate, evaluation_levels
from boltzclf.evaluation.profiles import mode_line_profile
from boltzclf.evaluation.weighted_samples import weighted_sample_metrics
from boltzclf.models import EnergyModel, TimeConditionedMLP
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import GaussianMixture, two_modes
from exact_models import OffsetMarginalEnergy

LEVELS = log_snr_grid(VariancePreserving(), 1e-3, 0.999, 12)


def test_exact_model_scores_perfectly():
    target = two_modes(3)
    results = evaluate(MixtureMarginalEnergy(target, VariancePreserving(), LEVELS), target, None, 2048, 6, seed=0)
    # a parameter-free model is evaluated in float64: "perfect" means float64 round-off
    assert results["fisher_mean"] < 1e-20
    assert abs(results["ess_mean"] - 1.0) < 1e-12 and abs(results["r2_mean"] - 1.0) < 1e-12
    assert abs(results["clf_loss_raw"] - results["clf_loss_exact"]) < 1e-12
    assert results["mode_weight_error"] < 1e-12


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


OFFSETS = torch.tensor([9.0, -4.0, 3.0, 7.0, -2.0, 5.0, 0.5, -6.0, 2.0, 4.0, -1.0, 1.5], dtype=torch.float64)


def test_clf_loss_fits_f_post_hoc_and_keeps_the_raw_value():
    """A model that is exact up to per-level constants, with f never trained (0): the fitted f̂ is
    c − c[−1] within 5 standard errors, clf_loss with f̂ is the exact marginals' loss up to the O(L/N)
    effect of f̂'s error, and clf_loss_raw (the model's own f) is far off."""
    target = two_modes(2, separation=2.0)
    model = OffsetMarginalEnergy(target, VariancePreserving(), LEVELS, OFFSETS)
    results = evaluate(model, target, None, 2048, 6, seed=0)
    levels = evaluation_levels(len(LEVELS), 6)
    truth = OFFSETS[levels] - OFFSETS[-1]
    fitted = torch.tensor(results["free_energies_fitted"], dtype=torch.float64)
    se = torch.tensor(results["free_energies_fitted_se"], dtype=torch.float64)
    assert fitted[-1] == 0 and (se[:-1] > 0).all()
    assert ((fitted - truth).abs() <= 5 * se + 1e-12).all(), (fitted, truth, se)
    assert results["free_energies_model"] == [0.0] * 6
    assert abs(results["clf_loss"] - results["clf_loss_exact"]) < 0.01  # L/N = 6/2048 ≈ 0.003
    assert results["clf_loss_raw"] - results["clf_loss_exact"] > 1.0

    # once the model's own f is right, the raw loss is exactly the exact marginals' loss, and the
    # headline (fitted) value does not depend on the model's f at all
    with torch.no_grad():
        model.free_energies.copy_(OFFSETS - OFFSETS[-1])
    trained = evaluate(model, target, None, 2048, 6, seed=0)
    assert abs(trained["clf_loss_raw"] - trained["clf_loss_exact"]) < 1e-10
    assert trained["clf_loss"] == results["clf_loss"]


def test_profile_is_normalised_per_level_or_with_a_given_free_energy():
    """With offsets c the model is e^{c_i} p_{t_i}: importance normalisation recovers log Z = c_i exactly
    (constant weights), a given normaliser is subtracted as is, and the raw curve uses the model's f."""
    target = two_modes(2, separation=2.0)
    model = OffsetMarginalEnergy(target, VariancePreserving(), LEVELS, OFFSETS)
    level = 3
    normalised = mode_line_profile(model, target, None, level, n_points=50, n_normalisation=64)
    true = torch.tensor(normalised["true"])
    assert normalised["normalisation"] == "importance"
    assert abs(normalised["log_normaliser"] - float(OFFSETS[level])) < 1e-10
    assert torch.allclose(torch.tensor(normalised["model"]), true, atol=1e-10)
    assert torch.allclose(torch.tensor(normalised["model_raw"]), true + float(OFFSETS[level]), atol=1e-10)  # f = 0
    given = mode_line_profile(model, target, None, level, free_energy=float(OFFSETS[level] - OFFSETS[-1]),
                              n_points=50)
    assert given["normalisation"] == "given"
    assert torch.allclose(torch.tensor(given["model"]), true + float(OFFSETS[-1]), atol=1e-10)


def test_profile_normalisation_shows_misallocated_mode_mass():
    """A model with the right components but weights 0.4/0.6 instead of 2/3, 1/3: normalised, its curve
    sits log(m_k/w_k) from the truth at each mode centre (up to the other mode's negligible tail)."""
    target = two_modes(2, separation=2.0)
    wrong = GaussianMixture(torch.tensor([0.4, 0.6], dtype=torch.float64), target.means, target.variances)
    model = MixtureMarginalEnergy(wrong, VariancePreserving(), LEVELS)
    profile = mode_line_profile(model, target, None, 0, n_points=101, overshoot=0.0)
    gap = torch.tensor(profile["model"]) - torch.tensor(profile["true"])
    assert abs(profile["log_normaliser"]) < 0.05  # the IS estimate of log 1 from 4096 draws
    assert abs(gap[0] - math.log(0.4 / (2 / 3))) < 0.05 and abs(gap[-1] - math.log(0.6 / (1 / 3))) < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_metrics_use_the_model_dtype(dtype):
    """A float64 model is evaluated in float64 (it used to crash on hard-coded float32 casts) and gives
    the float32 model's metrics up to float32 round-off."""
    target = two_modes(2)
    torch.manual_seed(0)
    model = EnergyModel(TimeConditionedMLP(2, hidden=16, n_layers=1, time_dim=8), VariancePreserving(), LEVELS,
                        1.0, (2,))
    torch.nn.init.normal_(model.network.output.weight, std=0.1)
    reference = evaluate(model, target, None, 256, 3, seed=0)
    model = model.to(dtype)
    results = evaluate(model, target, None, 256, 3, seed=0)
    profile = mode_line_profile(model, target, None, 0, free_energy=0.0, n_points=20)
    reference_profile = mode_line_profile(model.float(), target, None, 0, free_energy=0.0, n_points=20)
    for key in ("clf_loss", "clf_loss_raw", "ess_mean", "fisher_mean", "mode_weight_error"):
        assert math.isclose(results[key], reference[key], rel_tol=1e-4, abs_tol=1e-6), key
    assert torch.allclose(torch.tensor(profile["model"]), torch.tensor(reference_profile["model"]), rtol=1e-5)


def _separated_mixture(n_modes: int) -> GaussianMixture:
    means = 10.0 * torch.eye(n_modes, dtype=torch.float64)
    return GaussianMixture(torch.full((n_modes,), 1.0 / n_modes, dtype=torch.float64), means,
                           torch.full((n_modes, n_modes), 0.1, dtype=torch.float64))


def test_weighted_sample_mode_noise_floor_is_the_mean_distance_of_exact_samples():
    # exact draws are unbiased, so their total-variation distance to the true weights is pure noise:
    # its mean over repeats must match mode_weight_error_noise (½Σ√(2/π)·se_k)
    mixture, generator = _separated_mixture(8), torch.Generator().manual_seed(0)
    errors, floors = [], []
    for _ in range(200):
        x = mixture.sample(500, generator)
        record = weighted_sample_metrics(x, torch.zeros(500, dtype=torch.float64), torch.arange(500), mixture,
                                         seed=0, n_mmd=8)
        errors.append(record["mode_weight_error"])
        floors.append(record["mode_weight_error_noise"])
        assert record["modes_empty"] == 0 and record["mode_weight_max_z"] < 6
    errors = torch.tensor(errors)
    assert abs(float(errors.mean()) - sum(floors) / len(floors)) < 3 * float(errors.std()) / math.sqrt(len(errors))


def test_weighted_sample_metrics_count_modes_no_weighted_sample_reaches():
    mixture, generator = _separated_mixture(4), torch.Generator().manual_seed(1)
    x = mixture.sample(400, generator)
    labels = mixture.responsibilities(x).argmax(1)
    log_w = torch.where(labels == 2, -math.inf, 0.0).to(torch.float64)  # mode 2's samples carry no weight
    keep = labels != 3  # mode 3 has no samples at all
    record = weighted_sample_metrics(x[keep], log_w[keep], torch.arange(int(keep.sum())), mixture, seed=0, n_mmd=8)
    assert record["modes_empty"] == 2
    assert record["mode_weights"][2] == 0.0 and record["mode_weights"][3] == 0.0
    assert record["mode_weight_max_z"] > 6  # the two surviving modes hold all the mass: 1/2 instead of 1/4
