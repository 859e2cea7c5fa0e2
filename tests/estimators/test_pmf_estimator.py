"""Histogram PMFs against closed-form densities: |estimate − truth| ≤ k·SE, plus calibration of SE.

iid samples use many blocks (200) so that the bootstrap SE itself is precise to ~5 %; with the default
20 blocks it scatters by ~16 %, and a 4·SE bound over ~100 bins would then fail by chance.
"""
import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from boltzclf.core.errors import BoltzclfError
from boltzclf.estimators.pmf import basin_free_energies, histogram_free_energy

PERIOD = (-np.pi, np.pi)


def von_mises_truth(edges, mu, kappa):
    """Exact −ln(P_bin / width) of a von Mises density on (−π, π]."""
    p = np.diff(stats.vonmises.cdf(edges, kappa, loc=mu))
    return -np.log(p / np.diff(edges)), p


def test_periodic_1d_matches_von_mises_within_4_se():
    rng = np.random.default_rng(0)
    samples = stats.vonmises.rvs(2.0, loc=2.8, size=20000, random_state=rng)  # mass wraps across ±π
    fes = histogram_free_energy(samples, [PERIOD], bins=36, periodic=True, n_blocks=200)
    truth, p = von_mises_truth(fes.edges[0], 2.8, 2.0)
    ok = p > 0.005
    assert ok.sum() > 20
    assert np.all(np.abs(fes.free_energy[ok] - truth[ok]) <= 4 * fes.stderr[ok])


def test_log_weights_reweight_uniform_samples_to_von_mises():
    rng = np.random.default_rng(1)
    samples = rng.uniform(-np.pi, np.pi, size=40000)
    log_w = stats.vonmises.logpdf(samples, 1.0, loc=-1.0) + 123.0  # arbitrary constant
    fes = histogram_free_energy(samples, [PERIOD], bins=24, periodic=True, log_weights=log_w,
                                n_blocks=200)
    truth, p = von_mises_truth(fes.edges[0], -1.0, 1.0)
    ok = p > 0.01
    assert np.all(np.abs(fes.free_energy[ok] - truth[ok]) <= 4 * fes.stderr[ok])
    assert fes.ess < 40000


def test_2d_product_density():
    rng = np.random.default_rng(2)
    n = 50000
    samples = np.column_stack([stats.vonmises.rvs(3.0, loc=-1.5, size=n, random_state=rng),
                               stats.vonmises.rvs(1.5, loc=1.2, size=n, random_state=rng)])
    fes = histogram_free_energy(samples, [PERIOD, PERIOD], bins=12, periodic=True, n_blocks=200)
    t1, p1 = von_mises_truth(fes.edges[0], -1.5, 3.0)
    t2, p2 = von_mises_truth(fes.edges[1], 1.2, 1.5)
    truth, p = t1[:, None] + t2[None, :], p1[:, None] * p2[None, :]
    ok = p > 0.005
    assert ok.sum() > 20
    assert np.all(np.abs(fes.free_energy[ok] - truth[ok]) <= 4 * fes.stderr[ok])


def test_bootstrap_se_is_calibrated_against_independent_repeats():
    rng = np.random.default_rng(3)
    estimates, errors = [], []
    for _ in range(60):
        fes = histogram_free_energy(rng.normal(size=2000), [(-4.0, 4.0)], bins=16, n_bootstrap=100,
                                    seed=int(rng.integers(1 << 31)))
        estimates.append(fes.free_energy[10])
        errors.append(fes.stderr[10])
    ratio = np.std(estimates, ddof=1) / np.mean(errors)
    # with 60 repeats the sample std is itself uncertain by ~9 %: accept 0.7–1.3
    assert 0.7 < ratio < 1.3


def ar1_chain(rng, n, a):
    """Stationary AR(1) chain with unit variance and lag-1 correlation ``a``."""
    return lfilter([np.sqrt(1 - a * a)], [1.0, -a], rng.normal(size=n), zi=[a * rng.normal()])[0]


def test_block_bootstrap_errors_are_calibrated_for_correlated_samples():
    """AR(1), correlation time ~100 frames: block SE matches the spread over independent chains,
    while treating frames as independent underestimates it several-fold."""
    rng = np.random.default_rng(4)
    estimates, block_se, iid_se = [], [], []
    for _ in range(40):
        x = ar1_chain(rng, 20000, 0.98)
        blocked = histogram_free_energy(x, [(-3.0, 3.0)], bins=6, n_blocks=20)
        estimates.append(blocked.free_energy[2])
        block_se.append(blocked.stderr[2])
        p = blocked.probability[2]
        iid_se.append(np.sqrt((1 - p) / (x.size * p)))  # delta-method SE if frames were independent
    spread = np.std(estimates, ddof=1)
    assert 0.6 < spread / np.mean(block_se) < 1.5
    assert spread / np.mean(iid_se) > 3


def test_probabilities_equal_numpy_histogram_including_edges_and_outliers():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.uniform(-1.5, 1.5, size=(997, 2)), [[1.0, 1.0], [-1.0, 0.0], [5.0, 0.0]]])
    w = rng.uniform(size=1000)
    fes = histogram_free_energy(x, [(-1.0, 1.0), (-1.0, 1.0)], bins=(5, 4), log_weights=np.log(w),
                                n_blocks=7)
    expected, _ = np.histogramdd(x, bins=fes.edges, weights=w)
    np.testing.assert_allclose(fes.probability, expected / w.sum(), rtol=1e-12)


