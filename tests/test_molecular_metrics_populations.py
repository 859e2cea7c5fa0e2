"""Populations and two-state free energies with correlated-frame, weighted and resampled error bars.

The correlated series is a two-state Markov chain: its 0/1 indicator is an AR(1) process with lag-t
autocorrelation λ^t, λ = 1 − a − b, so the integrated autocorrelation time is exactly (1 + λ)/(1 − λ)
and the stationary P(1) is a/(a + b). Error bars are checked against the spread over independent
replicates (fixed seeds); direct numpy computations check the weighted and clustered formulas.
"""
import math

import numpy as np
import pytest
import torch

from boltzclf.estimators.correlated import (block_clusters, correlated_fractions, integrated_autocorrelation_time,
                                            two_state_free_energy)
from boltzclf.estimators.estimate import EstimatorInputError
from boltzclf.estimators.populations import (ALDP_BASINS, basin_labels, basin_populations, folded_fraction,
                                             phi_sign_free_energy)

A, B = 0.04, 0.06  # switching probabilities 0 -> 1 and 1 -> 0 per frame
P1 = A / (A + B)  # stationary P(state 1) = 0.4
LAM = 1.0 - A - B  # indicator autocorrelation per frame = 0.9
TAU = (1.0 + LAM) / (1.0 - LAM)  # integrated autocorrelation time = 19 frames


def markov_chains(rng: np.random.Generator, n_chains: int, n_frames: int) -> np.ndarray:
    """``(n_chains, n_frames)`` booleans: independent stationary two-state chains."""
    u = rng.random((n_chains, n_frames))
    s = np.empty((n_chains, n_frames), dtype=bool)
    s[:, 0] = u[:, 0] < P1
    for t in range(1, n_frames):
        s[:, t] = np.where(s[:, t - 1], u[:, t] >= B, u[:, t] < A)
    return s


@pytest.fixture(scope="module")
def replicates():
    """200 replicates of 8,000 frames, also read as 200 × (8 walkers of 1,000 frames)."""
    return markov_chains(np.random.default_rng(2024), 200, 8000)


def test_integrated_autocorrelation_time_of_the_indicator_is_exact_within_noise(replicates):
    tau = integrated_autocorrelation_time(replicates[:20].astype(float))  # 20 walkers pooled
    assert tau == pytest.approx(TAU, rel=0.1)
    assert integrated_autocorrelation_time(np.random.default_rng(0).normal(size=4000)) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("walkers", [1, 8])
