"""Molecular metrics on arrays, each against an independent computation (POT, scipy, closed forms, hand cases).

Covers Kish ESS/N, E-W2, T-W2, ScoreMD's PMF error, the JS divergence of φ/ψ histograms and the free-energy
unit conversion. The correlated-frame error bars (ΔF(φ > 0 vs φ < 0), basin populations, folded fraction)
are in ``test_molecular_metrics_populations.py``.
"""
import math

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon

from boltzclf.estimators.dihedral_histograms import (dihedral_histogram, js_divergence,
                                                     js_divergence_from_probabilities, pmf_error,
                                                     pmf_error_from_probabilities)
from boltzclf.estimators.estimate import Estimate, EstimatorInputError, free_energy_units
from boltzclf.estimators.importance import effective_sample_size
from boltzclf.estimators.wasserstein import energy_w2, torus_cost, torus_w2

# --------------------------------------------------------------------------------------------- Kish ESS


def test_kish_ess_fraction_matches_the_weight_formula_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    log_w = rng.normal(0.0, 2.0, size=(3, 500)) + 700.0  # a large offset must not matter
    w = np.exp(log_w - log_w.max(-1, keepdims=True))
    direct = w.sum(-1) ** 2 / (w.shape[-1] * (w ** 2).sum(-1))
    np.testing.assert_allclose(effective_sample_size(log_w).numpy(), direct, rtol=1e-12)
    np.testing.assert_allclose(effective_sample_size(torch.from_numpy(log_w)).numpy(), direct, rtol=1e-12)
    # hand case: two equal weights and two zero weights among four samples -> ESS = 2, ESS/N = 1/2
    assert float(effective_sample_size(np.array([0.0, 0.0, -np.inf, -np.inf]))) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------- E-W2


def test_energy_w2_matches_pot_for_weighted_samples_of_different_sizes():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.0, 1.0, 400), rng.gamma(3.0, 1.0, 250)
    a, b = rng.random(400), rng.random(250)
    got = energy_w2(x, y, np.log(a), np.log(b))
    emd = ot.emd2_1d(x, y, a / a.sum(), b / b.sum(), metric="sqeuclidean")
    quantile = ot.wasserstein_1d(x, y, a / a.sum(), b / b.sum(), p=2)
    assert got == pytest.approx(math.sqrt(emd), rel=1e-10)
    assert got == pytest.approx(math.sqrt(quantile), rel=1e-10)
    # the weights matter: unweighted differs from weighted, and each side's weights belong to that side
    assert abs(energy_w2(x, y) - got) > 1e-3
    assert energy_w2(x, y) == pytest.approx(math.sqrt(ot.emd2_1d(x, y, metric="sqeuclidean")), rel=1e-10)
    assert energy_w2(y, x, np.log(b), np.log(a)) == pytest.approx(got, rel=1e-12)


def test_energy_w2_of_two_gaussians_is_the_closed_form():
    """W2² = (μ1 − μ2)² + (σ1 − σ2)² for N(μ1, σ1²) vs N(μ2, σ2²); samples at the normal quantiles."""
    from scipy.stats import norm

    n = 20000
    z = norm.ppf((np.arange(n) + 0.5) / n)
    mu1, s1, mu2, s2 = -3.0, 1.5, 2.0, 0.5
    rng = np.random.default_rng(2)
    x, y = rng.permutation(mu1 + s1 * z), rng.permutation(mu2 + s2 * z)  # order must not matter
    exact = math.sqrt((mu1 - mu2) ** 2 + (s1 - s2) ** 2)
    assert energy_w2(x, y) == pytest.approx(exact, rel=2e-4)
    # a weight of 2 on a sample is the same as two copies of it
    xs = rng.normal(size=50)
    dup = np.concatenate([xs, xs[:10]])
    log_w = np.zeros(50)
    log_w[:10] = math.log(2.0)
    assert energy_w2(xs, y[:300], log_w) == pytest.approx(energy_w2(dup, y[:300]), rel=1e-12)


def test_energy_w2_rejects_non_finite_energies():
    with pytest.raises(EstimatorInputError, match="non-finite"):
        energy_w2(np.array([0.0, np.inf]), np.zeros(3))


# ------------------------------------------------------------------------------------------------- T-W2


def test_torus_w2_uses_the_short_way_round_the_circle():
    eps = 0.1
    a = np.array([[math.pi - eps, 0.5]])
    b = np.array([[-math.pi + eps, 0.5]])
    assert torus_w2(a, b) == pytest.approx(2 * eps, abs=1e-12)  # Euclidean would be 2π − 2ε
    assert torus_w2(a + 4 * math.pi, b - 2 * math.pi) == pytest.approx(2 * eps, abs=1e-9)  # any branch
    # two angles: the squared distances add
    c = np.array([[-math.pi + eps, 0.5 + 0.3]])
    assert torus_w2(a, c) == pytest.approx(math.hypot(2 * eps, 0.3), abs=1e-12)


