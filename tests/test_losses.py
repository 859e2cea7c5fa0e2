"""Losses: the exact marginals beat perturbed-weight mixtures; the binary loss is the k = 2 CE."""
import math

import pytest
import torch
import torch.nn.functional as F

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving, log_snr_grid, uniform_grid
from boltzclf.losses import LossConfig, build_loss, classification_loss
from boltzclf.losses.levels import noisy_samples
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import GaussianMixture, mog40, two_modes
from exact_models import OffsetMarginalEnergy

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
                                 LossConfig("diffclf", k=2, shared_noise=True), LossConfig("diffclf", k=4),
                                 LossConfig("diffclf", k=2, classify="one"), LossConfig("diffclf", k=4, classify="one")],
                         ids=["binary-uniform", "binary-adjacent", "binary-shared-noise", "multiclass-k4",
                              "binary-one-sided", "multiclass-k4-one-sided"])
def test_exact_marginals_win_classification(cfg, generator):
    target = two_modes(2)
    process, levels = VariancePreserving(), log_snr_grid(VariancePreserving(), 1e-3, 0.999, 16)
    exact = MixtureMarginalEnergy(target, process, levels)
    wrong = MixtureMarginalEnergy(_with_weights(target, [0.5, 0.5]), process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(cfg, exact, wrong, data)
    _assert_exact_better(out_exact["clf"], out_wrong["clf"])


@pytest.mark.parametrize("kind, term, grid, wrong_weights", [
    ("dsm", "dsm", (1e-3, 0.999, 32), [0.2, 0.8]),
    ("ctsm", "ctsm", (1e-2, 0.9, 16), [0.1, 0.9]),
])
def test_exact_marginals_win_score_and_time_score_matching(generator, kind, term, grid, wrong_weights):
    target = two_modes(2, separation=1.0)  # overlapping modes: the weights change score and time score
    process, levels = VariancePreserving(), uniform_grid(*grid)
    exact = MixtureMarginalEnergy(target, process, levels)
    wrong = MixtureMarginalEnergy(_with_weights(target, wrong_weights), process, levels)
    data = (target.sample(N, generator),)
    out_exact, out_wrong = _paired_losses(LossConfig(kind, k=1), exact, wrong, data)
    _assert_exact_better(out_exact[term], out_wrong[term])


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


def test_one_sided_estimate_has_the_same_expectation(generator):
    """Classifying one sample per row is unbiased for the symmetric objective (exchangeable levels)."""
    target = two_modes(2)
    process, levels = VariancePreserving(), log_snr_grid(VariancePreserving(), 1e-3, 0.999, 8)
    model = MixtureMarginalEnergy(_with_weights(target, [0.4, 0.6]), process, levels)
    data = (target.sample(40_000, generator),)
    values = {}
    for classify in ("all", "one"):
        clf = build_loss(LossConfig("diffclf", k=3, classify=classify))(model, data, torch.Generator().manual_seed(7))["clf"]
        values[classify] = (clf.mean(), clf.std() / clf.numel() ** 0.5)
    (m_all, se_all), (m_one, se_one) = values["all"], values["one"]
    assert abs(m_all - m_one) <= 4 * (se_all**2 + se_one**2) ** 0.5


def test_classification_loss_is_log_k_at_chance():
    assert torch.allclose(classification_loss(torch.zeros(3, 5, 5)), torch.full((3,), torch.log(torch.tensor(5.0))))


def test_loss_config_validation():
    from boltzclf.core.errors import ConfigError

    with pytest.raises(ConfigError, match="adjacent"):
        LossConfig("diffclf", k=3, pairs="adjacent")
    with pytest.raises(ConfigError, match="k >= 2"):
        LossConfig("diffclf", k=1)


# ----- independent checks: closed forms, not the code under test ---------------------------------------

def _gaussian(dim, variance):
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, dim, dtype=torch.float64),
                           torch.full((1, dim), variance, dtype=torch.float64))


