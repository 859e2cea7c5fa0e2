"""Diagonal Gaussian mixtures with exact log-density, score and samples of every noised marginal.

A mixture stays a mixture under linear noising: component k of p_t has mean α_t μ_k and variance
α_t² Σ_k + γ_t² (METHOD.md §5.1). Under a stochastic interpolant with independent coupling, p_t is the
mixture over pairs (a, b) with weight w⁰_a w¹_b, mean (1−t)μ⁰_a + tμ¹_b and variance
(1−t)²Σ⁰_a + t²Σ¹_b + γ(t)². All computations are in the mixture's dtype (float64 by default).

Particle mixtures (``particles=True``) live on the centred subspace of ``(n_atoms, 3)`` configurations,
the d = 3(n_atoms − 1) dimensions with zero centre of geometry: component k is N(μ_k, v_k P) with μ_k
centred and P the centring projector, a density w.r.t. Lebesgue measure on the subspace, evaluated at
the centred part of x (so log p(x) counts d dimensions and ignores any centre-of-geometry shift). The
noise of a diffusion is centred too, so p_t stays such a mixture, with means α_t μ_k and variances
α_t² v_k + γ_t². Interpolants, standardisation and products are flat-only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from boltzclf.diffusion.interpolant import StochasticInterpolant
from boltzclf.diffusion.processes import LinearDiffusion


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, diag(v_k)), or on the centred subspace of particles.

    Attributes
    ----------
    weights : (K,) tensor, sums to 1.
    means : (K, D) tensor; ``(K, n_atoms, 3)``, centred over atoms, for particles.
    variances : like ``means``, positive; for particles constant within each component (isotropic).
    particles : the mixture of centred ``(n_atoms, 3)`` configurations, d = 3(n_atoms − 1); see
        :meth:`on_centred_subspace`.
    """

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    particles: bool = False

    def __post_init__(self):
        if self.particles:
            _check_particle_components(self.weights, self.means, self.variances)
        else:
            k, d = self.means.shape
            if self.weights.shape != (k,) or self.variances.shape != (k, d):
                raise ValueError("weights (K,), means (K, D) and variances (K, D) disagree in shape")
        if not torch.isclose(self.weights.sum(), torch.ones((), dtype=self.weights.dtype)):
            raise ValueError(f"mixture weights sum to {float(self.weights.sum())}, not 1")

    @classmethod
    def on_centred_subspace(cls, weights: torch.Tensor, means: torch.Tensor,
                            variances: torch.Tensor) -> "GaussianMixture":
        """Σ_k w_k N(μ_k, v_k P) on the centred subspace of ``(n_atoms, 3)`` configurations.

        Parameters
        ----------
        weights : (K,) tensor, sums to 1.
        means : (K, n_atoms, 3) tensor; its centre of geometry is removed.
        variances : (K,) tensor, positive: each component's variance per degree of freedom.
        """
        means = _centre(means)
        return cls(weights, means, variances[:, None, None].expand(means.shape).clone(), particles=True)

    @property
    def dim(self) -> int:
        """Degrees of freedom: D, or 3(n_atoms − 1) for particles."""
        return self.means[0].numel() - 3 if self.particles else self.means.shape[1]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on another device/dtype."""
        return GaussianMixture(*(a.to(device=device, dtype=dtype) for a in (self.weights, self.means, self.variances)),
                               particles=self.particles)

    # ----- density ---------------------------------------------------------------------------------
    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, v_k) for ``x`` ``(B, *event)``; returns ``(B, K)``."""
        return _component_log_probs(x, self.weights, self.means, self.variances, self.particles)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log-density, ``(B,)``."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇ₓ log p(x), like ``x`` (centred for particles)."""
        return _mixture_score(x, self.component_log_probs(x), self.means, self.variances, self.particles)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """−log p(x) (the EnergyTarget protocol, normalised), ``(B,)``."""
        return -self.log_prob(x)

    def force(self, x: torch.Tensor) -> torch.Tensor:
        """∇ₓ log p(x) = −∇ₓ energy, like ``x``."""
        return self.score(x)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities p(k | x), ``(B, K)``."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples, ``(n, *event)`` (centred for particles), on the mixture's device."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        if self.particles:
            noise = _centre(torch.randn((n,) + self.event_shape, generator=generator, dtype=self.means.dtype,
                                        device=self.means.device))
        else:
            noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return self.means[idx] + noise * self.variances[idx].sqrt()

    # ----- transformations ------------------------------------------------------------------------
    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and variance of the mixture, each ``(D,)`` (flat mixtures)."""
        _require_flat(self, "moments")
        mean = self.weights @ self.means
        second = self.weights @ (self.variances + self.means**2)
        return mean, second - mean**2

    def standardised(self) -> "GaussianMixture":
        """The mixture mapped by x ↦ (x − m)/√v, m and v its per-dimension mean and variance."""
        mean, var = self.moments()  # flat only: a per-dimension rescaling breaks the subspace isotropy
        return GaussianMixture(self.weights, (self.means - mean) / var.sqrt(), self.variances / var)

    def noised(self, process: LinearDiffusion, t: float) -> "GaussianMixture":
        """The exact marginal p_t of the diffusion started from this mixture, at scalar time ``t``."""
        return _marginal_at(self, process, t)

def marginal_log_prob(start: GaussianMixture, process, t: torch.Tensor, x: torch.Tensor,
                      end: GaussianMixture | None = None) -> torch.Tensor:
    """log p_t(x) for per-sample times ``t`` ``(B,)`` and points ``x`` ``(B, *event)``; returns ``(B,)``.

    ``end`` is the t = 1 mixture of an interpolant (None for diffusions). For particles p_t is the
    density on the centred subspace (d = 3(n_atoms − 1)) at the centred part of ``x``.
    """
    components = marginal_components(start, process, t, end)
    return torch.logsumexp(_component_log_probs(x, *components, start.particles), dim=-1)


def marginal_score(start: GaussianMixture, process, t: torch.Tensor, x: torch.Tensor,
                   end: GaussianMixture | None = None) -> torch.Tensor:
    """∇ₓ log p_t(x) for per-sample times ``t`` ``(B,)``; returns like ``x``."""
    weights, means, variances = marginal_components(start, process, t, end)
    log_probs = _component_log_probs(x, weights, means, variances, start.particles)
    return _mixture_score(x, log_probs, means, variances, start.particles)


def marginal_components(start: GaussianMixture, process, t: torch.Tensor, end: GaussianMixture | None = None):
    """Weights ``(K,)``, means and variances ``(B, K, *event)`` of p_t at per-sample times ``t`` ``(B,)``."""
    t = t.to(start.means.dtype).reshape((-1, 1) + (1,) * len(start.event_shape))
    if process.kind == "interpolant":
        _require_flat(start, "interpolant marginals")
        a, b = process.coefficients(t)
        weights = (start.weights[:, None] * end.weights[None, :]).reshape(-1)
        means = a[..., None] * start.means[None, :, None, :] + b[..., None] * end.means[None, None, :, :]
        variances = (a[..., None] ** 2 * start.variances[None, :, None, :]
                     + b[..., None] ** 2 * end.variances[None, None, :, :] + process.gamma(t)[..., None] ** 2)
        return weights, means.flatten(1, 2), variances.flatten(1, 2)
    alpha, gamma = process.alpha(t), process.gamma(t)
    return start.weights, alpha * start.means[None], alpha**2 * start.variances[None] + gamma**2


def interpolant_marginal(start: GaussianMixture, end: GaussianMixture, interpolant: StochasticInterpolant,
                         t: float) -> GaussianMixture:
    """Exact p_t of the interpolant between ``start`` (t=0) and ``end`` (t=1), independent coupling."""
    return _marginal_at(start, interpolant, t, end)


def marginal_velocity(start: GaussianMixture, end: GaussianMixture, interpolant: StochasticInterpolant,
                      t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact velocity v(t, x) = E[X_1 − X_0 | X_t = x] of the interpolant between two mixtures.

    X_t = (1−t)X_0 + tX_1 + γ(t)Z with X_0 ~ ``start``, X_1 ~ ``end``, Z independent (independent
    coupling). Given the pair of components (a, b), (X_1 − X_0, X_t) is jointly Gaussian, so per dimension
    E[X_1 − X_0 | x, a, b] = (μ¹_b − μ⁰_a) + (tΣ¹_b − (1−t)Σ⁰_a)/((1−t)²Σ⁰_a + t²Σ¹_b + γ²) · (x − m_ab),
    m_ab = (1−t)μ⁰_a + tμ¹_b; v averages these with the pair responsibilities p(a, b | x). The
    probability-flow drift of the interpolant is b = v − γγ̇ ∇ₓlog p_t.

    Parameters
    ----------
    t : (B,) per-sample times in (0, 1).
    x : (B, D) points.

    Returns
    -------
    (B, D) tensor in the mixtures' dtype.
    """
    weights, means, variances = marginal_components(start, interpolant, t, end)  # pairs (a, b), a-major
    resp = torch.softmax(_component_log_probs(x, weights, means, variances), dim=-1)  # (B, K0·K1)
    tt = t.to(start.means.dtype)[:, None, None, None]
    shift = (end.means[None, :, :] - start.means[:, None, :]).reshape(1, -1, start.dim)  # μ¹_b − μ⁰_a
    cov = (tt * end.variances[None, None, :, :] - (1.0 - tt) * start.variances[None, :, None, :]).flatten(1, 2)
    conditional = shift + cov / variances * (x[:, None, :] - means)  # (B, K0·K1, D)
    return (resp[..., None] * conditional).sum(1)


