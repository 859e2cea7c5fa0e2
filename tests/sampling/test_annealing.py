"""Annealed importance sampling between Gaussians whose normalisers are known in closed form."""
import math

import pytest
import torch

from boltzclf.estimators.importance import log_normaliser
from boltzclf.sampling.annealing import annealed_log_weights

DIM, SHIFT, SCALE = 3, 1.5, 0.6
LOG_RATIO = DIM * math.log(SCALE)  # ln Z_b − ln Z_a for the two densities below


def log_a(x):
    return -0.5 * x.pow(2).sum(1)


def log_b(x):
    shifted = x - torch.tensor([SHIFT, 0.0, 0.0], dtype=x.dtype)
    return -0.5 * shifted.pow(2).sum(1) / SCALE ** 2


def test_annealing_recovers_the_log_normaliser_ratio_with_less_spread_than_one_step():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2048, DIM, generator=generator, dtype=torch.float64)
    annealed = annealed_log_weights(x, log_a, log_b, n_levels=64, mcmc_steps=2, step_size=0.3, generator=generator)
    one_step = annealed_log_weights(x, log_a, log_b, n_levels=1, mcmc_steps=0, step_size=0.3, generator=generator)
    estimate = log_normaliser(annealed.log_weights)  # ln mean exp w ± delta-method SE
    value, se = float(estimate.value), float(estimate.se)
    assert abs(value - LOG_RATIO) <= 3 * se  # a flipped sign would be 2·|ln 0.6³| = 3.1 away
    assert se < 0.02
    assert float(annealed.log_weights.std()) < 0.3 * float(one_step.log_weights.std())
    assert 0.3 < float(annealed.acceptance.mean()) < 0.9


def test_replicas_pool_their_walks_in_exponential_space_and_narrow_the_estimate():
    """Few levels leave the single walks' log-weights spread, so ln mean exp and mean ln differ by several SE."""
    x = torch.randn(512, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    single = annealed_log_weights(x, log_a, log_b, n_levels=8, mcmc_steps=1, step_size=0.3,
                                  generator=torch.Generator().manual_seed(4))
    pooled = annealed_log_weights(x, log_a, log_b, n_levels=8, mcmc_steps=1, step_size=0.3,
                                  generator=torch.Generator().manual_seed(4), replicas=16)
    assert pooled.log_weights.shape == (512,) and pooled.walk_log_weights.shape == (512, 16)
    estimate = log_normaliser(pooled.log_weights)
    value, se = float(estimate.value), float(estimate.se)
    assert abs(value - LOG_RATIO) <= 3 * se
    assert float(log_normaliser(single.log_weights).se) > 1.3 * se  # 0.056 vs 0.038
    mean_of_logs = float(pooled.walk_log_weights.mean(1).mean())  # the Jensen-biased reduction
    assert abs(mean_of_logs - LOG_RATIO) > 5 * se


def test_one_level_without_moves_is_the_exponential_average():
    x = torch.randn(16, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = annealed_log_weights(x, log_a, log_b, n_levels=1, mcmc_steps=0, step_size=1.0,
                                  generator=torch.Generator())
    torch.testing.assert_close(result.log_weights, log_b(x) - log_a(x))
    assert torch.isnan(result.acceptance).all()


def test_levels_without_moves_add_up_to_one_step():
    x = torch.randn(16, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = annealed_log_weights(x, log_a, log_b, n_levels=7, mcmc_steps=0, step_size=1.0,
                                  generator=torch.Generator())
    torch.testing.assert_close(result.log_weights, log_b(x) - log_a(x))


@pytest.mark.parametrize("levels, steps, size, replicas", [(0, 1, 1.0, 1), (4, -1, 1.0, 1), (4, 1, 0.0, 1),
                                                           (4, 1, 1.0, 0)])
def test_bad_settings_are_refused(levels, steps, size, replicas):
    with pytest.raises(ValueError, match="n_levels"):
        annealed_log_weights(torch.zeros(4, DIM), log_a, log_b, levels, steps, size, torch.Generator(),
                             replicas=replicas)
