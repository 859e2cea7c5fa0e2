"""Importance-sampling estimators, checked against closed forms, numpy references and replicate statistics.

Statistical checks use fixed seeds and |estimate − truth| <= 3 standard errors; error bars are checked
for calibration by comparing the (root-mean-square) reported SE with the empirical spread of many independent
replicates, drawn as one tensor.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from boltzclf.estimators.importance import (
    Estimate,
    effective_sample_size,
    largest_weight_share,
    log_normaliser,
    normalised_weights,
    summarise,
)
from boltzclf.estimators.weighted import clustered_mean, weighted_fractions, weighted_mean

LOG_2PI = math.log(2.0 * math.pi)


def _calibration(estimates: torch.Tensor, ses: torch.Tensor) -> torch.Tensor:
    """Reported SE (root-mean-square over replicates) over the empirical std of the estimates (axis 0).

    The RMS is the mean in the variance scale, where a delta-method SE is calibrated: E[se²] ≈ Var. The
    plain mean of the SEs is lower by Jensen's inequality, by a few percent for skewed importance weights.
    """
    return ses.square().mean(0).sqrt() / estimates.std(0)


def _gaussian_log_z_weights(gen: torch.Generator, shape: tuple[int, ...], d: int, s: float, c: float):
    """log w for target exp(−|x|²/2 + c) in d dims, proposal N(0, s² I); exact log Z = d/2 log 2π + c."""
    x = s * torch.randn(*shape, d, generator=gen, dtype=torch.float64)
    log_target = -0.5 * x.square().sum(-1) + c
    log_q = -0.5 * x.square().sum(-1) / s**2 - 0.5 * d * (LOG_2PI + 2.0 * math.log(s))
    return log_target - log_q, 0.5 * d * LOG_2PI + c


def _shifted_gaussian_weights(gen: torch.Generator, shape: tuple[int, ...], mu: float, s: float):
    """x ~ N(0, s²), unnormalised target N(mu, 1): (x, log w)."""
    x = s * torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x, -0.5 * (x - mu) ** 2 + 0.5 * x**2 / s**2


def _resample(gen: torch.Generator, log_w: torch.Tensor) -> torch.Tensor:
    """Multinomial resampling of every row: (R, N) ancestor indices."""
    return torch.multinomial(torch.softmax(log_w, -1), log_w.shape[-1], replacement=True, generator=gen)


# ---------------------------------------------------------------------------------------------------------
# Normalised weights, log Z, diagnostics against independent numpy computations


def test_normalised_weights_match_numpy_and_survive_huge_offsets_and_minus_inf():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=(3, 40)) * 5.0
    lw[1, :7] = -np.inf
    ref = np.exp(lw - lw.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    for offset in (0.0, 1e5, -1e5):
        w = normalised_weights(torch.as_tensor(lw + offset, dtype=torch.float32 if offset == 0 else torch.float64))
        assert w.dtype == torch.float64
        np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5 if offset == 0 else 1e-9, atol=1e-12)
    w = normalised_weights(lw + 1e5)  # numpy input too
    assert torch.all(w[1, :7] == 0.0)
    np.testing.assert_allclose(w.sum(-1).numpy(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(largest_weight_share(lw + 1e5).numpy(), ref.max(-1), rtol=1e-9)


def test_log_normaliser_matches_direct_formula_and_is_shift_invariant():
    rng = np.random.default_rng(1)
    lw = rng.normal(size=500) * 1.5
    w = np.exp(lw)
    # Independent reference: log of the sample mean, delta method with the unbiased sample variance.
    ref_value = math.log(w.mean())
    ref_se = math.sqrt(w.var(ddof=1) / w.size) / w.mean()
    est = log_normaliser(torch.as_tensor(lw))
    assert isinstance(est, Estimate)
    assert float(est.value) == pytest.approx(ref_value, rel=1e-12)
    assert float(est.se) == pytest.approx(ref_se, rel=1e-10)
    assert float(est.n_eff) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-10)
    shifted = log_normaliser(torch.as_tensor(lw + 2e4))  # exp(2e4) overflows: only log-space survives
    assert float(shifted.value) == pytest.approx(ref_value + 2e4, rel=1e-14)
    assert float(shifted.se) == pytest.approx(ref_se, rel=1e-9)
    # Equal weights: the SE is exactly zero, not a negative rounding error under the square root.
    assert float(log_normaliser(torch.full((10,), 3.0)).se) == 0.0
    assert math.isnan(float(log_normaliser(torch.zeros(1)).se))


def test_log_normaliser_recovers_closed_form_gaussian_normaliser_with_calibrated_error():
    gen = torch.Generator().manual_seed(11)
    d, s, c = 3, 1.5, 2.5
    lw, log_z = _gaussian_log_z_weights(gen, (4000,), d, s, c)
    est = log_normaliser(lw)
    assert abs(float(est.value) - log_z) <= 3.0 * float(est.se)
    assert 0.1 < float(est.se) * math.sqrt(4000) < 2.0  # a real, non-degenerate error bar

    lw, _ = _gaussian_log_z_weights(gen, (300, 1000), d, s, c)
    reps = log_normaliser(lw)
    assert reps.value.shape == reps.se.shape == reps.n_eff.shape == (300,)
    assert abs(float(_calibration(reps.value, reps.se)) - 1.0) <= 0.15
    # The replicate mean pins the value down 17x more tightly than one run (bias −se²/2 is negligible).
    assert abs(float(reps.value.mean()) - log_z) <= 3.0 * float(reps.value.std() / math.sqrt(300))


def test_summary_is_plain_json_and_consistent():
    rng = np.random.default_rng(2)
    lw = rng.normal(size=200)
    summary = summarise(lw)
    assert set(summary) == {"ess", "log_z", "log_z_se", "max_weight", "n"}
    assert json.loads(json.dumps(summary)) == summary
    w = np.exp(lw)
    assert summary["n"] == 200
    assert summary["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum() / 200, rel=1e-12)
    assert summary["ess"] == pytest.approx(float(effective_sample_size(torch.as_tensor(lw))), rel=1e-12)
    assert summary["log_z"] == pytest.approx(math.log(w.mean()), rel=1e-12)
    assert summary["max_weight"] == pytest.approx(w.max() / w.sum(), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Weighted means


def test_weighted_mean_recovers_shifted_gaussian_moments_with_calibrated_errors():
    gen = torch.Generator().manual_seed(21)
    mu, s = 1.0, 2.0
    truth = torch.tensor([mu, 1.0 + mu**2], dtype=torch.float64)  # E[x], E[x²] under N(mu, 1)
    x, lw = _shifted_gaussian_weights(gen, (4000,), mu, s)
    est = weighted_mean(torch.stack([x, x**2], -1), lw)
    assert est.value.shape == est.se.shape == (2,)
    assert torch.all((est.value - truth).abs() <= 3.0 * est.se), (est.value, est.se)
    unweighted = x.mean()  # the proposal mean is 0: the weights do the work
    assert abs(float(unweighted) - mu) > 10.0 * float(est.se[0])

    x, lw = _shifted_gaussian_weights(gen, (300, 1000), mu, s)
    reps = weighted_mean(torch.stack([x, x**2], -1), lw)
    assert reps.value.shape == (300, 2) and reps.n_eff.shape == (300,)
    ratio = _calibration(reps.value, reps.se)
    assert torch.all((ratio - 1.0).abs() <= 0.15), ratio
    assert torch.all((reps.value.mean(0) - truth).abs() <= 3.0 * reps.value.std(0) / math.sqrt(300))
    scalar = weighted_mean(x, lw)  # (..., N) values give (...) results, equal to column 0
    assert scalar.value.shape == (300,)
    torch.testing.assert_close(scalar.value, reps.value[:, 0])
    torch.testing.assert_close(scalar.se, reps.se[:, 0])


def test_clustered_mean_matches_loop_reference_and_reduces_to_weighted_mean():
    rng = np.random.default_rng(3)
    n = 60
    values = rng.normal(size=(n, 3)) + np.array([0.0, 5.0, -2.0])
    lw = rng.normal(size=n)
    clusters = rng.integers(0, 12, size=n) * 7 - 30  # arbitrary, negative, non-consecutive ids
    w = np.exp(lw - lw.max())
    w /= w.sum()
    mean = (w[:, None] * values).sum(0)
    ref_se2 = np.zeros(3)
    for c in np.unique(clusters):
        ref_se2 += ((w[clusters == c, None] * (values[clusters == c] - mean)).sum(0)) ** 2
    ref_n_eff = 1.0 / sum(w[clusters == c].sum() ** 2 for c in np.unique(clusters))
    est = clustered_mean(values, torch.as_tensor(clusters), lw)
    np.testing.assert_allclose(est.value.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(est.se.numpy(), np.sqrt(ref_se2), rtol=1e-10)
    assert float(est.n_eff) == pytest.approx(ref_n_eff, rel=1e-10)

    singletons = clustered_mean(values, torch.arange(n), lw)
    plain = weighted_mean(values, lw)
    torch.testing.assert_close(singletons.se, plain.se)
    torch.testing.assert_close(singletons.n_eff, plain.n_eff)

    # Batches are independent: the same ids in two rows are different clusters.
    other = rng.permutation(values)
    both = clustered_mean(np.stack([values, other]), torch.as_tensor(np.stack([clusters, clusters])),
                          np.stack([lw, lw]))
    torch.testing.assert_close(both.se[0], est.se)
    torch.testing.assert_close(both.se[1], clustered_mean(other, torch.as_tensor(clusters), lw).se)


def test_resampled_particles_need_cluster_errors_naive_ones_are_too_small():
    gen = torch.Generator().manual_seed(31)
    reps, n, mu = 400, 1000, 1.0
    x, lw = _shifted_gaussian_weights(gen, (reps, n), mu, 1.0)  # ESS/N ≈ e^{-1}
    ancestors = _resample(gen, lw)
    resampled = torch.gather(x, 1, ancestors)  # equal weights, many duplicates

    clustered = clustered_mean(resampled, ancestors)
    naive_se = resampled.std(-1) / math.sqrt(n)  # treats the copies as independent draws
    assert abs(float(_calibration(clustered.value, clustered.se)) - 1.0) <= 0.20
    assert float(_calibration(clustered.value, naive_se)) < 0.6  # expected ≈ 1/sqrt(2e + 1) ≈ 0.39
    torch.testing.assert_close(weighted_mean(resampled, torch.zeros(reps, n)).se,  # same naive error
                               naive_se * math.sqrt((n - 1) / n))
    # Coverage of ±2 SE intervals around the truth (nominal 95%; the O(1/N) self-normalisation bias and
    # skewed weights cost a few percent): right for the cluster SE, far too low for the naive one.
    assert float(((clustered.value - mu).abs() <= 2.0 * clustered.se).double().mean()) >= 0.88
    assert float(((clustered.value - mu).abs() <= 2.0 * naive_se).double().mean()) <= 0.75
    assert torch.all(clustered.n_eff < 0.7 * n)  # fewer independent units than particles


# ---------------------------------------------------------------------------------------------------------
# Mode fractions from a deliberately mis-weighted proposal


def test_weighted_fractions_recover_two_to_one_mode_masses_from_an_even_proposal():
    gen = torch.Generator().manual_seed(41)
    n, centre = 4000, 3.0
    side = torch.where(torch.rand(n, generator=gen) < 0.5, -centre, centre).to(torch.float64)
    x = side + torch.randn(n, generator=gen, dtype=torch.float64)
    comps = torch.stack([-0.5 * (x + centre) ** 2, -0.5 * (x - centre) ** 2], -1)  # shared constants cancel
    log_q = torch.logsumexp(comps + math.log(0.5), -1)
    log_p = torch.logsumexp(comps + torch.tensor([2.0 / 3.0, 1.0 / 3.0]).log(), -1)
    labels = (x > 0).to(torch.int64)  # class 0: x < 0
    phi3 = 0.5 * (1.0 + math.erf(centre / math.sqrt(2.0)))  # P(N(−3, 1) < 0)
    truth = 2.0 / 3.0 * phi3 + 1.0 / 3.0 * (1.0 - phi3)

    est = weighted_fractions(labels, 2, log_p - log_q)
    assert est.value.shape == est.se.shape == (2,)
    assert float(est.value.sum()) == pytest.approx(1.0, abs=1e-12)
    assert abs(float(est.value[0]) - truth) <= 3.0 * float(est.se[0])
    assert float(est.se[0]) < 0.02
    unweighted = weighted_fractions(labels, 2)  # the proposal's own 1:1 split
    assert abs(float(unweighted.value[0]) - truth) > 5.0 * float(unweighted.se[0])

    ancestors = _resample(gen, (log_p - log_q).unsqueeze(0))[0]
    resampled = weighted_fractions(labels[ancestors], 2, clusters=ancestors)
    assert abs(float(resampled.value[0]) - truth) <= 3.0 * float(resampled.se[0])
    assert float(resampled.se[0]) > float(weighted_fractions(labels[ancestors], 2).se[0])


# ---------------------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize("call, message", [
    (lambda: normalised_weights(torch.tensor([0.0, float("nan"), 1.0])), "log_w: 1 NaN or \\+inf"),
    (lambda: normalised_weights(torch.tensor([0.0, float("inf")])), "NaN or \\+inf"),
    (lambda: log_normaliser(torch.full((2, 3), -float("inf"))), "all 3 log-weights are −inf"),
    (lambda: normalised_weights(torch.zeros(0)), "N >= 1"),
    (lambda: summarise(torch.zeros(2, 3)), "shape \\(N,\\)"),
    (lambda: weighted_mean(torch.zeros(5), torch.zeros(4)), "values: expected shape \\(4,\\)"),
    (lambda: weighted_mean(torch.zeros(3, 5), torch.zeros(4)), "values: expected shape"),
    (lambda: weighted_mean(torch.tensor([1.0, float("nan")]), torch.zeros(2)), "values: 1 non-finite"),
    (lambda: clustered_mean(torch.zeros(4), torch.zeros(4)), "clusters: expected integer"),
    (lambda: clustered_mean(torch.zeros(4), torch.arange(3), torch.zeros(4)), "clusters: expected shape"),
    (lambda: weighted_fractions(torch.tensor([0, 2]), 2), "labels: 1 outside \\[0, 2\\)"),
    (lambda: weighted_fractions(torch.tensor([0.0, 1.0]), 2), "labels: expected integer"),
    (lambda: weighted_fractions(torch.tensor([0, 1]), 0), "n_classes"),
])
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