def test_torus_w2_weighted_point_masses_by_hand():
    # reference: 0.75 at (3.0, 0), 0.25 at (0, 1); model: everything at (−3.0, 0)
    a = np.array([[3.0, 0.0], [0.0, 1.0]])
    b = np.array([[-3.0, 0.0]])
    d1 = 2 * math.pi - 6.0  # the short way from 3.0 to −3.0
    expected = math.sqrt(0.75 * d1 ** 2 + 0.25 * (3.0 ** 2 + 1.0 ** 2))
    assert torus_w2(a, b, log_w_reference=np.log([0.75, 0.25])) == pytest.approx(expected, abs=1e-12)
    # swapping which point carries the weight changes the answer (weights are not ignored)
    swapped = math.sqrt(0.25 * d1 ** 2 + 0.75 * 10.0)
    assert torus_w2(a, b, log_w_reference=np.log([0.25, 0.75])) == pytest.approx(swapped, abs=1e-12)


def test_torus_w2_equals_the_optimal_assignment_for_equal_uniform_clouds():
    """Between two uniform clouds of n points the optimal plan is a permutation (Birkhoff)."""
    rng = np.random.default_rng(3)
    # both clouds sit near the corner (±π, ±π), on opposite sides of the periodic boundary
    a = np.column_stack([rng.vonmises(-2.8, 3.0, 40), rng.vonmises(2.8, 3.0, 40)])
    b = np.column_stack([rng.vonmises(2.8, 3.0, 40), rng.vonmises(-2.8, 1.0, 40)])
    diff = np.angle(np.exp(1j * (a[:, None, :] - b[None, :, :])))  # wrapped difference, another formula
    cost = (diff ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    expected = math.sqrt(cost[rows, cols].mean())
    assert torus_w2(a, b) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(torus_cost(a, b), cost, atol=1e-12)
    euclid = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    r2, c2 = linear_sum_assignment(euclid)
    assert math.sqrt(euclid[r2, c2].mean()) > 2.0 * expected  # the periodic metric matters here


def test_torus_w2_subsampling_is_seeded_and_capped():
    rng = np.random.default_rng(4)
    a, b = rng.uniform(-3, 3, (300, 2)), rng.uniform(-3, 3, (250, 2))
    full = torus_w2(a, b)
    assert torus_w2(a, b, max_points=300) == full  # no side larger than the cap: no subsampling
    capped = torus_w2(a, b, max_points=100, seed=7)
    assert torus_w2(a, b, max_points=100, seed=7) == capped
    assert torus_w2(a, b, max_points=100, seed=8) != capped
    with pytest.raises(EstimatorInputError, match="max_points"):
        torus_w2(a, b, max_points=0)


# ---------------------------------------------------------------------------------------- PMF error, JS


def test_pmf_error_on_a_tiny_grid_by_hand():
    p_ref = np.array([[0.5, 0.25], [0.25, 0.0]])
    p_mod = np.array([[0.25, 0.25], [0.0, 0.5]])
    floor = 1e-6
    # mixture weighting (ScoreMD): all four bins compared, the empty side floored
    pr, pm = np.array([0.5, 0.25, 0.25, floor]), np.array([0.25, 0.25, floor, 0.5])
    w = (pr + pm) / 2
    w = w / w.sum()
    dfe = np.log(pr) - np.log(pm)  # F_model − F_ref = ln p_ref − ln p_model
    res = pmf_error_from_probabilities(p_ref, p_mod, floor=floor)
    assert res.value == pytest.approx(float((w * dfe ** 2).sum()), rel=1e-12)
    mean = float((w * dfe).sum())
    assert res.aligned == pytest.approx(float((w * (dfe - mean) ** 2).sum()), rel=1e-12)
    assert (res.n_bins_compared, res.n_model_floored, res.n_reference_floored) == (4, 1, 1)
    # reference weighting: only the three reference bins, weights 0.5, 0.25, 0.25
    ref = pmf_error_from_probabilities(p_ref, p_mod, weighting="reference", floor=floor)
    expected = 0.5 * math.log(2.0) ** 2 + 0.25 * 0.0 + 0.25 * math.log(0.25 / floor) ** 2
    assert ref.value == pytest.approx(expected, rel=1e-12)
    assert (ref.n_bins_compared, ref.n_model_floored, ref.n_reference_floored) == (3, 1, 0)
    assert pmf_error_from_probabilities(p_mod, p_ref, weighting="reference").value != pytest.approx(ref.value)


def test_pmf_error_aligned_removes_a_constant_offset():
    # the model puts half its mass outside the reference's bins: on them F_model = F_ref + ln 2
    p_ref = np.array([0.4, 0.6, 0.0, 0.0])
    p_mod = np.array([0.2, 0.3, 0.25, 0.25])
    res = pmf_error_from_probabilities(p_ref, p_mod, weighting="reference")
    assert res.value == pytest.approx(math.log(2.0) ** 2, rel=1e-12)
    assert res.mean_difference == pytest.approx(math.log(2.0), rel=1e-12)
    assert res.aligned == pytest.approx(0.0, abs=1e-14)
    same = pmf_error_from_probabilities(p_ref, 3.0 * p_ref)  # counts instead of probabilities
    assert same.value == pytest.approx(0.0, abs=1e-14) and same.n_bins_compared == 2


def test_pmf_error_from_samples_bins_wraps_and_orders_axes_like_the_hand_grid():
    # bins=2: bin 0 = [−π, 0), bin 1 = [0, π) on each axis; centres at ∓π/2
    c = [-math.pi / 2, math.pi / 2]
    ref = np.array([[c[0], c[0]]] * 2 + [[c[0], c[1]]] + [[c[1], c[0]]])  # 0.5, 0.25, 0.25, 0
    mod = np.array([[c[0], c[0]], [c[0], c[1] + 2 * math.pi], [c[1], c[1]], [c[1] - 4 * math.pi, c[1]]])
    res = pmf_error(ref, mod, bins=2)
    hand = pmf_error_from_probabilities(np.array([[0.5, 0.25], [0.25, 0.0]]), np.array([[0.25, 0.25], [0.0, 0.5]]))
    assert res.value == pytest.approx(hand.value, rel=1e-12) and res.bins == 2
    # weights on the model samples: doubling the weight of one sample is the same as duplicating it
    lw = np.log([2.0, 1.0, 1.0, 1.0])
    dup = np.concatenate([mod, mod[:1]])
    assert pmf_error(ref, mod, log_w_model=lw, bins=2).value == pytest.approx(pmf_error(ref, dup, bins=2).value)


def test_dihedral_histogram_matches_numpy_histogram2d():
    rng = np.random.default_rng(5)
    x = rng.uniform(-math.pi, math.pi, (5000, 2))
    w = rng.random(5000)
    ours = dihedral_histogram(x + 2 * math.pi * rng.integers(-2, 3, (5000, 2)), np.log(w), bins=64)
    ref, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=64, range=[[-math.pi, math.pi]] * 2, weights=w)
    np.testing.assert_allclose(ours, ref / ref.sum(), rtol=1e-10, atol=1e-15)