def _vp_alpha_gamma(t, beta_min=0.1, beta_max=20.0):
    a = beta_min * t + 0.5 * (beta_max - beta_min) * t**2
    return math.exp(-0.5 * a), math.sqrt(1.0 - math.exp(-a))


@pytest.mark.parametrize("process_name, weighting, t", [
    ("vp", "edm", 0.05), ("vp", "edm", 0.3), ("edm", "edm", 0.5), ("edm", "edm", 5.0),
    ("interpolant", "uniform", 0.3), ("interpolant", "linear", 0.6), ("interpolant", "square", 0.2)])
def test_dsm_loss_of_the_exact_score_has_its_closed_form_value(generator, process_name, weighting, t):
    """For Gaussian data the exact score gives E‖z + γ s*‖²/d = m/(m + γ²), m the variance of x_t's
    data part; the per-sample loss is w(t) times that, w the weighting's own formula: EDM
    (σ² + σ_d²)/σ_d² (σ_d = 1 for the analytic model; data variance v ≠ σ_d² so no term cancels),
    uniform 1, linear 1/γ, square 1/γ²."""
    v0, v1, dim, n = 0.5, 2.0, 3, 20_000
    levels = torch.tensor([t], dtype=torch.float64)
    t = float(levels.float())  # the model's grid is float32
    start = _gaussian(dim, v0)
    if process_name == "interpolant":
        process, end = StochasticInterpolant(0.7), _gaussian(dim, v1)
        gamma2 = 0.49 * t * (1 - t)
        m = (1 - t) ** 2 * v0 + t**2 * v1
        data = (start.sample(n, generator), end.sample(n, generator))
    else:
        process, end = (VariancePreserving() if process_name == "vp" else EDM()), None
        alpha, gamma = _vp_alpha_gamma(t) if process_name == "vp" else (1.0, t)
        gamma2, m = gamma**2, alpha**2 * v0
        data = (start.sample(n, generator),)
    sigma2 = gamma2 / (m / v0) if process_name != "interpolant" else None  # σ = γ/α
    weight = {"edm": lambda: sigma2 + 1.0, "uniform": lambda: 1.0, "linear": lambda: gamma2**-0.5,
              "square": lambda: 1.0 / gamma2}[weighting]()
    expected = weight * m / (m + gamma2)
    model = MixtureMarginalEnergy(start, process, levels, end)  # one level: every sample uses t
    loss = build_loss(LossConfig("dsm", k=1, dsm_weighting=weighting))(model, data, generator)["dsm"]
    mean, se = float(loss.mean()), float(loss.std() / n**0.5)
    assert abs(mean - expected) <= 5 * se, (mean, expected, se)


@pytest.mark.parametrize("process_name", ["vp", "edm", "interpolant"])
def test_noisy_samples_have_the_closed_form_marginal_moments(generator, process_name):
    """x_t | x0 (and x1) is Gaussian with mean α_t x0 and variance γ_t² per coordinate (interpolant:
    mean (1 − t) x0 + t x1, variance γ_f² t(1 − t)); moments from independent formulas, ≤ 5 SE."""
    n, dim = 20_000, 3
    levels = torch.tensor([0.02, 0.2, 0.5, 0.9], dtype=torch.float64)
    x0 = torch.tensor([[1.5, -0.5, 0.2]], dtype=torch.float64)
    x1 = torch.tensor([[-2.0, 1.0, 3.0]], dtype=torch.float64)
    if process_name == "interpolant":
        process, batch = StochasticInterpolant(0.7), (x0.expand(n, dim), x1.expand(n, dim))
        end = _gaussian(dim, 1.0)
    else:
        process, batch, end = (VariancePreserving() if process_name == "vp" else EDM()), (x0.expand(n, dim),), None
    model = MixtureMarginalEnergy(_gaussian(dim, 1.0), process, levels, end)
    index = torch.arange(len(levels)).expand(n, -1)
    _, x_t, _, _ = noisy_samples(model, batch, index, False, generator)
    x_t = x_t.reshape(n, len(levels), dim)
    for i, t in enumerate(model.levels.double().tolist()):
        if process_name == "interpolant":
            mean, var = (1 - t) * x0[0] + t * x1[0], 0.49 * t * (1 - t)
        else:
            alpha, gamma = _vp_alpha_gamma(t) if process_name == "vp" else (1.0, t)
            mean, var = alpha * x0[0], gamma**2
        sample = x_t[:, i]
        assert ((sample.mean(0) - mean).abs() <= 5 * (var / n) ** 0.5).all(), (t, sample.mean(0), mean)
        assert ((sample.var(0) - var).abs() <= 5 * var * (2 / (n - 1)) ** 0.5).all(), (t, sample.var(0), var)
    # shared noise: one z per row, the same at every level
    _, _, noise, _ = noisy_samples(model, tuple(x[:5] for x in batch), index[:5], True, generator)
    noise = noise.reshape(5, len(levels), dim)
    assert torch.equal(noise, noise[:, :1].expand(-1, len(levels), -1))