def two_modes(dim: int, separation: float = 5.0, variance: float = 0.05, heavy_weight: float = 2.0 / 3.0,
              dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """TwoModes(d, a): w N(−a·1, v I) + (1 − w) N(+a·1, v I), standardised (METHOD.md §6.1).

    The heavy mode (weight 2/3 by default) is component 0.
    """
    ones = torch.ones(dim, dtype=dtype)
    means = torch.stack([-separation * ones, separation * ones])
    weights = torch.tensor([heavy_weight, 1.0 - heavy_weight], dtype=dtype)
    return GaussianMixture(weights, means, torch.full((2, dim), variance, dtype=dtype)).standardised()


def mog40(dim: int, seed: int = 0, box: float = 40.0, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """MOG-40: 40 equal-weight modes, means uniform in [−box, box]^d drawn with ``seed``, per-dimension
    variance softplus(1) ≈ 1.3133; standardised (METHOD.md §6.1)."""
    generator = torch.Generator().manual_seed(seed)
    means = (torch.rand(40, dim, generator=generator, dtype=torch.float64) - 0.5) * 2.0 * box
    variances = torch.full((40, dim), math.log1p(math.e), dtype=torch.float64)
    weights = torch.full((40,), 1.0 / 40, dtype=torch.float64)
    return GaussianMixture(weights, means, variances).standardised().to(dtype=dtype)


def _marginal_at(start: GaussianMixture, process, t: float, end: GaussianMixture | None = None) -> GaussianMixture:
    times = torch.tensor([t], dtype=start.means.dtype, device=start.means.device)
    weights, means, variances = marginal_components(start, process, times, end)
    return GaussianMixture(weights, means[0], variances[0], particles=start.particles)


def _centre(x: torch.Tensor) -> torch.Tensor:
    """Remove the centre of geometry of ``(..., n_atoms, 3)`` configurations."""
    return x - x.mean(dim=-2, keepdim=True)


def _check_particle_components(weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> None:
    if means.dim() != 3 or means.shape[-1] != 3 or means.shape[1] < 2:
        raise ValueError(f"particle means must be (K, n_atoms >= 2, 3), got {tuple(means.shape)}")
    if weights.shape != means.shape[:1] or variances.shape != means.shape:
        raise ValueError("weights (K,), means (K, n_atoms, 3) and variances (K, n_atoms, 3) disagree in shape")
    scale = 1.0 + float(means.abs().max())
    tol = 100 * torch.finfo(means.dtype).eps * scale
    if float(means.mean(dim=-2).abs().max()) > tol:
        raise ValueError("particle means must be centred (zero centre of geometry)")
    if not torch.allclose(variances, variances[:, :1, :1].expand_as(variances)):
        raise ValueError("particle variances must be constant within each component (isotropic on the subspace)")


def _require_flat(mixture: GaussianMixture, what: str) -> None:
    if mixture.particles:
        raise ValueError(f"{what}: flat mixtures only, not particles on the centred subspace")


def _component_log_probs(x: torch.Tensor, weights, means, variances, particles: bool = False) -> torch.Tensor:
    # x (B, D); means/variances (K, D) or (B, K, D)
    if particles:
        return _subspace_component_log_probs(x, weights, means, variances)
    diff = x[:, None, :] - means
    quad = (diff**2 / variances).sum(-1)
    log_det = torch.log(variances).sum(-1)
    return torch.log(weights) - 0.5 * (quad + log_det + x.shape[-1] * math.log(2.0 * math.pi))


def _subspace_component_log_probs(x: torch.Tensor, weights, means, variances) -> torch.Tensor:
    """log w_k + log N(Px; μ_k, v_k P) on the centred subspace, d = 3(n_atoms − 1); returns ``(B, K)``.

    ``x`` ``(B, n_atoms, 3)``; ``means``/``variances`` ``(K, n_atoms, 3)`` or ``(B, K, n_atoms, 3)``, means
    centred and variances constant within a component. Px − μ_k lies in the subspace, so its squared norm
    over all 3·n_atoms coordinates is the quadratic form there.
    """
    diff = (_centre(x)[:, None] - means).flatten(-2)
    var = variances[..., 0, 0]  # (K,) or (B, K)
    dof = diff.shape[-1] - 3
    quad = diff.pow(2).sum(-1) / var
    return torch.log(weights) - 0.5 * (quad + dof * torch.log(2.0 * math.pi * var))


def _mixture_score(x: torch.Tensor, comp_log_probs: torch.Tensor, means, variances,
                   particles: bool = False) -> torch.Tensor:
    resp = torch.softmax(comp_log_probs, dim=-1)  # (B, K)
    if particles:  # ∇ₓ of a function of Px: the subspace gradient, centred
        comp_scores = -(_centre(x)[:, None] - means) / variances  # (B, K, n_atoms, 3)
        return (resp[..., None, None] * comp_scores).sum(1)
    comp_scores = -(x[:, None, :] - means) / variances  # (B, K, D)
    return (resp[..., None] * comp_scores).sum(1)


def product_of_mixtures(a: GaussianMixture, b: GaussianMixture) -> tuple[GaussianMixture, float]:
    """The normalised product p_a·p_b / Z of two diagonal mixtures, and log Z = log ∫ p_a p_b dx.

    Component (i, j) (index i·K_b + j) has weight ∝ w_i w_j N(μ_i; μ_j, Σ_i + Σ_j), variance
    (Σ_i⁻¹ + Σ_j⁻¹)⁻¹ and mean var·(Σ_i⁻¹ μ_i + Σ_j⁻¹ μ_j).
    """
    _require_flat(a, "product_of_mixtures")
    _require_flat(b, "product_of_mixtures")
    mu_a, mu_b = a.means[:, None, :], b.means[None, :, :]
    var_a, var_b = a.variances[:, None, :], b.variances[None, :, :]
    overlap = -0.5 * (((mu_a - mu_b) ** 2 / (var_a + var_b)) + torch.log(2.0 * math.pi * (var_a + var_b))).sum(-1)
    log_w = torch.log(a.weights)[:, None] + torch.log(b.weights)[None, :] + overlap
    variances = 1.0 / (1.0 / var_a + 1.0 / var_b)
    means = variances * (mu_a / var_a + mu_b / var_b)
    log_z = torch.logsumexp(log_w.reshape(-1), 0)
    mixture = GaussianMixture(torch.exp(log_w.reshape(-1) - log_z), means.reshape(-1, a.dim), variances.reshape(-1, a.dim))
    return mixture, float(log_z)


def mixture_of_mixtures(a: GaussianMixture, b: GaussianMixture, weights: tuple[float, float]) -> GaussianMixture:
    """w_a p_a + w_b p_b as one mixture (components of ``a`` first; both flat or both particles)."""
    if a.particles != b.particles:
        raise ValueError("mixture_of_mixtures: cannot mix flat and particle mixtures")
    return GaussianMixture(torch.cat([weights[0] * a.weights, weights[1] * b.weights]),
                           torch.cat([a.means, b.means]), torch.cat([a.variances, b.variances]), a.particles)