def test_js_divergence_by_hand_and_against_scipy():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    q = np.array([0.0, 0.5, 0.5, 0.0])
    # m = (0.25, 0.5, 0.25, 0): KL(p‖m) = 0.5 ln 2 + 0.5 ln 1 = KL(q‖m)
    assert js_divergence_from_probabilities(p, q) == pytest.approx(0.5 * math.log(2.0), rel=1e-12)
    assert js_divergence_from_probabilities(p, np.array([0, 0, 0.5, 0.5])) == pytest.approx(math.log(2.0))
    rng = np.random.default_rng(6)
    a = np.column_stack([rng.vonmises(-1.4, 3.0, 4000), rng.vonmises(2.5, 2.0, 4000)])
    b = np.column_stack([rng.vonmises(-1.2, 2.0, 3000), rng.vonmises(2.9, 1.0, 3000)])
    lw = rng.normal(0, 0.5, 3000)
    got = js_divergence(a, b, log_w_model=lw)
    ha, _, _ = np.histogram2d(a[:, 0], a[:, 1], bins=64, range=[[-math.pi, math.pi]] * 2)
    hb, _, _ = np.histogram2d(b[:, 0], b[:, 1], bins=64, range=[[-math.pi, math.pi]] * 2, weights=np.exp(lw))
    assert got == pytest.approx(jensenshannon(ha.ravel(), hb.ravel()) ** 2, rel=1e-9)
    assert js_divergence(a, b) != pytest.approx(got)


# ------------------------------------------------------------------------------------------------ units


def test_free_energy_units_at_300_k():
    est = Estimate(value=torch.tensor(2.0, dtype=torch.float64), se=torch.tensor(0.1, dtype=torch.float64),
                   n_eff=torch.tensor(100.0, dtype=torch.float64), method="test")
    out = free_energy_units(est, 300.0)
    kt = 1.380649e-23 * 6.02214076e23 * 300.0 / 1000.0  # k_B N_A T in kJ/mol (SI-exact constants)
    assert out["kT_kJ_per_mol"] == pytest.approx(kt, rel=1e-12)
    assert out["value_kJ_per_mol"] == pytest.approx(2.0 * kt, rel=1e-12)
    assert out["se_kcal_per_mol"] == pytest.approx(0.1 * kt / 4.184, rel=1e-12)
    assert out["value_kT"] == 2.0 and out["se_kT"] == pytest.approx(0.1)
    with pytest.raises(EstimatorInputError, match="temperature"):
        free_energy_units(est, 0.0)
