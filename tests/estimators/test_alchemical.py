"""MBAR, TI, BAR and EXP against harmonic oscillators whose free energies are known in closed form.

States: u_λ(x) = ½ κ(λ) ‖x‖² in d dimensions with κ(λ) = (1 − λ) κ_0 + λ κ_1 (a linear λ path, so
∂u/∂λ = ½ (κ_1 − κ_0) ‖x‖²); exact samples x ~ N(0, 1/κ(λ)); f(λ) = −ln Z = (d/2) ln(κ(λ)/2π), so
f(1) − f(0) = (d/2) ln(κ_1/κ_0). A flipped sign, a wrong weight or a dropped window moves the
estimate by many standard errors.
"""
import math

import numpy as np
import pytest

from boltzclf.estimators.alchemical import (bar_chain, decorrelate, exponential_averaging, mbar,
                                            thermodynamic_integration)
from boltzclf.estimators.estimate import EstimatorInputError

D, K0, K1 = 3, 1.0, 6.0
EXACT = 0.5 * D * math.log(K1 / K0)


def _kappa(lam):
    return (1.0 - lam) * K0 + lam * K1


def _windows(lambdas, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)) / math.sqrt(_kappa(lam)) for lam in lambdas]


def _u(x, lam):
    return 0.5 * _kappa(lam) * (x**2).sum(-1)


def test_mbar_matches_the_closed_form_and_reports_convergence_and_overlap():
    lambdas = np.linspace(0, 1, 6)
    samples = _windows(lambdas, 2000)
    pooled = np.concatenate(samples)
    u_kn = np.stack([_u(pooled, lam) for lam in lambdas])
    result = mbar(u_kn, [2000] * 6)
    assert result.converged and result.residual < 1e-5
    value, se = float(result.estimate.value), float(result.estimate.se)
    assert 0 < se < 0.05
    assert abs(value - EXACT) < 4 * se
    exact_f = 0.5 * D * np.log(_kappa(lambdas) / K0)
    assert np.all(np.abs(result.f_k - exact_f) <= 4 * np.maximum(result.df_k, 1e-12))
    assert result.overlap.shape == (6, 6) and np.allclose(result.overlap.sum(1), 1.0)
    assert result.poor_overlap == [] and np.all((result.neighbours > 0.1) & (result.neighbours <= 0.5))


def test_two_state_overlap_is_one_half_for_identical_states_however_many():
    x = np.random.default_rng(6).normal(size=(3000, 1))
    u_kn = np.tile(0.5 * x[:, 0] ** 2, (10, 1))  # ten identical states, 300 samples each
    result = mbar(u_kn, [300] * 10)
    np.testing.assert_allclose(result.neighbours, 0.5, rtol=1e-9)
    assert result.overlap[0, 1] == pytest.approx(0.1, rel=1e-6)  # the K-state matrix spreads it as 1/K
    assert result.poor_overlap == []


def test_mbar_flags_neighbours_that_do_not_overlap():
    x0 = np.random.default_rng(1).normal(size=(500, 1)) * 0.01
    x1 = 5.0 + np.random.default_rng(2).normal(size=(500, 1)) * 0.01
    pooled = np.concatenate([x0, x1])[:, 0]
    u_kn = np.stack([0.5 * pooled**2 / 1e-4, 0.5 * (pooled - 5.0) ** 2 / 1e-4])
    assert mbar(u_kn, [500, 500]).poor_overlap == [(0, 1)]


def test_ti_matches_the_closed_form_within_its_error():
    lambdas = np.linspace(0, 1, 21)
    samples = _windows(lambdas, 4000, seed=3)
    slopes = [0.5 * (K1 - K0) * (x**2).sum(-1) for x in samples]
    mean = np.array([s.mean() for s in slopes])
    se = np.array([s.std(ddof=1) / math.sqrt(len(s)) for s in slopes])
    estimate = thermodynamic_integration(lambdas, mean, se, 21 * 4000)
    # exact ⟨∂u/∂λ⟩ = (d/2)(κ1−κ0)/κ(λ): the trapezoid's own bias on this grid, computed independently
    exact_mean = 0.5 * D * (K1 - K0) / _kappa(lambdas)
    trapezoid_exact = float(np.trapezoid(exact_mean, lambdas))
    assert abs(float(estimate.value) - trapezoid_exact) < 4 * float(estimate.se)
    assert abs(trapezoid_exact - EXACT) < 0.02  # discretisation, known for this grid


def test_bar_chain_and_exp_match_the_closed_form():
    lambdas = np.linspace(0, 1, 5)
    samples = _windows(lambdas, 3000, seed=4)
    forward = [_u(samples[k], lambdas[k + 1]) - _u(samples[k], lambdas[k]) for k in range(4)]
    reverse = [_u(samples[k + 1], lambdas[k]) - _u(samples[k + 1], lambdas[k + 1]) for k in range(4)]
    estimate, steps, errors = bar_chain(forward, reverse)
    assert abs(float(estimate.value) - EXACT) < 4 * float(estimate.se)
    exact_steps = 0.5 * D * np.diff(np.log(_kappa(lambdas)))
    assert np.all(np.abs(steps - exact_steps) < 4 * errors)
    # EXP from the stiff end (κ1) to the soft one (κ0): f(0) − f(1) = −EXACT
    work = _u(samples[-1], 0.0) - _u(samples[-1], 1.0)
    exp = exponential_averaging(work)
    assert abs(float(exp.value) + EXACT) < 4 * float(exp.se)


def test_decorrelate_cuts_the_transient_and_thins_by_the_correlation_time():
    rng = np.random.default_rng(5)
    walkers, frames, rho = 16, 600, 0.9
    x = np.zeros((walkers, frames))
    x[:, 0] = 30.0  # far from equilibrium at the start
    for t in range(1, frames):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * rng.normal(size=walkers)
    result = decorrelate(x)
    assert 15 <= result.t0 <= 150  # 30·0.9^t falls below 1 at t ≈ 32
    exact_g = (1 + rho) / (1 - rho)  # statistical inefficiency of an AR(1) process
    assert 0.6 * exact_g < result.g < 1.5 * exact_g
    assert result.frames[0] == result.t0 and np.all(np.diff(result.frames) == math.ceil(result.g))


def test_decorrelate_takes_the_slowest_observable_and_a_constant_one_does_not_hide_it():
    rng = np.random.default_rng(7)
    walkers, frames, rho = 8, 400, 0.95
    slow = np.zeros((walkers, frames))
    for t in range(1, frames):
        slow[:, t] = rho * slow[:, t - 1] + math.sqrt(1 - rho**2) * rng.normal(size=walkers)
    constant = np.zeros((walkers, frames))  # e.g. ∂u/∂λ at λ = 0 of the gb_charges path
    assert decorrelate(constant).g == 1.0
    both = decorrelate(constant, slow)
    assert both.g == decorrelate(slow).g > 10 and both.t0 == decorrelate(slow).t0


def test_bad_input_is_refused():
    with pytest.raises(EstimatorInputError):
        mbar(np.zeros((2, 3)), [1, 1])
    with pytest.raises(EstimatorInputError):
        mbar(np.array([[0.0, np.nan], [0.0, 1.0]]), [1, 1])
    with pytest.raises(EstimatorInputError):
        thermodynamic_integration([1.0, 0.0], [0, 0], [0, 0], 2)
    with pytest.raises(EstimatorInputError):
        decorrelate(np.zeros((3,)))
    with pytest.raises(EstimatorInputError, match="same frames"):
        decorrelate(np.zeros((2, 10)), np.zeros((2, 12)))
