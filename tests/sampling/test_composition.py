"""Products and mixtures of two energy paths as SMC targets, checked against closed forms.

The models are exact (MixtureMarginalEnergy: the true noised marginals of 2-D diagonal Gaussian
mixtures), so every level density is known in closed form and the final targets are Gaussian mixtures
with closed-form weights and normalisers, computed here independently of the code under test:

* product: N(x; μ_a, Σ_a) N(x; μ_b, Σ_b) = N(μ_a; μ_b, Σ_a + Σ_b) · N(x; m, S) with
  S = (Σ_a⁻¹ + Σ_b⁻¹)⁻¹, m = S(Σ_a⁻¹μ_a + Σ_b⁻¹μ_b), so p_a p_b is a 4-component mixture with weights
  ∝ w_a w_b N(μ_a; μ_b, Σ_a + Σ_b) and ∫ p_a p_b = Σ_ab w_a w_b N(μ_a; μ_b, Σ_a + Σ_b);
* mixture: w_a p_a + w_b p_b, whose mode masses are the products of the weights.

SMC estimates are compared within 3 standard errors (clustered by ancestor for resampled particles,
delta method over independent groups for log Z), with fixed seeds.
"""
from __future__ import annotations

import math

import pytest
import torch

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import clustered_mean, weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.composition import MixturePath, ProductPath
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath, TargetStart
from boltzclf.sampling.priors import GaussianPrior
from boltzclf.sampling.smc import SMCSettings, smc
from boltzclf.targets.gmm import GaussianMixture

F64 = torch.float64
VP = VariancePreserving()


def _gmm(weights, means, variances) -> GaussianMixture:
    return GaussianMixture(torch.tensor(weights, dtype=F64), torch.tensor(means, dtype=F64),
                           torch.tensor(variances, dtype=F64))


# A: TwoModes-like (heavy mode at −1·1); B: two modes placed off A's diagonal, so that each pair
# (a, b) overlaps by a different amount and all four product components carry mass.
A = _gmm([2 / 3, 1 / 3], [[-1.0, -1.0], [1.0, 1.0]], [[0.15, 0.15], [0.15, 0.15]])
B = _gmm([0.4, 0.6], [[-1.2, 0.6], [0.8, -0.9]], [[0.3, 0.2], [0.25, 0.35]])


def product_of_mixtures(a: GaussianMixture, b: GaussianMixture) -> tuple[GaussianMixture, float]:
    """p_a p_b / Z as a mixture, and log Z = log ∫ p_a p_b (diagonal covariances, closed form)."""
    log_w, means, variances = [], [], []
    for i in range(a.n_components):
        for j in range(b.n_components):
            s = a.variances[i] + b.variances[j]
            overlap = -0.5 * float(((a.means[i] - b.means[j]) ** 2 / s).sum() + torch.log(2 * math.pi * s).sum())
            log_w.append(math.log(float(a.weights[i])) + math.log(float(b.weights[j])) + overlap)
            v = 1.0 / (1.0 / a.variances[i] + 1.0 / b.variances[j])
            variances.append(v)
            means.append(v * (a.means[i] / a.variances[i] + b.means[j] / b.variances[j]))
    log_w = torch.tensor(log_w, dtype=F64)
    log_z = torch.logsumexp(log_w, 0)
    return GaussianMixture(torch.exp(log_w - log_z), torch.stack(means), torch.stack(variances)), float(log_z)


def quadrant_masses(p: GaussianMixture) -> torch.Tensor:
    """Exact mass of the quadrants labelled 2·[x₁ > 0] + [x₂ > 0] under a 2-D diagonal mixture."""
    upper = torch.special.ndtr(p.means / p.variances.sqrt())  # P(x_d > 0) per component and dimension
    masses = []
    for right in (False, True):
        for top in (False, True):
            px = upper[:, 0] if right else 1 - upper[:, 0]
            py = upper[:, 1] if top else 1 - upper[:, 1]
            masses.append(float((p.weights * px * py).sum()))
    return torch.tensor(masses, dtype=F64)


