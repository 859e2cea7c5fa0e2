"""MBAR reweighting across temperatures against the exact law of a harmonic oscillator."""
import math

import numpy as np
import pytest

from boltzclf.estimators.estimate import GAS_CONSTANT_KJ_PER_MOL_K as R
from boltzclf.estimators.temperature_mbar import temperature_weights
from boltzclf.estimators.weighted import weighted_mean

K_SPRING = 400.0  # kJ/mol/nm²
DIM = 3


def exact_samples(temperatures, n, seed=0):
    """x ~ N(0, RT/k) in DIM dimensions at each temperature; U = ½ k |x|²."""
    rng = np.random.default_rng(seed)
    x = [rng.normal(0.0, math.sqrt(R * t / K_SPRING), size=(n, DIM)) for t in temperatures]
    state = np.repeat(np.arange(len(temperatures)), n)
    potential = 0.5 * K_SPRING * (np.concatenate(x) ** 2).sum(1)
    return potential, state


@pytest.mark.parametrize("target", [300.0, 350.0, 520.0])
def test_reweighted_mean_energy_is_the_equipartition_value(target):
    temperatures = np.array([300.0, 380.0, 480.0, 600.0])
    potential, state = exact_samples(temperatures, 4000)
    rng = np.random.default_rng(1)
    shuffle = rng.permutation(len(potential))  # samples need not be sorted by temperature
    weights = temperature_weights(potential[shuffle], state[shuffle], temperatures, target)
    estimate = weighted_mean(potential[shuffle], weights.log_w)
    exact = 0.5 * DIM * R * target
    assert abs(float(estimate.value) - exact) <= 4 * float(estimate.se)
    # free energies: Z_k ∝ T_k^(DIM/2), so f_k - f_0 = -(DIM/2) ln(T_k / T_0)
    np.testing.assert_allclose(weights.f_k, -0.5 * DIM * np.log(temperatures / 300.0), atol=0.03)
    assert 0.1 * len(potential) < weights.kish_ess <= len(potential)


def test_weights_differ_from_using_the_target_temperature_alone():
    """Pooling moves the estimate: samples of the hotter states enter with weights < those at 300 K."""
    temperatures = np.array([300.0, 600.0])
    potential, state = exact_samples(temperatures, 2000)
    weights = temperature_weights(potential, state, temperatures, 300.0)
    w = np.exp(weights.log_w)
    hot, cold = w[state == 1], w[state == 0]
    # a hot sample at low U is as likely at 300 K as a cold one; at high U it is down-weighted
    assert hot[potential[state == 1] > 10].mean() < cold[potential[state == 0] > 10].mean()
    naive = weighted_mean(potential, np.zeros_like(potential))  # equal weights: biased upwards
    assert float(naive.value) > 0.5 * DIM * R * 300.0 * 1.3


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="every temperature needs samples"):
        temperature_weights(np.ones(4), np.array([0, 0, 0, 0]), np.array([300.0, 400.0]), 300.0)
    with pytest.raises(ValueError, match="state"):
        temperature_weights(np.ones(2), np.array([0, 5]), np.array([300.0, 400.0]), 300.0)
