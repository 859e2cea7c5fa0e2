"""Losses: the exact marginals beat perturbed-weight mixtures; the binary loss is the k = 2 CE."""
import pytest
import torch
import torch.nn.functional as F

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving, log_snr_grid, uniform_grid
from boltzclf.losses import LossConfig, build_loss, classification_loss
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import GaussianMixture, mog40, two_modes

N = 20_000


def _with_weights(mix: GaussianMixture, weights) -> GaussianMixture:
    return GaussianMixture(torch.tensor(weights, dtype=torch.float64), mix.means, mix.variances)


def _paired_losses(loss_cfg, exact, wrong, data, seed=0):
    """Per-sample losses of two models on identical draws of levels and noise."""
    loss = build_loss(loss_cfg)
    out = []
    for model in (exact, wrong):
        out.append(loss(model, data, torch.Generator().manual_seed(seed)))
    return out


def _assert_exact_better(term_exact, term_wrong, k=4.0):
    diff = (term_wrong - term_exact).detach()
    mean, se = diff.mean(), diff.std() / diff.numel() ** 0.5
    assert mean > k * se, f"exact not better: mean diff {float(mean):.4g} ± {float(se):.2g}"


@pytest.mark.parametrize("cfg", [LossConfig("diffclf", k=2), LossConfig("diffclf", k=2, pairs="adjacent"),
                                 LossConfig("diffclf", k=2, shared_noise=True), LossConfig("diffclf", k=4)],
                         ids=["binary-uniform", "binary-adjacent", "binary-shared-noise", "multiclass-k4"])
def test_exact_marginals_win_classification(cfg, generator):
    target = two_modes(2)
    process, levels = VariancePreserving(), log_snr_grid(VariancePreserving(), 1e-3, 0.999, 16)
    exact = MixtureMarginalEnergy(target, process, levels)
    wrong = MixtureMarginalEnergy(_with_weights(target, [0.5, 0.5]), process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(cfg, exact, wrong, data)
    _assert_exact_better(out_exact["clf"], out_wrong["clf"])


def test_exact_marginals_win_dsm(generator):
    target = two_modes(2, separation=1.0)  # overlapping modes: weights change the score
    process, levels = VariancePreserving(), uniform_grid(1e-3, 0.999, 32)
    exact = MixtureMarginalEnergy(target, process, levels)
    wrong = MixtureMarginalEnergy(_with_weights(target, [0.2, 0.8]), process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(LossConfig("dsm", k=1), exact, wrong, data)
    _assert_exact_better(out_exact["dsm"], out_wrong["dsm"])


def test_exact_marginals_win_time_score_matching(generator):
    target = two_modes(2, separation=1.0)
    process, levels = VariancePreserving(), uniform_grid(1e-2, 0.9, 16)
    exact = MixtureMarginalEnergy(target, process, levels)
    wrong = MixtureMarginalEnergy(_with_weights(target, [0.1, 0.9]), process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(LossConfig("ctsm", k=1), exact, wrong, data)
    _assert_exact_better(out_exact["ctsm"], out_wrong["ctsm"])


def test_interpolant_losses_prefer_exact_marginals(generator):
    start, end = two_modes(2, separation=1.0), mog40(2)
    si, levels = StochasticInterpolant(1.0), uniform_grid(1e-2, 0.99, 16)
    exact = MixtureMarginalEnergy(start, si, levels, end)
    wrong = MixtureMarginalEnergy(_with_weights(start, [0.1, 0.9]), si, levels, end)
    data = (start.sample(N // 4, generator), end.sample(N // 4, generator))
    cfg = LossConfig("diffclf", k=3, dsm_weighting="square")
    out_exact, out_wrong = _paired_losses(cfg, exact, wrong, data)
    _assert_exact_better(out_exact["clf"], out_wrong["clf"])
    cfg = LossConfig("dsm", k=1, dsm_weighting="uniform", antithetic=True)
    out_exact, out_wrong = _paired_losses(cfg, exact, wrong, data)
    _assert_exact_better(out_exact["dsm"], out_wrong["dsm"])


def test_exact_gaussian_beats_a_wider_gaussian_on_dsm(generator):
    """For Gaussian data the exact marginals have a lower DSM loss than those of a wider Gaussian."""
    target = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                             torch.ones(1, 3, dtype=torch.float64))
    process, levels = VariancePreserving(), uniform_grid(1e-3, 0.999, 8)
    exact = MixtureMarginalEnergy(target, process, levels)
    wider = MixtureMarginalEnergy(GaussianMixture(target.weights, target.means, 1.5 * target.variances),
                                  process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(LossConfig("dsm", k=1), exact, wider, data)
    _assert_exact_better(out_exact["dsm"], out_wrong["dsm"])


def test_binary_loss_is_the_two_class_cross_entropy():
    logits = torch.randn(7, 2, 2, dtype=torch.float64)
    l_s_xs, l_t_xs = logits[:, 0, 0], logits[:, 1, 0]
    l_s_xt, l_t_xt = logits[:, 0, 1], logits[:, 1, 1]
    expected = 0.5 * F.softplus(l_t_xs - l_s_xs) + 0.5 * F.softplus(l_s_xt - l_t_xt)
    assert torch.allclose(classification_loss(logits), expected)


def test_classification_loss_is_log_k_at_chance():
    assert torch.allclose(classification_loss(torch.zeros(3, 5, 5)), torch.full((3,), torch.log(torch.tensor(5.0))))


def test_loss_config_validation():
    from boltzclf.core.errors import ConfigError

    with pytest.raises(ConfigError, match="adjacent"):
        LossConfig("diffclf", k=3, pairs="adjacent")
    with pytest.raises(ConfigError, match="k >= 2"):
        LossConfig("diffclf", k=1)