def quadrant_labels(x: torch.Tensor) -> torch.Tensor:
    return 2 * (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _assert_within(estimate, se, exact, k: float = 3.0, what: str = "") -> None:
    estimate, se, exact = (torch.as_tensor(v, dtype=F64) for v in (estimate, se, exact))
    z = (estimate - exact) / se
    assert bool((z.abs() <= k).all()), f"{what}: estimate {estimate.tolist()} ± {se.tolist()}, exact {exact.tolist()}"


def _hessians(log_prob, x: torch.Tensor) -> torch.Tensor:
    """Per-sample Hessians ``(B, D, D)`` of a batched ``log_prob`` by torch.autograd.functional."""
    return torch.stack([torch.autograd.functional.hessian(lambda y: log_prob(y[None])[0], row) for row in x])


def _run(path, n_particles=4096, n_groups=32, seed=7):
    kernels = DiffusionKernels(VP, path.times, path.space, 1.0, "ddpm", "hessian")
    return smc(path, kernels, SMCSettings(n_particles=n_particles, n_groups=n_groups),
               torch.Generator().manual_seed(seed), dtype=F64)


# ----- product ---------------------------------------------------------------------------------------
def test_product_smc_recovers_the_product_mixture_and_its_normaliser():
    """SMC on p_a(t)·p_b(t) ends at p_a p_b / Z_ab: mode masses and log Z_ab within 3 SE.

    The walk starts at t = 0.3 (log-SNR ≈ 0.5). Above that, p_a(t)p_b(t) is narrower than any diffused
    density (its summed Hessian makes the DDPM posterior variance negative, which the kernel clips), so
    the kernel keeps contracting the particles and the weights become heavy-tailed: at t_max = 0.7 the
    log Z error bar did not shrink with 16× more particles. The estimates stay consistent either way.
    """
    exact, log_z = product_of_mixtures(A, B)
    assert float(exact.weights.min()) > 0.02  # every product component matters
    times = log_snr_grid(VP, 1e-3, 0.3, 96)
    path = ProductPath(LearnedPath(MixtureMarginalEnergy(A, VP, times), final_target=A),
                       LearnedPath(MixtureMarginalEnergy(B, VP, times), final_target=B))
    result = _run(path)
    assert float(result.ess.min()) > 0.3  # resampled whenever the ESS fell below 0.3: never much lower
    _assert_within(result.log_z, result.log_z_se, log_z, what="log Z_ab")
    masses = weighted_fractions(quadrant_labels(result.samples), 4, result.log_weights, result.ancestors)
    _assert_within(masses.value, masses.se, quadrant_masses(exact), what="quadrant masses")
    components = clustered_mean(exact.responsibilities(result.samples), result.ancestors, result.log_weights)
    _assert_within(components.value, components.se, exact.weights, what="component weights")  # E[r_j] = w_j
    assert float(components.n_eff) > 100  # enough independent ancestors for the clustered error bars
    # the naive product of the priors' weights is far off: the test can tell the product from its parts
    naive = (A.weights[:, None] * B.weights[None, :]).reshape(-1)
    assert float(((components.value - naive) / components.se).abs().max()) > 5
    # two models per particle at levels 1..K-1 (start included), two true targets at level 0
    assert result.n_model_evals == 2 * 4096 * 96 - 2 * 4096
    assert result.n_target_evals == 2 * 4096


def test_product_path_combines_levels_scores_hessians_and_start():
    times = log_snr_grid(VP, 1e-3, 0.999, 8)
    model_a, model_b = MixtureMarginalEnergy(A, VP, times), MixtureMarginalEnergy(B, VP, times)
    path = ProductPath(model_a, model_b)  # models are wrapped as LearnedPath(model) on their own grid
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for k in (0, 3, 7):
        t = float(times[k])
        pa, pb = A.noised(VP, t), B.noised(VP, t)
        logp, score = path.log_density(k, x)
        assert logp.dtype == F64
        assert torch.allclose(logp, pa.log_prob(x) + pb.log_prob(x), atol=1e-10)
        assert torch.allclose(score, pa.score(x) + pb.score(x), atol=1e-10)
        exact_h = _hessians(lambda y: pa.log_prob(y) + pb.log_prob(y), x)
        assert torch.allclose(path.hessian(k, x), exact_h, atol=1e-8)
    assert path.n_model_evals == 2 * 3 * 16 and path.n_target_evals == 0
    # start: the normalised N(0, v/2) ∝ N(0, v)·N(0, v) of the two priors
    v = float(VP.input_variance(times[-1], 1.0))
    y, log_q = path.initial(8, torch.Generator().manual_seed(1), F64, "cpu")
    assert math.isclose(path.start.variance, v / 2, rel_tol=1e-12)
    assert torch.allclose(log_q, -y.pow(2).sum(1) / v - math.log(math.pi * v))
    # a final target for the product as a whole replaces level 0
    whole = ProductPath(model_a, model_b, final_target=A)
    logp, score = whole.log_density(0, x)
    assert torch.allclose(logp, A.log_prob(x)) and torch.allclose(score, A.score(x))
    assert torch.allclose(whole.hessian(0, x), _hessians(A.log_prob, x), atol=1e-8)
    assert whole.n_target_evals == 16 and whole.n_model_evals == 0


# ----- mixture ---------------------------------------------------------------------------------------
# disjoint modes: A on the left, B on the right, ≥ 9 standard deviations apart
LEFT = _gmm([0.6, 0.4], [[-1.5, -1.5], [-1.5, 1.5]], [[0.1, 0.1], [0.1, 0.1]])
RIGHT = _gmm([0.25, 0.75], [[1.5, -1.5], [1.5, 1.5]], [[0.1, 0.1], [0.1, 0.1]])
MIX_WEIGHTS = (0.3, 0.7)
MIX_TIMES = log_snr_grid(VP, 1e-3, 0.999, 64)
MIX_MASSES = torch.cat([MIX_WEIGHTS[0] * LEFT.weights, MIX_WEIGHTS[1] * RIGHT.weights])
ALL_MODES = torch.cat([LEFT.means, RIGHT.means])


class OffsetEnergy(MixtureMarginalEnergy):
    """Exact scores, but log p̃(t, x) = log p_t(x) + c(t): a per-time offset its f does not know.

    This is what denoising score matching leaves undetermined (it fits only ∇ₓ log p); c(t) rises from
    0 at the top level (the gauge f[−1] = 0) to ``c0`` at the lowest level.
    """

    def __init__(self, start, process, levels, c0: float):
        super().__init__(start, process, levels)
        self.c0, self.t_low, self.t_high = float(c0), float(levels[0]), float(levels[-1])

    def offset(self, t: torch.Tensor) -> torch.Tensor:
        return self.c0 * (self.t_high - t) / (self.t_high - self.t_low)

    def log_prob_unnormalised(self, t, x):
        return super().log_prob_unnormalised(t, x) + self.offset(t.to(x.dtype))


def _mode_masses(result):
    labels = torch.cdist(result.samples, ALL_MODES).argmin(1)
    return weighted_fractions(labels, 4, result.log_weights, result.ancestors)


def test_mixture_smc_recovers_the_weights_only_with_the_right_free_energies():
    """w_a p_a + w_b p_b from exact models; a model with a wrong f (as after DSM) biases the weights."""
    exact = MixturePath(LearnedPath(MixtureMarginalEnergy(LEFT, VP, MIX_TIMES)),
                        LearnedPath(MixtureMarginalEnergy(RIGHT, VP, MIX_TIMES)), weights=MIX_WEIGHTS)
    result = _run(exact, seed=3)
    masses = _mode_masses(result)
    _assert_within(masses.value, masses.se, MIX_MASSES, what="mixture mode masses")
    _assert_within(result.log_z, result.log_z_se, 0.0, what="log Z of a normalised mixture")

    # the left model's log-density is off by c(t) (c0 = log(7/3) at t_0) and f = 0 does not know it
    c0 = math.log(7 / 3)
    shifted = OffsetEnergy(LEFT, VP, MIX_TIMES, c0)
    wrong = MixturePath(LearnedPath(shifted), LearnedPath(MixtureMarginalEnergy(RIGHT, VP, MIX_TIMES)),
                        weights=MIX_WEIGHTS)
    result = _run(wrong, seed=3)
    is_left = (torch.cdist(result.samples, ALL_MODES).argmin(1) < 2).double()
    left = clustered_mean(is_left, result.ancestors, result.log_weights)
    assert float((left.value - 0.3) / left.se) > 10  # the left modes get 0.3·e^c0 / (0.3·e^c0 + 0.7) = 1/2
    _assert_within(left.value, left.se, 0.5, what="left mass with the unknown offset")

    # the same model with f = c on its grid (what DiffCLF learns) recovers the weights
    shifted.free_energies.copy_(shifted.offset(shifted.levels.to(F64)).to(shifted.free_energies.dtype))
    fixed = MixturePath(LearnedPath(shifted), LearnedPath(MixtureMarginalEnergy(RIGHT, VP, MIX_TIMES)),
                        weights=MIX_WEIGHTS)
    masses = _mode_masses(_run(fixed, seed=3))
    _assert_within(masses.value, masses.se, MIX_MASSES, what="mixture mode masses with f = c")


def test_mixture_with_true_final_targets_is_right_even_with_a_wrong_f():
    """Normalised true densities at level 0 fix the final target; a wrong f only affects the path."""
    shifted = OffsetEnergy(LEFT, VP, MIX_TIMES, math.log(7 / 3))
    path = MixturePath(LearnedPath(shifted, final_target=LEFT),
                       LearnedPath(MixtureMarginalEnergy(RIGHT, VP, MIX_TIMES), final_target=RIGHT),
                       weights=MIX_WEIGHTS)
    result = _run(path, seed=5)
    masses = _mode_masses(result)
    _assert_within(masses.value, masses.se, MIX_MASSES, what="mode masses with true final targets")
    _assert_within(result.log_z, result.log_z_se, 0.0, what="log Z with true final targets")


def test_mixture_path_density_score_hessian_and_start():
    times = log_snr_grid(VP, 1e-3, 0.999, 6)
    model_a, model_b = MixtureMarginalEnergy(A, VP, times), MixtureMarginalEnergy(B, VP, times)
    f_a = torch.tensor([0.5, -0.2, 0.3, 0.1, -0.4, 0.0])
    model_a.free_energies.copy_(f_a)  # log p̃_a − f_a must be used: here the exact p̃_a is normalised,
    path = MixturePath(model_a, model_b, weights=(1.0, 3.0))  # so this defines a different, known mixture
    assert path.weights == (0.25, 0.75)
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for k in (0, 2, 5):
        t = float(times[k])
        pa, pb = A.noised(VP, t), B.noised(VP, t)

        def closed(y, k=k, pa=pa, pb=pb):
            return torch.logaddexp(math.log(0.25) + pa.log_prob(y) - float(f_a[k]), math.log(0.75) + pb.log_prob(y))

        logp, score = path.log_density(k, x)
        assert torch.allclose(logp, closed(x), atol=1e-10)
        assert torch.allclose(score, torch.autograd.functional.jacobian(lambda y: closed(y).sum(), x), atol=1e-10)
        exact_h = _hessians(closed, x)
        assert torch.allclose(path.hessian(k, x), exact_h, atol=1e-8)
        resp = path.responsibilities(k, x)
        assert torch.allclose(resp[:, 0], torch.exp(math.log(0.25) + pa.log_prob(x) - float(f_a[k]) - closed(x)))
    # start: w_a N(0, v_a) + w_b N(0, v_b), normalised, sampled in proportion
    wide = MixturePath(LearnedPath(model_a, start=GaussianPrior.on_space(4.0, model_a)), model_b, weights=(1.0, 3.0))
    y, log_q = wide.initial(40_000, torch.Generator().manual_seed(2), F64, "cpu")
    v_b = float(VP.input_variance(times[-1], 1.0))
    closed_q = torch.logaddexp(math.log(0.25) - y.pow(2).sum(1) / 8 - math.log(8 * math.pi),
                               math.log(0.75) - y.pow(2).sum(1) / (2 * v_b) - math.log(2 * math.pi * v_b))
    assert torch.allclose(log_q, closed_q)
    second = 0.25 * 4.0 + 0.75 * v_b
    assert abs(float(y.pow(2).mean()) - second) < 4 * math.sqrt(float(y.pow(2).var()) / y.numel())


def test_compositions_reject_what_they_cannot_combine():
    fine = log_snr_grid(VP, 1e-3, 0.999, 12)
    model_a, model_b = MixtureMarginalEnergy(A, VP, fine[::2]), MixtureMarginalEnergy(B, VP, fine[::2])
    with pytest.raises(ValueError, match="free energies f exist only at model.levels"):
        MixturePath(LearnedPath(model_a, times=fine), LearnedPath(model_b, times=fine))
    with pytest.raises(ValueError, match="different level times"):
        ProductPath(LearnedPath(model_a), LearnedPath(model_b, times=fine))
    with pytest.raises(ValueError, match="weights"):
        MixturePath(model_a, model_b, weights=(0.0, 1.0))
    with pytest.raises(ValueError, match="score_only"):
        ProductPath(LearnedPath(model_a, score_only=True), LearnedPath(model_b))
    with pytest.raises(ValueError, match="Gaussian-prior starts"):
        ProductPath(LearnedPath(model_a, start=TargetStart(A)), model_b)
    with pytest.raises(ValueError, match="different spaces"):
        ProductPath(model_a, MixtureMarginalEnergy(_gmm([1.0], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]), VP, fine[::2]))
    with pytest.raises(ValueError, match="times= applies to models only"):
        ProductPath(LearnedPath(model_a), LearnedPath(model_b), times=fine)