#: Alanine-dipeptide-like boxes (degrees): (φ range, ψ range), half-open low <= angle < high.
BOXES_DEG = {"C5": ((-180, -115), (115, 180)), "PII": ((-115, -50), (115, 180)), "C7eq": ((-115, -50), (30, 115)),
             "alphaR": ((-115, -40), (-75, 0)), "alphaL": ((30, 100), (-90, 90))}


def test_basin_free_energy_of_uniform_angles_is_minus_ln_area_fraction():
    rng = np.random.default_rng(7)
    samples = rng.uniform(-np.pi, np.pi, size=(40000, 2))
    boxes = {k: [tuple(np.radians(r)) for r in v] for k, v in BOXES_DEG.items()}
    basins = basin_free_energies(samples, boxes, n_blocks=200)
    for name, ((p0, p1), (s0, s1)) in BOXES_DEG.items():
        truth = -np.log((p1 - p0) * (s1 - s0) / 360.0 ** 2)
        assert abs(basins[name]["free_energy_kT"] - truth) <= 4 * basins[name]["stderr_kT"], name
        assert basins[name]["stderr_kT"] < 0.1


def test_basin_free_energy_with_log_weights_and_an_unsampled_basin():
    """Uniform samples on [−1, 1) weighted 3:1 (left:right): P(left) = 3/4, independent of any bins."""
    rng = np.random.default_rng(8)
    x = rng.uniform(-1.0, 1.0, size=(20000, 1))
    log_w = np.where(x[:, 0] < 0, np.log(3.0), 0.0) - 50.0
    basins = basin_free_energies(x, {"left": [(-1.0, 0.0)], "right": [(0.0, 1.0)], "far": [(2.0, 3.0)]},
                                 log_weights=log_w, n_blocks=200)
    for name, p in [("left", 0.75), ("right", 0.25)]:
        assert abs(basins[name]["free_energy_kT"] + np.log(p)) <= 4 * basins[name]["stderr_kT"], name
        assert abs(basins[name]["probability"] - p) <= 4 * basins[name]["probability_stderr"], name
    assert basins["far"]["sampled"] is False and basins["far"]["free_energy_kT"] is None
    assert basins["far"]["stderr_kT"] is None and "not sampled" in basins["far"]["note"]


def test_basin_errors_are_calibrated_for_correlated_samples():
    """AR(1) chains (correlation time ~100 frames), basin x > 1 (P = 1 − Φ(1)): the block-bootstrap SE
    of −ln P matches the spread over independent chains, which scatter around the truth."""
    rng = np.random.default_rng(9)
    estimates, errors = [], []
    for _ in range(40):
        basin = basin_free_energies(ar1_chain(rng, 20000, 0.98)[:, None], {"tail": [(1.0, np.inf)]}, n_blocks=20,
                                    seed=int(rng.integers(1 << 31)))["tail"]
        estimates.append(basin["free_energy_kT"])
        errors.append(basin["stderr_kT"])
    spread = np.std(estimates, ddof=1)
    assert 0.6 < spread / np.mean(errors) < 1.5
    assert abs(np.mean(estimates) + np.log(stats.norm.sf(1.0))) <= 4 * spread / np.sqrt(40)


@pytest.mark.parametrize("boxes, message", [
    ({"a": [(-1.0, 0.5)], "b": [(0.0, 1.0)]}, "basins a and b overlap"),
    ({"a": [(-1.0, 0.0), (0.0, 1.0)]}, r"basin a: need 1 \(low, high\) pairs"),
])
def test_bad_basins_are_named(boxes, message):
    with pytest.raises(BoltzclfError, match=message):
        basin_free_energies(np.zeros((4, 1)), boxes, n_blocks=2)


@pytest.mark.parametrize("cv, log_w, message", [
    (np.array([0.0, np.nan, 1.0]), None, r"non-finite entries at frames \[1\]"),
    (np.zeros((3, 1)), np.zeros(4), r"log-weights: expected shape \(3,\)"),
    (np.zeros((3, 1)), np.array([0.0, np.nan, 0.0]), "NaN or \\+inf at frames \\[1\\]"),
    (np.zeros((2, 2, 2)), None, "expected shape"),
])
def test_bad_inputs_are_named(cv, log_w, message):
    with pytest.raises(BoltzclfError, match=message):
        histogram_free_energy(cv, [(-1.0, 1.0)] * (cv.shape[1] if cv.ndim == 2 else 1), log_weights=log_w,
                              n_blocks=2)


def test_pmf_figure_leaves_unsampled_bins_blank_and_has_a_title():
    """Empty bins (free energy inf) must be masked in the 2-D map, not painted the colour of the cap."""
    from boltzclf.plots.pmf import pmf_figure

    rng = np.random.default_rng(0)
    cv = np.column_stack([rng.uniform(-np.pi, 0.0, 4000), rng.uniform(-np.pi, np.pi, 4000)])  # phi > 0 empty
    ranges = [(-np.pi, np.pi)] * 2
    surface = histogram_free_energy(cv, ranges, bins=12, periodic=True, n_bootstrap=10)
    profiles = [histogram_free_energy(cv[:, i], [ranges[i]], bins=12, periodic=True, n_bootstrap=10) for i in (0, 1)]
    fig = pmf_figure(surface, profiles, ["phi / deg", "psi / deg"], [True, True], title="test system: 4000 frames")
    mesh = fig.axes[0].collections[0]
    values = mesh.get_array()
    empty = ~np.isfinite(surface.free_energy.T.ravel())
    assert empty.sum() == 6 * 12
    assert np.ma.getmaskarray(values).ravel()[empty].all() and not np.ma.getmaskarray(values).ravel()[~empty].any()
    assert fig._suptitle.get_text() == "test system: 4000 frames"