def test_standard_error_is_calibrated_for_correlated_frames(replicates, walkers):
    """Mean SE within 20 % of the replicate spread; the naive iid SE is far too small."""
    n_rep, n = replicates.shape
    p_hat, p_se, f_hat, f_se = [], [], [], []
    for series in replicates:
        x = series.reshape(walkers, n // walkers) if walkers > 1 else series
        frac = correlated_fractions(x.astype(np.int64), 2)
        df = two_state_free_energy(x)
        p_hat.append(float(frac.value[1]))
        p_se.append(float(frac.se[1]))
        f_hat.append(float(df.value))
        f_se.append(float(df.se))
    p_hat, f_hat = np.array(p_hat), np.array(f_hat)
    spread_p, spread_f = p_hat.std(ddof=1), f_hat.std(ddof=1)
    assert np.mean(p_se) / spread_p == pytest.approx(1.0, abs=0.2)
    assert np.mean(f_se) / spread_f == pytest.approx(1.0, abs=0.2)
    naive = np.sqrt(p_hat * (1 - p_hat) / n).mean()
    assert naive < 0.4 * spread_p  # ≈ spread/√τ = spread/4.4
    # unbiased within the replicate error: ΔF = −ln(P1/(1 − P1)) and P(1)
    assert abs(p_hat.mean() - P1) < 4 * spread_p / math.sqrt(n_rep)
    assert abs(f_hat.mean() + math.log(P1 / (1 - P1))) < 4 * spread_f / math.sqrt(n_rep) + 0.01


def test_weights_correct_a_biased_chain_and_the_error_bar_stays_calibrated(replicates):
    """Reweight the P(1) = 0.4 chain to P(1) = 0.6; only the correct weights recover the truth."""
    target = 0.6
    log_w = np.where(replicates[:100], math.log(target / P1), math.log((1 - target) / (1 - P1)))
    est = [correlated_fractions(s.astype(np.int64), 2, log_w=lw) for s, lw in zip(replicates[:100], log_w)]
    values = np.array([float(e.value[1]) for e in est])
    ses = np.array([float(e.se[1]) for e in est])
    assert np.mean(ses) / values.std(ddof=1) == pytest.approx(1.0, abs=0.25)
    assert abs(values.mean() - target) < 4 * values.std(ddof=1) / 10
    assert abs(float(correlated_fractions(replicates[0].astype(np.int64), 2).value[1]) - target) > 6 * ses[0]


def test_walkers_stuck_in_one_state_are_the_independent_units():
    """No transitions: the error bar is that of a fraction over walkers, whatever the frame count."""
    states = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    x = np.repeat(states[:, None], 500, axis=1)
    est = two_state_free_energy(x.astype(bool))
    p = states.mean()
    se_p = math.sqrt(((states - p) ** 2).sum()) / len(states)  # Σ_c (W_c (f_c − p))², W_c = 1/10
    assert float(est.value) == pytest.approx(-math.log(p / (1 - p)), rel=1e-12)
    assert float(est.se) == pytest.approx(se_p / (p * (1 - p)), rel=1e-12)
    naive = math.sqrt(p * (1 - p) / x.size) / (p * (1 - p))
    assert float(est.se) > 10 * naive


def test_weighted_resampled_samples_against_a_direct_computation():
    rng = np.random.default_rng(11)
    phi = rng.uniform(-math.pi, math.pi, 600)
    log_w = rng.normal(0.0, 1.0, 600)
    ancestors = rng.integers(0, 150, 600)
    est = phi_sign_free_energy(phi, log_w=log_w, clusters=ancestors)
    w = np.exp(log_w) / np.exp(log_w).sum()
    f = (phi >= 0).astype(float)
    p = float((w * f).sum())
    per_cluster = np.bincount(ancestors, weights=w * (f - p), minlength=150)
    se_p = math.sqrt((per_cluster ** 2).sum())
    assert float(est.value) == pytest.approx(-math.log(p / (1 - p)), rel=1e-12)
    assert float(est.se) == pytest.approx(se_p / (p * (1 - p)), rel=1e-12)
    # independent weighted frames (block_length=1): the delta-method SE Σ W² (f − p)²
    iid = phi_sign_free_energy(phi, log_w=log_w, block_length=1)
    assert float(iid.se) == pytest.approx(math.sqrt((w ** 2 * (f - p) ** 2).sum()) / (p * (1 - p)), rel=1e-12)
    with pytest.raises(EstimatorInputError, match="not both"):
        phi_sign_free_energy(phi, clusters=ancestors, block_length=5)


def test_block_clusters_never_span_walkers():
    c = block_clusters(3, 7, 3)
    assert c.tolist() == [[0, 0, 0, 1, 1, 1, 2], [3, 3, 3, 4, 4, 4, 5], [6, 6, 6, 7, 7, 7, 8]]


def test_aldp_basin_labels_by_hand():
    pts = {  # (φ, ψ) degrees -> basin
        (-78.0, 90.0): "C7eq", (-70.0, 150.0): "C7eq", (-80.0, -170.0): "C7eq",
        (-135.0, 146.0): "C5", (-150.0, -160.0): "C5", (210.0, 150.0): "C5",  # 210° = −150°
        (-70.0, -40.0): "alphaR", (-150.0, 10.0): "alphaR", (-60.0, 29.9): "alphaR",
        (61.0, -72.0): "alphaL", (60.0, 45.0): "alphaL", (0.0, 0.0): "alphaL", (-0.1, 100.0): "C7eq",
    }
    phi = np.radians([k[0] for k in pts])
    psi = np.radians([k[1] for k in pts])
    labels, names = basin_labels(phi, psi)
    assert [names[i] for i in labels] == list(pts.values())
    assert names == tuple(ALDP_BASINS) + ("other",)


def test_basin_populations_of_uniform_angles_are_the_box_areas():
    rng = np.random.default_rng(12)
    phi, psi = rng.uniform(-math.pi, math.pi, (2, 4, 5000))  # 4 walkers of iid frames
    pops = basin_populations(phi, psi)
    area = {"C7eq": 115 * 210, "C5": 65 * 210, "alphaR": 180 * 150, "alphaL": 180 * 360, "other": 0}
    for name, value, se in zip(pops.names, pops.estimate.value.tolist(), pops.estimate.se.tolist()):
        exact = area[name] / 360.0 ** 2
        assert abs(value - exact) <= 4 * se + 1e-15, name
        if exact > 0:
            assert se == pytest.approx(math.sqrt(exact * (1 - exact) / phi.size), rel=0.25)
    assert float(pops.estimate.value.sum()) == pytest.approx(1.0)
    # P(alphaL) is P(φ > 0): ΔF(φ > 0 vs φ < 0) agrees with the basin population
    p_l = float(pops.estimate.value[pops.names.index("alphaL")])
    assert float(phi_sign_free_energy(phi).value) == pytest.approx(-math.log(p_l / (1 - p_l)), rel=1e-12)


def test_folded_fraction_rmsd_and_q_against_direct_counts():
    rng = np.random.default_rng(13)
    rmsd = rng.gamma(2.0, 0.1, (3, 400))  # nm
    est = folded_fraction(rmsd)
    assert float(est.value) == pytest.approx((rmsd < 0.2).mean(), rel=1e-12)
    assert "0.2 nm" in est.method
    q = rng.uniform(0, 1, 1000)
    assert float(folded_fraction(q, kind="q").value) == pytest.approx((q > 0.7).mean(), rel=1e-12)
    log_w = rng.normal(size=1000)
    w = np.exp(log_w)
    direct = (w * (q > 0.5)).sum() / w.sum()
    assert float(folded_fraction(q, kind="q", threshold=0.5, log_w=log_w).value) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(EstimatorInputError, match="kind"):
        folded_fraction(q, kind="tm")


def test_torch_inputs_and_as_dict():
    phi = torch.linspace(-3.0, 3.0, 200, dtype=torch.float64)
    psi = torch.zeros(200, dtype=torch.float64)
    d = basin_populations(phi, psi, block_length=10).as_dict()
    assert set(d["populations"]) == set(ALDP_BASINS) | {"other"}
    assert "blocks of 10 frames (given)" in d["method"]
