"""The learned-TI estimator (TI over interpolant levels + importance corrections at both ends) on
Gaussian mixtures, whose interpolant marginals p_t are exact: with ln p̃_θ(t, x) = ln p_t(x) + g(t) for
an arbitrary g and unnormalised ends π̃_i = e^{c_i} p_i, ln Z_0 − ln Z_1 = c_0 − c_1 exactly."""
import math

import pytest
import torch

from boltzclf.diffusion import StochasticInterpolant, uniform_grid
from boltzclf.estimators.estimate import EstimatorInputError
from boltzclf.estimators import interpolant_ti
from boltzclf.estimators.interpolant_ti import interpolant_free_energy
from boltzclf.targets.gmm import interpolant_marginal, two_modes

C0, C1 = 3.1, -1.4  # ln Z_0 and ln Z_1 of the unnormalised end densities


def _offset(t: float) -> float:
    """A learned-normaliser error that depends on t alone: it must telescope out."""
    return 5.0 * math.sin(3.0 * t) + 7.0 * t


def _inputs(start, end, levels, n, seed, model_error=0.0):
    interpolant = StochasticInterpolant(0.5)
    gen = torch.Generator().manual_seed(seed)
    t = levels.tolist()
    marginals = [interpolant_marginal(start, end, interpolant, s) for s in t]

    def log_model(i, x):  # ln p̃_θ(t_i, x), optionally with an x-dependent error at the first level
        error = model_error * x[:, 0] if i == 0 else 0.0
        return marginals[i].log_prob(x) + _offset(t[i]) + error

    forward, backward = [], []
    for i in range(len(t) - 1):
        x, y = marginals[i].sample(n, gen), marginals[i + 1].sample(n, gen)
        forward.append(log_model(i + 1, x) - log_model(i, x))
        backward.append(log_model(i + 1, y) - log_model(i, y))
    x0, x1 = start.sample(n, gen), end.sample(n, gen)
    start_ratio = log_model(0, x0) - (start.log_prob(x0) + C0)
    end_ratio = log_model(len(t) - 1, x1) - (end.log_prob(x1) + C1)
    return torch.stack(forward), torch.stack(backward), start_ratio, end_ratio


@pytest.mark.parametrize("model_error", [0.3])
def test_recovers_the_log_normaliser_difference_on_gaussian_mixtures(model_error):
    start, end = two_modes(2), two_modes(2, separation=3.0, variance=0.2, heavy_weight=0.3)
    levels = uniform_grid(1e-3, 1 - 1e-3, 256)
    result = interpolant_free_energy(*_inputs(start, end, levels, 2048, seed=0, model_error=model_error))
    value, se = float(result.estimate.value), float(result.estimate.se)
    assert 0 < se < 0.1
    assert abs(value - (C0 - C1)) < 4 * se + 0.03  # 0.03: the grid's finite differences (second order)
    # the t-only offset telescopes: the TI part carries g(t_min) − g(t_max), the corrections undo it
    assert result.parts["ti"] == pytest.approx(_offset(levels[0].item()) - _offset(levels[-1].item()), abs=0.3)
    assert 0 < result.kish_fraction["start"] <= 1 and 0 < result.kish_fraction["end"] <= 1


def test_a_missing_end_correction_is_visible():
    start, end = two_modes(2), two_modes(2, separation=3.0, variance=0.2, heavy_weight=0.3)
    levels = uniform_grid(1e-3, 1 - 1e-3, 64)
    forward, backward, s, e = _inputs(start, end, levels, 2048, seed=1)
    full = interpolant_free_energy(forward, backward, s, e)
    flipped = interpolant_free_energy(forward, backward, s, -e)  # a sign error in one end term
    assert abs(float(flipped.estimate.value) - (C0 - C1)) > 10 * float(full.estimate.se)


def test_the_chunked_bootstrap_error_matches_the_delta_method(monkeypatch):
    """Resampled 7 at a time, the bootstrap SE must agree with the independent delta-method SE: TI part
    Σ_i (Var fw_i + Var bw_i)/(4N), each end Var(e^w)/(N mean(e^w)²)."""
    start, end = two_modes(2), two_modes(2, separation=3.0, variance=0.2, heavy_weight=0.3)
    forward, backward, s, e = _inputs(start, end, uniform_grid(1e-3, 1 - 1e-3, 32), 1024, seed=2, model_error=0.3)
    monkeypatch.setattr(interpolant_ti, "BOOTSTRAP_CHUNK_VALUES", 7 * 2 * forward.numel())
    result = interpolant_free_energy(forward, backward, s, e, n_bootstrap=400)
    n = forward.shape[1]
    ti_var = ((forward.var(1) + backward.var(1)) / (4 * n)).sum()
    end_var = sum((w - w.max()).exp().var() / (n * (w - w.max()).exp().mean() ** 2) for w in (s, e))
    assert float(result.estimate.se) == pytest.approx(float((ti_var + end_var).sqrt()), rel=0.2)


def test_bad_input_is_refused():
    with pytest.raises(EstimatorInputError, match="forward"):
        interpolant_free_energy(torch.zeros(5), torch.zeros(5), torch.zeros(4), torch.zeros(4))
    with pytest.raises(EstimatorInputError, match="end_log_ratio"):
        interpolant_free_energy(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(4), torch.tensor([0.0, float("nan")]))