def test_diffclf_trains_f_to_the_log_normalisers_with_the_right_sign(tmp_path):
    """Training only f (the 'network', here exact marginals + offsets c, is fixed) with the DiffCLF loss
    through the trainer converges to f = c − c[−1]: the right sign and gauge."""
    from boltzclf.training.config import TrainingConfig
    from boltzclf.training.data import MixtureData
    from boltzclf.training.trainer import train

    target = two_modes(2, separation=1.0)
    levels = log_snr_grid(VariancePreserving(), 1e-2, 0.999, 5)
    offsets = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    model = OffsetMarginalEnergy(target, VariancePreserving(), levels, offsets)
    config = TrainingConfig(steps=300, batch_size=256, lr=0.05, lr_schedule="cosine", ema=0, dataset_size=0,
                            checkpoint_every=300, log_every=300, grad_clip=10.0)
    data = MixtureData(target, None, 0, 0, torch.device("cpu"), dtype=torch.float64)
    trained = train(model, build_loss(LossConfig("diffclf", k=3)), data, config, tmp_path, {}, torch.device("cpu"))
    truth = offsets - offsets[-1]
    error = (trained.free_energies.detach() - truth).abs().max()
    assert error < 0.1, (trained.free_energies, truth)


@pytest.mark.parametrize("kind, key, value", [
    ("diffclf", "antithetic", True), ("ctsm", "antithetic", True), ("dsm", "shared_noise", True),
    ("dsm", "pairs", "distinct"), ("dsm", "classify", "one"), ("ctsm", "shared_noise", True),
    ("ctsm", "pairs", "distinct"), ("ctsm", "classify", "one"), ("dsm", "weight", 0.5)])
def test_options_a_loss_ignores_are_config_errors(kind, key, value):
    from boltzclf.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{key}: is not used by kind: {kind}"):
        LossConfig(kind, k=3, **{key: value})


def test_diffclf_free_energy_gradient_is_bitwise_reproducible_with_two_threads():
    """The gradient w.r.t. f of a large DiffCLF batch (B·k above torch's parallel grain size) is the
    same on every call: f is picked per row by index_select (backward: ordered index_add_), not by
    f[levels], whose backward accumulates in a thread-dependent order on CPU."""
    target = two_modes(2)
    levels = log_snr_grid(VariancePreserving(), 1e-2, 0.999, 32)
    model = OffsetMarginalEnergy(target, VariancePreserving(), levels, torch.zeros(32))
    model.free_energies = torch.nn.Parameter(torch.zeros(32))  # float32, as in EnergyModel
    data = (target.sample(17_000, torch.Generator().manual_seed(0)).float(),)  # B·k = 34,000 > 32,768
    loss = build_loss(LossConfig("diffclf", k=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(3):
            model.free_energies.grad = None
            loss(model, data, torch.Generator().manual_seed(1))["loss"].mean().backward()
            grads.append(model.free_energies.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
